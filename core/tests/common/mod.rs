//! Helpers shared by the integration tests: an echo service whose behaviour each request
//! controls, and a tracing subscriber for readable failures.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test binary uses part of the helpers"
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gannet_core::{Client, Error, MetaInfo, RunningServer, Server, ServerBuilder};

/// The request and reply of the test service's `Echo` method.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    /// Echoed back.
    #[prost(string, tag = "1")]
    pub text: String,
    /// Set by the server: its name.
    #[prost(string, tag = "2")]
    pub served_by: String,
    /// The server sleeps this long before answering.
    #[prost(uint64, tag = "3")]
    pub delay_ms: u64,
    /// The server answers with this application error code, if non-zero.
    #[prost(uint32, tag = "4")]
    pub fail_code: u32,
    /// Set by the server: the persistent metainfo value of `key`, if asked.
    #[prost(string, tag = "5")]
    pub meta: String,
    /// Set by the server: the upstream transient value of `key`, if asked.
    #[prost(string, tag = "6")]
    pub upstream: String,
}

pub fn echo(text: &str) -> Echo {
    Echo {
        text: text.into(),
        ..Echo::default()
    }
}

/// Call counters of one test server.
#[derive(Debug, Clone, Default)]
pub struct Hits(pub Arc<AtomicUsize>);

impl Hits {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A server builder named `name`, serving `service` on a free loopback port, whose `Echo`
/// method behaves as each request asks and counts its calls.
pub fn echo_server(service: &str, name: &str) -> (ServerBuilder, Hits) {
    let hits = Hits::default();
    let h = hits.clone();
    let name = name.to_string();
    let builder = Server::builder(service.to_string())
        .bind(loopback())
        .handler("Echo", move |req: Echo| {
            h.0.fetch_add(1, Ordering::SeqCst);
            let name = name.clone();
            async move {
                if req.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(req.delay_ms)).await;
                }
                if req.fail_code > 0 {
                    return Err(Error::application(req.fail_code, "asked to fail"));
                }
                let meta = MetaInfo::current().unwrap_or_default();
                Ok(Echo {
                    served_by: name,
                    meta: meta.get_persistent("key").unwrap_or_default().to_string(),
                    upstream: meta.upstream("key").unwrap_or_default().to_string(),
                    ..req
                })
            }
        });
    (builder, hits)
}

/// Starts [`echo_server`] and a client of it at its address.
pub async fn serve_and_connect(service: &str, name: &str) -> (RunningServer, Hits, Client) {
    let (builder, hits) = echo_server(service, name);
    let server = builder.start().await.expect("test server starts");
    let client = Client::builder(service.to_string())
        .address(server.local_addr())
        .build()
        .expect("test client builds");
    (server, hits, client)
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().expect("valid address")
}

/// An address on which nothing listens (a port that was free a moment ago).
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// Polls `cond` every 10 ms until it holds or `limit` passes; returns whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
