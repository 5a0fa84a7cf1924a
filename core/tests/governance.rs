//! Governance through real servers: timeouts, retries and where they stop, backup requests,
//! circuit breakers, rate limits, degradation, and policies swapped while calls run.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use gannet_core::discovery::{Instance, Snapshot};
use gannet_core::error::code;
use gannet_core::loadbalance::{LoadBalancer, WeightedRoundRobin};
use gannet_core::policy::{BreakerState, CircuitBreakerConfig, RetryConfig};
use gannet_core::{Client, ErrorKind};

fn slow(ms: u64) -> Echo {
    Echo {
        delay_ms: ms,
        ..echo("slow")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_fires_and_a_live_policy_swap_applies_to_the_next_call() {
    init_tracing();
    let (server, _, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 50}}"#)
        .unwrap();
    let err = client
        .call::<_, Echo>("Echo", &slow(400))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Swap from another task, then the next call runs under the new policy.
    let c = client.clone();
    tokio::spawn(async move {
        c.policies()
            .timeout
            .set_json(r#"{"*": {"rpc_timeout_ms": 50}, "Echo": {"rpc_timeout_ms": 10000}}"#)
            .unwrap();
    })
    .await
    .unwrap();
    let ok: Echo = client.call("Echo", &slow(400)).await.unwrap();
    assert_eq!(ok.text, "slow");
    // The connection survived the timed-out call.
    assert_eq!(client.connection_count(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_retry_moves_to_another_instance() {
    init_tracing();
    let (b, hits) = echo_server("gov", "good");
    let server = b.start().await.unwrap();
    // One dead instance and one live one; round robin sends every other first attempt to the
    // dead one.
    let client = Client::builder("gov")
        .address(dead_addr())
        .address(server.local_addr())
        .build()
        .unwrap();
    let mut failures = 0;
    for _ in 0..10 {
        if client.call::<_, Echo>("Echo", &echo("x")).await.is_err() {
            failures += 1;
        }
    }
    assert!(failures > 0, "without retry, the dead instance fails calls");
    client
        .policies()
        .retry
        .store([("*".to_string(), RetryConfig::failure(1))].into())
        .unwrap();
    for _ in 0..10 {
        let mut cx = client.context("Echo");
        let r: Echo = client.call_with(&mut cx, &echo("x")).await.unwrap();
        assert_eq!(r.served_by, "good");
        assert!(cx.rpc_info.stats.attempts <= 2);
    }
    assert!(hits.get() >= 10);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_max_times_and_never_retry_application_errors() {
    init_tracing();
    let (server, hits, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 30}}"#)
        .unwrap();
    client
        .policies()
        .retry
        .set_json(
            r#"{"*": {"enable": true, "type": 0, "failure_policy": {
                "stop_policy": {"max_retry_times": 2},
                "backoff_policy": {"backoff_type": "fixed", "cfg_items": {"fix_ms": 5}},
                "retry_same_node": true}}}"#,
        )
        .unwrap();
    // Timeouts are retryable: 1 + 2 attempts.
    let mut cx = client.context("Echo");
    let err = client
        .call_with::<_, Echo>(&mut cx, &slow(300))
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    assert_eq!(cx.rpc_info.stats.attempts, 3);
    assert!(
        eventually(Duration::from_secs(5), || hits.get() == 3).await,
        "hits {}",
        hits.get()
    );

    // Application errors are not retried.
    let before = hits.get();
    let mut cx = client.context("Echo");
    let req = Echo {
        fail_code: 4004,
        ..echo("x")
    };
    let err = client
        .call_with::<_, Echo>(&mut cx, &req)
        .await
        .unwrap_err();
    assert_eq!(err.remote_code(), Some(4004));
    assert_eq!(cx.rpc_info.stats.attempts, 1);
    assert_eq!(hits.get(), before + 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_duration_stops_retrying() {
    init_tracing();
    let (server, _, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 100}}"#)
        .unwrap();
    client
        .policies()
        .retry
        .set_json(
            r#"{"*": {"enable": true, "type": 0, "failure_policy": {
                "stop_policy": {"max_retry_times": 5, "max_duration_ms": 50},
                "retry_same_node": true}}}"#,
        )
        .unwrap();
    let mut cx = client.context("Echo");
    client
        .call_with::<_, Echo>(&mut cx, &slow(500))
        .await
        .unwrap_err();
    // The first attempt alone outlasts max_duration_ms: no retry starts.
    assert_eq!(cx.rpc_info.stats.attempts, 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_stop_keeps_a_retried_request_from_retrying_downstream() {
    init_tracing();
    // B always times out for A's client; A's client retries twice unless chain-stopped.
    let (bb, b_hits) = echo_server("svc-b", "b");
    let server_b = bb.start().await.unwrap();
    let client_b = Client::builder("svc-b")
        .address(server_b.local_addr())
        .build()
        .unwrap();
    client_b
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 20}}"#)
        .unwrap();
    client_b
        .policies()
        .retry
        .set_json(r#"{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2}, "retry_same_node": true}}}"#)
        .unwrap();
    let cb = client_b.clone();
    let server_a = gannet_core::Server::builder("svc-a")
        .bind(loopback())
        .handler("Forward", move |req: Echo| {
            let cb = cb.clone();
            async move {
                let mut cx = cb.context("Echo");
                let res = cb.call_with::<_, Echo>(&mut cx, &req).await;
                Ok(Echo {
                    text: format!("attempts={} ok={}", cx.rpc_info.stats.attempts, res.is_ok()),
                    ..Echo::default()
                })
            }
        })
        .start()
        .await
        .unwrap();
    let client = Client::builder("svc-a")
        .address(server_a.local_addr())
        .build()
        .unwrap();

    // A normal request: A's call to B is retried.
    let r: Echo = client.call("Forward", &slow(200)).await.unwrap();
    assert_eq!(r.text, "attempts=3 ok=false");

    // A request that is itself a retry (as the retry policy marks it): no retry downstream.
    let mut cx = client.context("Forward");
    cx.meta
        .set_transient(gannet_core::policy::retry::RETRY_TAG, "2");
    let r: Echo = client.call_with(&mut cx, &slow(200)).await.unwrap();
    assert_eq!(r.text, "attempts=1 ok=false");

    // Unless the policy disables chain stop.
    client_b
        .policies()
        .retry
        .set_json(r#"{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2, "disable_chain_stop": true}, "retry_same_node": true}}}"#)
        .unwrap();
    let mut cx = client.context("Forward");
    cx.meta
        .set_transient(gannet_core::policy::retry::RETRY_TAG, "2");
    let r: Echo = client.call_with(&mut cx, &slow(200)).await.unwrap();
    assert_eq!(r.text, "attempts=3 ok=false");
    assert!(b_hits.get() >= 7);
    server_a.shutdown().await.unwrap();
    server_b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_request_answers_from_the_fast_instance() {
    init_tracing();
    // "slow" sleeps 3 s on every call; "fast" answers at once.
    let slow_hits = Hits::default();
    let h = slow_hits.clone();
    let slow_server = gannet_core::Server::builder("gov")
        .bind(loopback())
        .handler("Echo", move |req: Echo| {
            h.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                Ok(Echo {
                    served_by: "slow".into(),
                    ..req
                })
            }
        })
        .drain_timeout(Duration::from_millis(10))
        .start()
        .await
        .unwrap();
    let (b, _) = echo_server("gov", "fast");
    let fast = b.start().await.unwrap();
    let client = Client::builder("gov")
        .address(slow_server.local_addr())
        .address(fast.local_addr())
        .build()
        .unwrap();
    client
        .policies()
        .retry
        .set_json(r#"{"Echo": {"enable": true, "type": 1, "backup_policy": {"retry_delay_ms": 30, "stop_policy": {"max_retry_times": 1}}}}"#)
        .unwrap();
    for _ in 0..4 {
        let r: Echo = client.call("Echo", &echo("x")).await.unwrap();
        assert_eq!(r.served_by, "fast");
    }
    assert!(
        slow_hits.get() >= 1,
        "round robin sent some first attempts to the slow instance"
    );
    slow_server.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

/// Turns on `Echo`'s breaker (half of at least four calls failing opens it, `cooling_ms` of
/// cooling) with a 20 ms timeout, and opens it with four calls that time out.
async fn open_echo_breaker(client: &Client, cooling_ms: u64) {
    let p = client.policies();
    p.timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 20}}"#)
        .unwrap();
    p.circuit_break
        .set_json(&format!(
            r#"{{"Echo": {{"enable": true, "err_rate": 0.5, "min_sample": 4, "cooling_timeout_ms": {cooling_ms}}}}}"#
        ))
        .unwrap();
    for _ in 0..4 {
        let e = client
            .call::<_, Echo>("Echo", &slow(200))
            .await
            .unwrap_err();
        assert!(e.is_timeout());
    }
    assert_eq!(
        client.circuit_breakers().method_state("Echo"),
        BreakerState::Open
    );
}

/// Sends a probe through `Echo`'s breaker (cooled down): it succeeds and closes the breaker.
async fn probe_closes_echo_breaker(client: &Client) {
    let ok: Echo = client.call("Echo", &echo("probe")).await.unwrap();
    assert_eq!(ok.text, "probe");
    assert_eq!(
        client.circuit_breakers().method_state("Echo"),
        BreakerState::Closed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_breaker_opens_then_half_opens_and_closes() {
    init_tracing();
    let (server, hits, client) = serve_and_connect("gov", "s1").await;
    open_echo_breaker(&client, 300).await;
    assert!(eventually(Duration::from_secs(5), || hits.get() == 4).await);
    let e = client
        .call::<_, Echo>("Echo", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::CircuitOpen);
    assert_eq!(hits.get(), 4, "an open breaker sends nothing");

    // After cooling, one probe passes; it succeeds, so the breaker closes.
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 10000}}"#)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    probe_closes_echo_breaker(&client).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_breaker_steers_calls_away_from_a_dead_instance() {
    init_tracing();
    let (b, hits) = echo_server("gov", "good");
    let server = b.start().await.unwrap();
    let dead = dead_addr();
    let client = Client::builder("gov")
        .address(dead)
        .address(server.local_addr())
        .instance_circuit_breaker(CircuitBreakerConfig {
            enable: true,
            err_rate: 0.5,
            min_sample: 2,
            cooling_timeout_ms: 60_000,
        })
        .build()
        .unwrap();
    for _ in 0..6 {
        let _ = client.call::<_, Echo>("Echo", &echo("x")).await;
    }
    assert_eq!(
        client.circuit_breakers().instance_state(&dead),
        BreakerState::Open
    );
    let before = hits.get();
    for _ in 0..20 {
        let r: Echo = client.call("Echo", &echo("x")).await.unwrap();
        assert_eq!(r.served_by, "good");
    }
    assert_eq!(hits.get(), before + 20);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_qps_limit_rejects_and_can_be_lifted_live() {
    init_tracing();
    let (b, _) = echo_server("gov", "s1");
    let server = b.start().await.unwrap();
    server
        .policies()
        .limit
        .set_json(r#"{"connection_limit": 0, "qps_limit": 5}"#)
        .unwrap();
    let client = Client::builder("gov")
        .address(server.local_addr())
        .build()
        .unwrap();
    let mut rejected = 0;
    for _ in 0..40 {
        match client.call::<_, Echo>("Echo", &echo("x")).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.remote_code(), Some(code::RATE_LIMITED), "{e}");
                rejected += 1;
            }
        }
    }
    assert!(rejected > 0, "40 calls against a 5 QPS limit");
    server
        .policies()
        .limit
        .set_json(r#"{"qps_limit": 0}"#)
        .unwrap();
    for _ in 0..40 {
        let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connection_limit_closes_extra_connections() {
    init_tracing();
    let (b, _) = echo_server("gov", "s1");
    let server = b.start().await.unwrap();
    server
        .policies()
        .limit
        .set_json(r#"{"connection_limit": 1}"#)
        .unwrap();
    let first = Client::builder("gov")
        .address(server.local_addr())
        .build()
        .unwrap();
    let _: Echo = first.call("Echo", &echo("x")).await.unwrap();
    let second = Client::builder("gov")
        .address(server.local_addr())
        .build()
        .unwrap();
    let err = second
        .call::<_, Echo>("Echo", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    // The admitted connection keeps working.
    let _: Echo = first.call("Echo", &echo("x")).await.unwrap();
    assert_eq!(server.policies().limit.connections(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn degradation_drops_the_configured_share() {
    init_tracing();
    let (server, hits, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .degradation
        .set_json(r#"{"enable": true, "percentage": 100}"#)
        .unwrap();
    for _ in 0..10 {
        let e = client
            .call::<_, Echo>("Echo", &echo("x"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Degraded);
    }
    assert_eq!(hits.get(), 0);
    client
        .policies()
        .degradation
        .set_json(r#"{"enable": true, "percentage": 50}"#)
        .unwrap();
    let ok = futures_count(&client, 400).await;
    // 50% of 400 dropped; the binomial spread keeps it within 140..260
    assert!((140..260).contains(&ok), "{ok} of 400 passed");
    // Invalid values are refused and the last good value stays.
    assert!(
        client
            .policies()
            .degradation
            .set_json(r#"{"enable": true, "percentage": 101}"#)
            .is_err()
    );
    assert_eq!(client.policies().degradation.load().percentage, 50);
    server.shutdown().await.unwrap();
}

async fn futures_count(client: &Client, n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        if client.call::<_, Echo>("Echo", &echo("x")).await.is_ok() {
            ok += 1;
        }
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_circuit_breaker_stops_retries_when_most_calls_fail() {
    init_tracing();
    let (server, _, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 20}}"#)
        .unwrap();
    client
        .policies()
        .retry
        .set_json(
            r#"{"*": {"enable": true, "type": 0, "failure_policy": {
                "stop_policy": {"max_retry_times": 2, "cb_policy": {"error_rate": 0.1}},
                "retry_same_node": true}}}"#,
        )
        .unwrap();
    // Every attempt times out. The first three calls retry fully (9 failed attempts: below
    // the breaker's minimum sample of 10); from the tenth failure on, retries stop.
    let mut attempts = Vec::new();
    for _ in 0..5 {
        let mut cx = client.context("Echo");
        client
            .call_with::<_, Echo>(&mut cx, &slow(200))
            .await
            .unwrap_err();
        attempts.push(cx.rpc_info.stats.attempts);
    }
    assert_eq!(attempts, [3, 3, 3, 1, 1]);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_fires_while_its_connection_is_busy() {
    init_tracing();
    let (server, _, client) = serve_and_connect("gov", "s1").await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 50}}"#)
        .unwrap();
    // Fast calls keep the one connection busy the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut ok = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if client.call::<_, Echo>("Echo", &echo("fast")).await.is_ok() {
                    ok += 1;
                }
            }
            ok
        })
    };
    // The server holds this one for 2 s; the client must give up at ~50 ms, not wait.
    let err = client
        .call::<_, Echo>("Echo", &slow(2000))
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        flood.await.unwrap() > 0,
        "the fast calls went through meanwhile"
    );
    assert_eq!(client.connection_count(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_probe_does_not_keep_the_breaker_shut() {
    init_tracing();
    let (server, _hits, client) = serve_and_connect("gov", "s1").await;
    open_echo_breaker(&client, 100).await;
    client
        .policies()
        .timeout
        .set_json(r#"{"*": {"rpc_timeout_ms": 10000}}"#)
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    // The probe's caller gives up before the (slow) reply: the probe has no outcome.
    let cancelled = tokio::time::timeout(
        Duration::from_millis(100),
        client.call::<_, Echo>("Echo", &slow(2000)),
    )
    .await;
    assert!(cancelled.is_err(), "the probe was cancelled, not answered");
    // After another cooling period a new probe goes through and closes the breaker (a lost
    // probe used to leave it admitting nothing, ever).
    tokio::time::sleep(Duration::from_millis(150)).await;
    probe_closes_echo_breaker(&client).await;
    server.shutdown().await.unwrap();
}

/// Calls a balancer was told started and finished.
#[derive(Default)]
struct InFlightCounts {
    started: AtomicUsize,
    finished: AtomicUsize,
}

/// Round robin that counts the calls it is told started and finished (the test keeps the
/// counts).
#[derive(Default)]
struct CountingBalancer {
    inner: WeightedRoundRobin,
    counts: Arc<InFlightCounts>,
}

impl LoadBalancer for CountingBalancer {
    fn name(&self) -> &'static str {
        "counting"
    }
    fn pick<'a>(
        &self,
        cx: &gannet_core::Context,
        snapshot: &'a Snapshot,
        exclude: &[SocketAddr],
    ) -> Option<&'a Instance> {
        self.inner.pick(cx, snapshot, exclude)
    }
    fn on_start(&self, _addr: SocketAddr) {
        self.counts.started.fetch_add(1, Ordering::SeqCst);
    }
    fn on_finish(&self, _addr: SocketAddr) {
        self.counts.finished.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_call_is_no_longer_in_flight_for_the_balancer() {
    init_tracing();
    let (b, _hits) = echo_server("gov", "s1");
    let server = b.start().await.unwrap();
    let lb = CountingBalancer::default();
    let counts = lb.counts.clone();
    let client = Client::builder("gov")
        .address(server.local_addr())
        .load_balancer(lb)
        .build()
        .unwrap();
    let balanced = |c: &InFlightCounts| {
        (
            c.started.load(Ordering::SeqCst),
            c.finished.load(Ordering::SeqCst),
        )
    };
    // The first call of a client discovers and connects (the general path); later calls find
    // their connection ready. A caller giving up on either must not leave a call counted.
    for n in 1..=3 {
        let cancelled = tokio::time::timeout(
            Duration::from_millis(100),
            client.call::<_, Echo>("Echo", &slow(2000)),
        )
        .await;
        assert!(cancelled.is_err(), "call {n} was cancelled");
        assert_eq!(balanced(&counts), (n, n), "after cancelled call {n}");
    }
    let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    assert_eq!(balanced(&counts), (4, 4));
    server.shutdown().await.unwrap();
}
