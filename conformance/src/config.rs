//! The conformance kit for config sources: what every [`ConfigSource`] must show, through real
//! calls of a client and a server built with `gannet-config-center`'s suites, while the test
//! changes values in the real store behind the source.
//!
//! Implement [`Store`] for your store (how an operator writes and deletes a key), then run
//! [`every_behaviour`] (a source backed by a server that can be stopped and restarted) or the
//! steps one by one ([`timeouts`], [`retry_and_breaker`], [`limit`], [`survives_outage`]).
//! Each step panics, naming what it did not see within 15 s, so it reads as a test failure.
//!
//! ```no_run
//! # async fn demo() {
//! use gannet_config_center::file::FileSource;
//! use gannet_conformance::config::{Store, Fixture, timeouts, retry_and_breaker, limit};
//!
//! struct Files(FileSource);
//! impl Store for Files {
//!     async fn put(&self, key: &str, value: &str) {
//!         let path = self.0.path_of(key);
//!         std::fs::create_dir_all(path.parent().unwrap()).unwrap();
//!         std::fs::write(path, value).unwrap();
//!     }
//!     async fn delete(&self, key: &str) {
//!         std::fs::remove_file(self.0.path_of(key)).unwrap();
//!     }
//! }
//! let dir = tempfile::tempdir().unwrap();
//! let source = FileSource::new(dir.path());
//! let store = Files(source.clone());
//! let f: Fixture = timeouts(source, &store).await;
//! retry_and_breaker(&f, &store).await;
//! limit(&f, &store).await;
//! # }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gannet_config_center::{ClientConfig, ConfigSource, ServerConfig};
use gannet_core::error::code;
use gannet_core::{Client, ErrorKind, RunningServer, Server};

/// The request of the test service: the server sleeps `delay_ms`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Probe {
    /// How long the handler sleeps.
    #[prost(uint64, tag = "1")]
    pub delay_ms: u64,
}

/// Writes and deletes keys in the store behind a source, the way an operator's tooling would
/// (not through the source under test).
pub trait Store {
    /// Writes `value` at config key `key` (the key the source maps, such as
    /// `cli/svc/rpc_timeout`).
    fn put(&self, key: &str, value: &str) -> impl Future<Output = ()>;
    /// Deletes config key `key`.
    fn delete(&self, key: &str) -> impl Future<Output = ()>;
}

/// The client's `rpc_timeout` key.
pub const TIMEOUT: &str = "cli/svc/rpc_timeout";
/// The client's `retry` key.
pub const RETRY: &str = "cli/svc/retry";
/// The client's `circuit_break` key.
pub const BREAKER: &str = "cli/svc/circuit_break";
/// The client's `degradation` key.
pub const DEGRADATION: &str = "cli/svc/degradation";
/// The server's `limit` key.
pub const LIMIT: &str = "svc/limit";

/// Polls `check` until it returns true, for up to 15 s.
///
/// # Panics
/// If it does not, naming `what`.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("not within 15 s: {what}");
}

/// A client and a server whose policies follow one source.
#[derive(Debug)]
pub struct Fixture {
    /// The server `svc`, with a [`ServerConfig`] suite.
    pub server: RunningServer,
    /// The client `cli` of `svc`, with a [`ClientConfig`] suite.
    pub client: Client,
    /// What the client suite's watches did.
    pub client_config: gannet_config_center::ConfigStatus,
    hits: Arc<AtomicUsize>,
}

impl Fixture {
    /// Starts `svc` and its client `cli`, both with suites reading `source`.
    ///
    /// # Panics
    /// If the server cannot start or the client cannot be built.
    pub async fn start<S: ConfigSource + Clone>(source: S) -> Fixture {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let server = Server::builder("svc")
            .bind("127.0.0.1:0".parse().unwrap())
            .suite(ServerConfig::new(source.clone(), "svc").await)
            .handler("Echo", move |p: Probe| {
                h.fetch_add(1, Ordering::SeqCst);
                async move {
                    tokio::time::sleep(Duration::from_millis(p.delay_ms)).await;
                    Ok(p)
                }
            })
            .start()
            .await
            .expect("server starts");
        let config = ClientConfig::new(source, "cli", "svc").await;
        let client_config = config.status();
        let client = Client::builder("svc")
            .caller("cli")
            .address(server.local_addr())
            .suite(config)
            .build()
            .expect("client builds");
        Fixture {
            server,
            client,
            client_config,
            hits,
        }
    }

    /// Calls `Echo`, which sleeps `delay_ms` on the server.
    ///
    /// # Errors
    /// The call's error.
    pub async fn call(&self, delay_ms: u64) -> gannet_core::Result<Probe> {
        self.client.call("Echo", &Probe { delay_ms }).await
    }

    /// The rpc timeout in force for `Echo`, if any.
    #[must_use]
    pub fn timeout_ms(&self) -> Option<u64> {
        self.client
            .policies()
            .timeout
            .load()
            .lookup("Echo")
            .map(|t| t.rpc_timeout_ms)
    }

