//! A two-hop call chain shared by the tests: a client calls `svc-a`'s `Relay`, whose handler
//! calls `svc-b`'s `Echo`, all with the `Observability` suite.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the helpers"
)]

use gannet_core::{Client, Error, RunningServer, Server};
use gannet_observability::Observability;
use opentelemetry::trace::TraceContextExt;

/// The request and reply of both hops.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Hop {
    /// Echoed back.
    #[prost(string, tag = "1")]
    pub text: String,
    /// `svc-b` fails the call with application error 7 when set.
    #[prost(bool, tag = "2")]
    pub fail: bool,
    /// Set by `svc-b`: the trace id current inside its handler.
    #[prost(string, tag = "3")]
    pub trace_id: String,
    /// Set by `svc-b`: the transient metainfo keys `svc-a` sent, sorted, comma-separated.
    #[prost(string, tag = "4")]
    pub upstream_keys: String,
}

/// The running chain.
pub struct Chain {
    pub a: RunningServer,
    pub b: RunningServer,
    pub client: Client,
}

impl Chain {
    /// Starts the chain with the default suite on every client and server.
    pub async fn start() -> Chain {
        Self::with_suite(Observability::default()).await
    }

    /// Starts the chain with `suite` on every client and server.
    pub async fn with_suite(suite: Observability) -> Chain {
        let b = Server::builder("svc-b")
            .bind("127.0.0.1:0".parse().unwrap())
            .suite(suite.clone())
            .handler("Echo", |req: Hop| async move {
                let trace_id = opentelemetry::Context::current()
                    .span()
                    .span_context()
                    .trace_id()
                    .to_string();
                tracing::info!(text = %req.text, "svc-b handling");
                if req.fail {
                    return Err(Error::application(7, "asked to fail"));
                }
                let meta = gannet_core::MetaInfo::current().unwrap_or_default();
                let mut keys: Vec<&str> = meta.upstream_pairs().map(|(k, _)| k).collect();
                keys.sort_unstable();
                Ok(Hop {
                    trace_id,
                    upstream_keys: keys.join(","),
                    ..req
                })
            })
            .start()
            .await
            .expect("svc-b starts");
        let to_b = Client::builder("svc-b")
            .caller("svc-a")
            .address(b.local_addr())
            .suite(suite.clone())
            .build()
            .expect("client of svc-b");
        let a = Server::builder("svc-a")
            .bind("127.0.0.1:0".parse().unwrap())
            .suite(suite.clone())
            .handler("Relay", move |req: Hop| {
                let to_b = to_b.clone();
                async move { to_b.call::<Hop, Hop>("Echo", &req).await }
            })
            .start()
            .await
            .expect("svc-a starts");
        let client = Client::builder("svc-a")
            .caller("frontend")
            .address(a.local_addr())
            .suite(suite)
            .build()
            .expect("client of svc-a");
        Chain { a, b, client }
    }

    pub async fn relay(&self, text: &str, fail: bool) -> gannet_core::Result<Hop> {
        self.client
            .call(
                "Relay",
                &Hop {
                    text: text.into(),
                    fail,
                    ..Hop::default()
                },
            )
            .await
    }

    pub async fn stop(self) {
        self.a.shutdown().await.expect("svc-a stops");
        self.b.shutdown().await.expect("svc-b stops");
    }
}
