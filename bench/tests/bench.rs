//! The bench harness, run for real at `--quick` sizes: every workload
//! produces positive figures and the hub's counts match what was sent. This
//! checks the harness, never the speed of anything.

use serde_json::Value;
use std::process::Command;

const WORKLOADS: [&str; 5] = [
    "batched_append",
    "single_append",
    "catch_up_read",
    "delivery_latency",
    "surface",
];

fn series<'a>(json: &'a Value, workload: &str, backend: &str, system: &str) -> &'a Value {
    json["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["workload"] == workload && s["backend"] == backend && s["system"] == system)
        .unwrap_or_else(|| panic!("no series {workload}/{backend}/{system}"))
}

/// A measured series: status ok, every round positive, each round's count
/// equal to its independently verified count (and to `expected` if given).
fn assert_measured(s: &Value, expected: Option<u64>) {
    assert_eq!(s["status"], "ok", "{s:#}");
    let rounds = s["rounds"].as_array().unwrap();
    assert!(!rounds.is_empty(), "{s:#}");
    for r in rounds {
        assert!(r["value"].as_f64().unwrap() > 0.0, "{s:#}");
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{s:#}");
        let count = r["count"].as_u64().unwrap();
        assert!(count > 0, "{s:#}");
        assert_eq!(count, r["verified"].as_u64().unwrap(), "{s:#}");
        if let Some(e) = expected {
            assert_eq!(count, e, "{s:#}");
        }
    }
    assert!(s["median"].as_f64().unwrap() > 0.0, "{s:#}");
}

/// `eventhub-bench --quick` runs every workload on SQLite (and NATS and
/// PostgreSQL when available, skipping them with a reason otherwise) and
/// writes a JSON file with every round, verified counts and the machine.
#[test]
fn quick_bench_measures_every_workload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_eventhub-bench"))
        .args(["--quick", "--json"])
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "bench failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| workload | backend | hub | reference | ratio | target | met |"));

    let json: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(json["machine"]["nproc"].as_u64().unwrap() > 0);
    assert!(!json["machine"]["kernel"].as_str().unwrap().is_empty());
    assert!(!json["date"].as_str().unwrap().is_empty());
    assert!(!json["rows"].as_array().unwrap().is_empty());
    let sizes = &json["settings"]["sizes"];
    let size = |k: &str| sizes[k].as_u64().unwrap();

    let mut backends = vec!["sqlite"];
    if json["settings"]["postgres"].is_null() {
        for w in WORKLOADS {
            let hub = if w == "surface" { "surface" } else { "hub" };
            let s = series(&json, w, "postgres", hub);
            assert_eq!(s["status"], "skipped", "{s:#}");
            assert!(s["note"].as_str().unwrap().contains("no PostgreSQL"));
        }
    } else {
        backends.push("postgres");
    }
    for b in backends {
        assert_measured(
            series(&json, "batched_append", b, "hub"),
            Some(size("batched_events")),
        );
        assert_measured(
            series(&json, "batched_append", b, "direct_insert"),
            Some(size("batched_events")),
        );
        assert_measured(series(&json, "single_append", b, "hub"), None);
        assert_measured(
            series(&json, "single_append", b, "one_row_per_transaction"),
            None,
        );
        assert_measured(
            series(&json, "catch_up_read", b, "hub"),
            Some(size("read_events")),
        );
        assert_measured(
            series(&json, "catch_up_read", b, "direct_read"),
            Some(size("read_events")),
        );
        assert_measured(
            series(&json, "catch_up_read", b, "hub_consumer_pages"),
            Some(size("read_events")),
        );
        assert_measured(series(&json, "delivery_latency", b, "hub"), None);
        assert_measured(
            series(&json, "surface", b, "surface"),
            Some(size("read_events") / size("events_per_key")),
        );
        assert_measured(
            series(&json, "surface", b, "read_key"),
            Some(size("events_per_key")),
        );
        assert_measured(
            series(&json, "surface", b, "full_read"),
            Some(size("read_events")),
        );
        let latency = &series(&json, "delivery_latency", b, "hub")["median_latency_ms"];
        assert!(latency["p50"].as_f64().unwrap() > 0.0);
        assert!(latency["p999"].as_f64().unwrap() >= latency["p99"].as_f64().unwrap());
    }
    assert_measured(series(&json, "single_append", "none", "noop_grpc"), None);

    for w in ["batched_append", "catch_up_read", "delivery_latency"] {
        let s = series(&json, w, "nats", "jetstream");
        if json["settings"]["nats_server"].is_null() {
            assert_eq!(s["status"], "skipped", "{s:#}");
            assert!(
                s["note"]
                    .as_str()
                    .unwrap()
                    .contains("install-bench-deps.sh")
            );
        } else {
            assert_measured(s, None);
        }
    }
}
