//! The same chain exported over OTLP/HTTP (protobuf) to a real collector.

mod common;

use std::time::Duration;

use common::Chain;
use gannet_conformance::harness::OtelCollector;
use gannet_observability::otlp::{OtlpConfig, OtlpProtocol};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_the_collector_over_http() {
    let collector = OtelCollector::start().await.expect("rotel starts");
    let otel = OtlpConfig::new("gannet-tests")
        .endpoint(collector.http_endpoint())
        .protocol(OtlpProtocol::HttpProtobuf)
        .install()
        .expect("the OTLP/HTTP exporter installs");
    let chain = Chain::start().await;
    let ok = chain
        .relay("over http", false)
        .await
        .expect("the chain answers");
    chain.stop().await;
    otel.shutdown().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let out = collector.output();
        let n = out
            .split("Span #")
            .skip(1)
            .filter(|b| b.contains(&ok.trace_id))
            .count();
        if n >= 4 || tokio::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(spans, 4, "the chain's four spans arrived over HTTP");
}
