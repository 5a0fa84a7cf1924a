//! Graceful shutdown, restarts and peers that go away.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use gannet_core::discovery::{MemoryRegistry, Resolver};
use gannet_core::{Client, ErrorKind, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_deregisters_first_then_drains_every_in_flight_call() {
    init_tracing();
    let registry = MemoryRegistry::new();
    let resolver = Arc::new(registry.resolver());
    let started = Hits::default();
    let (r, s) = (resolver.clone(), started.clone());
    // Each handler waits until the server is gone from the registry, then answers whether it
    // saw that. Deregistering only after the drain would leave them waiting, and fail them.
    let server = Server::builder("draining")
        .bind(loopback())
        .registry(registry.clone())
        .handler("Echo", move |req: Echo| {
            s.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let r = r.clone();
            async move {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                let mut deregistered = false;
                while tokio::time::Instant::now() < deadline {
                    if r.resolve("draining").await?.is_empty() {
                        deregistered = true;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Ok(Echo {
                    text: format!("{} deregistered={deregistered}", req.text),
                    ..Echo::default()
                })
            }
        })
        .start()
        .await
        .unwrap();
    assert_eq!(resolver.resolve("draining").await.unwrap().len(), 1);
    let client = Client::builder("draining")
        .resolver_arc(resolver.clone())
        .build()
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..20 {
        let c = client.clone();
        calls.push(tokio::spawn(async move {
            c.call::<_, Echo>("Echo", &echo(&i.to_string())).await
        }));
    }
    assert!(eventually(Duration::from_secs(10), || started.get() == 20).await);
    server.shutdown().await.unwrap();
    for (i, c) in calls.into_iter().enumerate() {
        let r = c.await.unwrap().expect("no in-flight call is lost");
        assert_eq!(r.text, format!("{i} deregistered=true"));
    }
    // Nothing listens any more: new calls fail with a typed error.
    let err = Client::builder("x")
        .address(client_addr_of(&resolver).await.unwrap_or_else(dead_addr))
        .build()
        .unwrap()
        .call::<_, Echo>("Echo", &echo("late"))
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Connect | ErrorKind::Transport),
        "{err}"
    );
}

async fn client_addr_of(
    r: &Arc<gannet_core::discovery::MemoryResolver>,
) -> Option<std::net::SocketAddr> {
    r.resolve("draining").await.ok()?.first().map(|i| i.address)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_shutdown_and_the_caller_gets_a_transport_error() {
    init_tracing();
    let server = Server::builder("stuck")
        .bind(loopback())
        .drain_timeout(Duration::from_millis(100))
        .handler("Echo", |_req: Echo| async move {
            std::future::pending::<()>().await;
            Ok(Echo::default())
        })
        .start()
        .await
        .unwrap();
    let client = Client::builder("stuck")
        .address(server.local_addr())
        .build()
        .unwrap();
    let call = tokio::spawn({
        let c = client.clone();
        async move { c.call::<_, Echo>("Echo", &echo("x")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(10), server.shutdown())
        .await
        .expect("shutdown is bounded by the drain timeout")
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("the caller is not left hanging")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
    assert!(err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reconnects_after_a_server_restart() {
    init_tracing();
    let (b, _) = echo_server("restart", "first");
    let first = b.start().await.unwrap();
    let addr = first.local_addr();
    let client = Client::builder("restart").address(addr).build().unwrap();
    let r: Echo = client.call("Echo", &echo("x")).await.unwrap();
    assert_eq!(r.served_by, "first");
    first.shutdown().await.unwrap();

    let (b, _) = echo_server("restart", "second");
    let second = b.bind(addr).start().await.unwrap();
    // The old connection is dead; the next call (at worst the one after) reconnects.
    let mut last = None;
    for _ in 0..3 {
        match client.call::<_, Echo>("Echo", &echo("x")).await {
            Ok(r) => {
                last = Some(r.served_by);
                break;
            }
            Err(e) => assert!(e.is_retryable(), "{e}"),
        }
    }
    assert_eq!(last.as_deref(), Some("second"));
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_closing_mid_call_gives_a_transport_error() {
    init_tracing();
    // A "server" that reads the request and hangs up without answering.
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            let _ = s.shutdown().await;
        }
    });
    let client = Client::builder("gone").address(addr).build().unwrap();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        client.call::<_, Echo>("Echo", &echo("x")),
    )
    .await
    .expect("no hang")
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Transport, "{err}");
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_shuts_down_gracefully_on_sigterm() {
    init_tracing();
    let registry = MemoryRegistry::new();
    let (b, _) = echo_server("signalled", "s1");
    let serving = tokio::spawn(b.registry(registry.clone()).serve());
    let resolver = registry.resolver();
    // Registered means listening, and the signal handler is installed before that.
    assert!(
        wait_registered(&resolver).await,
        "the server never registered"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let res = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("serve returns after SIGTERM")
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    assert!(
        resolver.resolve("signalled").await.unwrap().is_empty(),
        "deregistered"
    );
}

async fn wait_registered(r: &gannet_core::discovery::MemoryResolver) -> bool {
    for _ in 0..500 {
        if !r.resolve("signalled").await.unwrap().is_empty() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
