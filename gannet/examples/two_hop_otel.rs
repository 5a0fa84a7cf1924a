//! A two-hop call chain (client → `svc-a` → `svc-b`) traced with OpenTelemetry and exported
//! over OTLP, with RPC metrics on a Prometheus endpoint.
//!
//! Run with `cargo run -p gannet --example two-hop-otel --features opentelemetry`. It exports to
//! the collector that `OTEL_EXPORTER_OTLP_ENDPOINT` names if set; otherwise it starts a local
//! collector (rotel, from `scripts/install-test-servers otel-collector`) and prints the spans it
//! received.

use gannet::observability::{Observability, otlp::OtlpConfig};
use gannet::{Client, Error, Server};

/// The request and reply of both hops.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hop {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    // Where spans go: the environment's collector, or a local one.
    let local = if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some() {
        None
    } else {
        Some(gannet_conformance::harness::OtelCollector::start().await?)
    };
    let mut config = OtlpConfig::new("two-hop-example");
    if let Some(c) = &local {
        println!("collector: rotel, OTLP/gRPC on {}", c.grpc_endpoint());
        config = config.endpoint(c.grpc_endpoint());
    }
    let otel = config.install()?;
    let metrics_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let metrics_addr = std::net::TcpListener::bind(metrics_addr)?.local_addr()?;
    let metrics = gannet::observability::install_prometheus(metrics_addr)?;
    println!("metrics: http://{metrics_addr}/metrics");

    let b = Server::builder("svc-b")
        .bind("127.0.0.1:0".parse()?)
        .suite(Observability::default())
        .handler("Echo", |req: Hop| async move {
            // Logs inside a handler carry the trace id (the `rpc.server` span's fields).
            tracing::info!(text = %req.text, "svc-b handling");
            if req.text == "fail" {
                return Err(Error::application(7, "svc-b was asked to fail"));
            }
            Ok(req)
        })
        .start()
        .await?;
    let to_b = Client::builder("svc-b")
        .caller("svc-a")
        .address(b.local_addr())
        .suite(Observability::default())
        .build()?;
    let a = Server::builder("svc-a")
        .bind("127.0.0.1:0".parse()?)
        .suite(Observability::default())
        .handler("Relay", move |req: Hop| {
            let to_b = to_b.clone();
            async move { to_b.call::<Hop, Hop>("Echo", &req).await }
        })
        .start()
        .await?;
    let client = Client::builder("svc-a")
        .caller("example")
        .address(a.local_addr())
        .suite(Observability::default())
        .build()?;

    for text in ["hello", "world", "fail"] {
        match client
            .call::<Hop, Hop>("Relay", &Hop { text: text.into() })
            .await
        {
            Ok(reply) => println!("call {text:?}: answered {:?}", reply.text),
            Err(e) => println!("call {text:?}: failed as asked: {e}"),
        }
    }
    a.shutdown().await?;
    b.shutdown().await?;
    otel.flush().await;
    let rendered = metrics.render();
    let count = rendered
        .lines()
        .filter(|l| l.starts_with("rpc_client_duration_count"))
        .count();
    println!("metrics: {count} rpc_client_duration series, e.g.:");
    for line in rendered
        .lines()
        .filter(|l| l.starts_with("rpc_client_duration_count"))
        .take(3)
    {
        println!("  {line}");
    }
    if let Some(c) = &local {
        // rotel prints every span it received.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let out = c.output();
        let spans: Vec<(String, String, String)> = out
            .split("Span #")
            .skip(1)
            .map(|b| {
                let f = |k: &str| {
                    b.lines()
                        .find_map(|l| {
                            let (a, v) = l.split_once(':')?;
                            (a.trim() == k).then(|| v.trim().to_string())
                        })
                        .unwrap_or_default()
                };
                (f("Trace ID"), f("Name"), f("Kind"))
            })
            .collect();
        println!("collector received {} spans:", spans.len());
        for (trace, name, kind) in &spans {
            println!("  trace {trace}  {name:<12} {kind}");
        }
        if spans.len() < 12 {
            return Err(format!("expected 12 spans (3 calls × 4), got {}", spans.len()).into());
        }
    }
    otel.shutdown().await;
    Ok(())
}
