//! Many producers, one follower per partition: every acknowledged event is
//! seen exactly once, in order, with no gap.

use crate::common::*;

const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 60;
const PARTITIONS: u32 = 4;

/// Eight concurrent appenders and a follower per partition: followers see every acknowledged event once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appenders_and_followers() {
    let hub = spawn_hub_with(|c| c.default_partitions = PARTITIONS).await;
    let appenders = (0..APPENDERS).map(|_| hub.client()).collect();
    check_no_gap(appenders, APPENDS_EACH, vec![hub.client()], "c", PARTITIONS).await;
}
