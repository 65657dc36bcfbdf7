//! Wiring: the store, the eventhub service, health and reflection, served on
//! an already-bound listener until `shutdown` resolves.

use crate::config::Config;
use crate::proto::{self, event_hub_service_server::EventHubServiceServer};
use crate::service::Hub;
use crate::store::Store;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tonic::transport::server::TcpIncoming;

/// Serves the hub on `listener` until `shutdown` resolves; then open streams
/// end cleanly, in-flight calls finish and the database connections are
/// closed before this returns.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = Store::open(&config).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let hub = Hub::new(
        store.clone(),
        config.limits.clone(),
        config.default_partitions,
        stop_rx,
        config.tokens.clone(),
    );
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<EventHubServiceServer<Hub>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let service = EventHubServiceServer::new(hub)
        .max_decoding_message_size(config.limits.max_request_bytes)
        .max_encoding_message_size(usize::MAX);
    tracing::info!(addr = %listener.local_addr()?, database = %config.database_url, tokens_required = config.tokens.is_some(), "eventhub serving");
    let mut stopping = stop_tx.subscribe();
    let serve = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(config.keepalive_interval))
        .http2_keepalive_timeout(Some(config.keepalive_timeout))
        .add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(service)
        // No Nagle: a response must not wait for the client's delayed ACK.
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async move {
                shutdown.await;
                tracing::info!("shutting down");
                let _ = stop_tx.send(true);
            },
        );
    // Once stopping, the server waits for every connection to finish its
    // calls; a stream whose client stopped reading never does. After the
    // grace period the connections still open are left to end with the
    // process (or, in-process, to fail their next write).
    let grace = config.shutdown_grace;
    tokio::select! {
        served = serve => served?,
        _ = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!("calls still in progress {grace:?} after the shutdown began; closing their connections");
        }
    }
    // Every call has finished and the service is gone with its clones of
    // the store; a stream task that has not noticed the shutdown yet holds
    // one for a moment at most.
    if tokio::time::timeout(CLOSE_TIMEOUT, store.close())
        .await
        .is_err()
    {
        tracing::warn!("the store did not close within {CLOSE_TIMEOUT:?}; exiting anyway");
    }
    Ok(())
}

/// How long shutting down waits for the writer to stop and the database
/// connections to close.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);
