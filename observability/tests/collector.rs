//! Spans of a two-hop chain, exported over OTLP/gRPC to a real collector (rotel, started by the
//! harness) and read back from what the collector printed.
//!
//! One test function: the tracer provider and the `tracing` subscriber are process-wide.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Chain;
use gannet_conformance::harness::OtelCollector;
use gannet_observability::otlp::OtlpConfig;
use gannet_observability::{B3Propagator, Observability};

/// One span as the collector printed it.
#[derive(Debug, Clone)]
struct Span {
    trace_id: String,
    parent_id: String,
    id: String,
    name: String,
    kind: String,
    status: String,
    status_message: String,
    attributes: HashMap<String, String>,
}

/// Parses rotel's detailed debug log (`Span #N` blocks; see SERVICES.md).
fn parse(output: &str) -> Vec<Span> {
    let mut spans = Vec::new();
    for block in output.split("Span #").skip(1) {
        let field = |name: &str| {
            block
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    (k.trim() == name).then(|| v.trim().to_string())
                })
                .unwrap_or_default()
        };
        let attributes = block
            .lines()
            .filter_map(|l| l.trim().strip_prefix("-> "))
            .filter_map(|kv| {
                let (k, v) = kv.split_once(": ")?;
                // Str(x) or Int(x)
                let v = v.split_once('(')?.1.strip_suffix(')')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        spans.push(Span {
            trace_id: field("Trace ID"),
            parent_id: field("Parent ID"),
            id: field("ID"),
            name: field("Name"),
            kind: field("Kind"),
            status: field("Status code"),
            status_message: field("Status message"),
            attributes,
        });
    }
    spans
}

/// The spans of `trace_id`, waiting until the collector printed `n` of them.
async fn trace(collector: &OtelCollector, trace_id: &str, n: usize) -> Vec<Span> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let spans: Vec<Span> = parse(&collector.output())
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect();
        if spans.len() >= n || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Finds the one span of `name` and `kind` (`client`/`server`).
fn one<'a>(spans: &'a [Span], name: &str, kind: &str) -> &'a Span {
    let kind = format!("SPAN_KIND_{}", kind.to_uppercase());
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name == name && s.kind == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} span {name} in {spans:#?}");
    found[0]
}

/// Checks the shape of one two-hop chain: a root client span, and each later span the child
/// of the one before (client → svc-a server → svc-a's client → svc-b server).
fn check_chain(spans: &[Span]) -> [&Span; 4] {
    assert_eq!(
        spans.len(),
        4,
        "two hops give two client and two server spans: {spans:#?}"
    );
    let root = one(spans, "svc-a/Relay", "client");
    let a = one(spans, "svc-a/Relay", "server");
    let a_out = one(spans, "svc-b/Echo", "client");
    let b = one(spans, "svc-b/Echo", "server");
    assert!(root.parent_id.is_empty(), "the first client span is a root");
    assert_eq!(a.parent_id, root.id, "svc-a's span is the caller's child");
    assert_eq!(
        a_out.parent_id, a.id,
        "svc-a's outgoing call is its handler's child"
    );
    assert_eq!(
        b.parent_id, a_out.id,
        "svc-b's span is svc-a's call's child"
    );
    for s in [root, a, a_out, b] {
        assert_eq!(s.attributes["rpc.system"], "gannet");
        let (service, method) = s.name.split_once('/').unwrap();
        assert_eq!(s.attributes["rpc.service"], service);
        assert_eq!(s.attributes["rpc.method"], method);
    }
    assert_eq!(root.attributes["peer.service"], "svc-a");
    assert_eq!(a.attributes["peer.service"], "frontend");
    assert_eq!(b.attributes["peer.service"], "svc-a");
    assert_eq!(root.attributes["server.address"], "127.0.0.1");
    assert!(root.attributes["server.port"].parse::<u16>().is_ok());
    assert_eq!(b.attributes["client.address"], "127.0.0.1");
    [root, a, a_out, b]
}

/// A `tracing` writer that keeps everything in memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hop_chain_exports_linked_spans_to_a_real_collector() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .expect("the only subscriber of this test binary");

    let collector = OtelCollector::start().await.expect("rotel starts");
    let otel = OtlpConfig::new("gannet-tests")
        .endpoint(collector.grpc_endpoint())
        .install()
        .expect("the OTLP exporter installs");

    // W3C trace context (the default).
    let chain = Chain::start().await;
    let ok = chain
        .relay("hello", false)
        .await
        .expect("the chain answers");
    assert_eq!(ok.text, "hello");
    assert_eq!(
        ok.trace_id.len(),
        32,
        "svc-b's handler sees its span: {ok:?}"
    );
    assert!(
        ok.upstream_keys.split(',').any(|k| k == "traceparent"),
        "trace context travels in transient metainfo: {}",
        ok.upstream_keys
    );
    let err = chain.relay("boom", true).await.expect_err("svc-b fails");
    assert_eq!(err.remote_code(), Some(7), "{err}");
    chain.stop().await;
    otel.flush().await;

    let spans = trace(&collector, &ok.trace_id, 4).await;
    let [_, _, _, b] = check_chain(&spans);
    assert_eq!(b.status, "STATUS_CODE_OK");

    // The failing chain: its own trace, every span marked as failed with the remote error.
    let failed_root = parse(&collector.output())
        .into_iter()
        .find(|s| {
            s.name == "svc-a/Relay" && s.status == "STATUS_CODE_ERROR" && s.parent_id.is_empty()
        })
        .expect("the failing call's root span");
    assert_ne!(failed_root.trace_id, ok.trace_id);
    let spans = trace(&collector, &failed_root.trace_id, 4).await;
    for s in check_chain(&spans) {
        assert_eq!(s.status, "STATUS_CODE_ERROR", "{s:?}");
        assert!(s.status_message.contains("asked to fail"), "{s:?}");
        assert_eq!(s.attributes["error.type"], "remote");
        assert_eq!(s.attributes["rpc.gannet.status_code"], "7");
    }

    // Logs written inside svc-b's handler carry the trace id.
    let logs = logs.text();
    let line = logs
        .lines()
        .find(|l| l.contains("svc-b handling") && l.contains("text=hello"))
        .unwrap_or_else(|| panic!("the handler's log line in {logs}"));
    assert!(
        line.contains(&format!("trace_id={}", ok.trace_id)),
        "the handler's log carries the trace id: {line}"
    );

    // A custom propagator (B3 single header) on every side still links the chain.
    let chain = Chain::with_suite(
        Observability::default().propagator(Arc::new(B3Propagator::single_header())),
    )
    .await;
    let ok = chain.relay("b3", false).await.expect("the chain answers");
    assert_eq!(ok.upstream_keys, "b3", "only the B3 header travels");
    chain.stop().await;
    otel.flush().await;
    let spans = trace(&collector, &ok.trace_id, 4).await;
    check_chain(&spans);

    otel.shutdown().await;
}
