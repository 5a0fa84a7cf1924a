//! RPC metrics of a two-hop chain (two servers and two clients in one process), served by the
//! Prometheus exporter, scraped by a real Prometheus (started by the harness) and read back
//! through its HTTP API.

mod common;

use std::time::Duration;

use common::Chain;
use gannet_conformance::harness::{Prometheus, free_port};
use gannet_observability::Observability;

/// The value of a PromQL query that yields one sample, if it does.
fn scalar(answer: &str) -> Option<f64> {
    let v: serde_json::Value = serde_json::from_str(answer).ok()?;
    let result = v["data"]["result"].as_array()?;
    if result.len() != 1 {
        return None;
    }
    result[0]["value"][1].as_str()?.parse().ok()
}

/// Polls `query` until it yields `want` (Prometheus answers its first queries only after a
/// few scrapes); returns the last value seen.
async fn wait_for(prometheus: &Prometheus, query: &str, want: f64) -> Option<f64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        if let Ok(answer) = prometheus.query(query).await {
            last = scalar(&answer);
            if last == Some(want) {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    last
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_histograms_count_every_call_by_method_and_status() {
    let addr = format!("127.0.0.1:{}", free_port().unwrap())
        .parse()
        .unwrap();
    let handle = gannet_observability::install_prometheus(addr).expect("exporter installs");
    // A second install is an error, not a panic.
    assert!(gannet_observability::install_prometheus(addr).is_err());

    // No tracer provider is installed: spans go to the no-op provider; metrics still record.
    let chain = Chain::with_suite(Observability::default()).await;
    const OK: usize = 7;
    const FAILED: usize = 3;
    for i in 0..OK {
        chain
            .relay(&format!("call {i}"), false)
            .await
            .expect("ok call");
    }
    for _ in 0..FAILED {
        chain.relay("boom", true).await.expect_err("failing call");
    }
    // The exporter renders what was recorded.
    let text = handle.render();
    assert!(text.contains("rpc_client_duration_bucket"), "{text}");

    let prometheus = Prometheus::start(&[addr]).await.expect("prometheus starts");
    let expect = [
        (
            r#"rpc_client_duration_count{rpc_service="svc-a",rpc_method="Relay",rpc_status="ok"}"#,
            OK,
        ),
        (
            r#"rpc_client_duration_count{rpc_service="svc-a",rpc_method="Relay",rpc_status="remote"}"#,
            FAILED,
        ),
        (
            r#"rpc_server_duration_count{rpc_service="svc-a",rpc_method="Relay",rpc_status="ok",peer_service="frontend"}"#,
            OK,
        ),
        (
            r#"rpc_server_duration_count{rpc_service="svc-a",rpc_method="Relay",rpc_status="remote"}"#,
            FAILED,
        ),
        (
            r#"rpc_client_duration_count{rpc_service="svc-b",rpc_method="Echo",rpc_status="ok",peer_service="svc-b"}"#,
            OK,
        ),
        (
            r#"rpc_server_duration_count{rpc_service="svc-b",rpc_method="Echo",rpc_status="ok",peer_service="svc-a"}"#,
            OK,
        ),
        (
            r#"rpc_server_duration_count{rpc_service="svc-b",rpc_method="Echo",rpc_status="remote"}"#,
            FAILED,
        ),
        (
            r#"sum(rpc_server_request_size_count{rpc_service="svc-b"})"#,
            OK + FAILED,
        ),
        (
            r#"rpc_client_active_requests{rpc_service="svc-a",rpc_method="Relay"}"#,
            0,
        ),
    ];
    for (query, want) in expect {
        let got = wait_for(&prometheus, query, want as f64).await;
        assert_eq!(got, Some(want as f64), "{query}");
    }
    // Durations are in milliseconds: every call here is far below 10 s.
    let slow = r#"sum(rpc_client_duration_count) - sum(rpc_client_duration_bucket{le="10000"})"#;
    assert_eq!(wait_for(&prometheus, slow, 0.0).await, Some(0.0));
    chain.stop().await;
}