    /// Calls (attempts) the server has received.
    #[must_use]
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Timeouts: read at build time, changed live, a bad value refused, deleted → default.
///
/// # Panics
/// When the behaviour is not seen.
pub async fn timeouts<S: ConfigSource + Clone>(source: S, store: &impl Store) -> Fixture {
    store.put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 50}}"#).await;
    let f = Fixture::start(source).await;
    // In force from the first call: the value was read while the suite was built.
    let e = f.call(300).await.expect_err("50 ms timeout fires");
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");

    store
        .put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 3000}}"#)
        .await;
    eventually("the 3 s timeout applies", || async {
        f.call(300).await.is_ok()
    })
    .await;

    let rejected = f.client_config.rejected();
    store
        .put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": "soon"}}"#)
        .await;
    eventually("the bad value is refused", || async {
        f.client_config.rejected() > rejected
    })
    .await;
    assert_eq!(f.timeout_ms(), Some(3000), "the last good timeout stays");
    f.call(300).await.expect("still under the 3 s timeout");
    assert!(
        f.client_config
            .last_error()
            .is_some_and(|e| e.contains("rpc_timeout")),
        "{:?}",
        f.client_config.last_error()
    );

    store.put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 50}}"#).await;
    eventually("the 50 ms timeout applies again", || async {
        f.call(300)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Timeout)
    })
    .await;

    store.delete(TIMEOUT).await;
    eventually("deleting restores the default (no timeout)", || async {
        f.timeout_ms().is_none() && f.call(300).await.is_ok()
    })
    .await;
    f
}

/// Retry and circuit breaker changed live.
///
/// # Panics
/// When the behaviour is not seen.
pub async fn retry_and_breaker(f: &Fixture, store: &impl Store) {
    store.put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 50}}"#).await;
    store
        .put(
            RETRY,
            r#"{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2, "cb_policy": {"error_rate": 0.9}}}}}"#,
        )
        .await;
    eventually("a timed-out call is retried twice", || async {
        let before = f.hits();
        let res = f.call(300).await;
        // Attempts reach the server one after another; give the last one a moment.
        tokio::time::sleep(Duration::from_millis(50)).await;
        res.is_err_and(|e| e.kind() == ErrorKind::Timeout) && f.hits() - before == 3
    })
    .await;

    store.delete(RETRY).await;
    store
        .put(
            BREAKER,
            r#"{"Echo": {"enable": true, "err_rate": 0.5, "min_sample": 4}}"#,
        )
        .await;
    eventually("the method's breaker opens after timeouts", || async {
        f.call(300)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::CircuitOpen)
    })
    .await;
    store.delete(BREAKER).await;
    store.delete(TIMEOUT).await;
}

/// The server's QPS limit changed live (and, first, the client's degradation).
///
/// # Panics
/// When the behaviour is not seen.
pub async fn limit(f: &Fixture, store: &impl Store) {
    store
        .put(DEGRADATION, r#"{"enable": true, "percentage": 100}"#)
        .await;
    eventually("degradation drops every call", || async {
        f.call(0)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Degraded)
    })
    .await;
    store.delete(DEGRADATION).await;
    eventually("deleting degradation lets calls through", || async {
        f.call(0).await.is_ok()
    })
    .await;

    store.put(LIMIT, r#"{"qps_limit": 1}"#).await;
    eventually("the server rejects a burst over 1 QPS", || async {
        let mut limited = false;
        for _ in 0..5 {
            if let Err(e) = f.call(0).await {
                limited |= e.remote_code() == Some(code::RATE_LIMITED);
            }
        }
        limited
    })
    .await;
    store.delete(LIMIT).await;
    eventually("deleting the limit lets bursts through", || async {
        let mut all = true;
        for _ in 0..5 {
            all &= f.call(0).await.is_ok();
        }
        all
    })
    .await;
}

/// The store's server goes away and comes back: the policies stay while it is down, calls go
/// on, and a value written after it returns applies (the watch resumed).
///
/// # Panics
/// When the behaviour is not seen.
pub async fn survives_outage<Stop, Restart>(
    f: &Fixture,
    store: &impl Store,
    what: &str,
    stop: Stop,
    restart: Restart,
) where
    Stop: Future<Output = ()>,
    Restart: Future<Output = ()>,
{
    store
        .put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 3000}}"#)
        .await;
    eventually("3 s timeout", || async { f.timeout_ms() == Some(3000) }).await;
    stop.await;
    eventually("the watch notices the outage", || async {
        f.client_config.source_errors() > 0
    })
    .await;
    assert_eq!(
        f.timeout_ms(),
        Some(3000),
        "policies stay while {what} is down"
    );
    f.call(100)
        .await
        .expect("calls go on while the source is down");
    restart.await;
    store.put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 50}}"#).await;
    eventually("a value written after the restart applies", || async {
        f.call(300)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Timeout)
    })
    .await;
}

/// Everything a source with a server must show: [`timeouts`], [`retry_and_breaker`], [`limit`],
/// then [`survives_outage`]; stops the test server at the end.
///
/// # Panics
/// When the behaviour is not seen.
pub async fn every_behaviour<S, Stop, Restart>(
    source: S,
    store: &impl Store,
    what: &str,
    stop: Stop,
    restart: Restart,
) where
    S: ConfigSource + Clone,
    Stop: Future<Output = ()>,
    Restart: Future<Output = ()>,
{
    let f = timeouts(source, store).await;
    retry_and_breaker(&f, store).await;
    limit(&f, store).await;
    survives_outage(&f, store, what, stop, restart).await;
    f.server.shutdown().await.expect("the test server stops");
}
