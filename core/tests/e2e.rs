//! End to end over loopback: calls, concurrency, metainfo across hops, discovery push, and the
//! load balancers' distributions through real servers.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use gannet_core::discovery::{Instance, MemoryRegistry, StaticResolver};
use gannet_core::loadbalance::{ConsistentHash, PowerOfTwoChoices, WeightedRandom};
use gannet_core::service::{Layer, PayloadLayer, PayloadService, layer_fn};
use gannet_core::{Client, Context, ErrorKind, MetaInfo, Service, Tracer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_call_round_trips() {
    init_tracing();
    let (server, hits, client) = serve_and_connect("echo", "s1").await;
    let reply: Echo = client.call("Echo", &echo("hello")).await.unwrap();
    assert_eq!(reply.text, "hello");
    assert_eq!(reply.served_by, "s1");
    assert_eq!(hits.get(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_share_one_connection() {
    init_tracing();
    let (server, hits, client) = serve_and_connect("echo", "s1").await;
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let req = Echo {
                text: format!("call-{i}"),
                delay_ms: (i % 7) as u64, // replies come back out of order
                ..Echo::default()
            };
            let reply: Echo = client.call("Echo", &req).await.unwrap();
            assert_eq!(
                reply.text,
                format!("call-{i}"),
                "reply matched to the wrong call"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(hits.get(), 1000);
    assert_eq!(client.connection_count(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_of_every_size_arrive_whole_and_in_their_own_reply() {
    init_tracing();
    // Small payloads are copied into the write buffer, large ones written from where they are
    // (vectored writes); 1 MiB ones fill the socket and are written in parts. Mixed on one
    // connection, every reply must carry exactly its own request's bytes.
    let (server, _, client) = serve_and_connect("echo", "s1").await;
    let sizes = [0, 1, 8191, 8192, 16 * 1024 + 1, 300 * 1024, 1024 * 1024];
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let client = client.clone();
        let size = sizes[i % sizes.len()];
        tasks.push(tokio::spawn(async move {
            let text: String = (0..size)
                .map(|j| char::from(b'a' + ((i + j) % 26) as u8))
                .collect();
            let reply: Echo = client.call("Echo", &echo(&text)).await.unwrap();
            assert_eq!(reply.text.len(), size, "call {i}: wrong length");
            assert!(
                reply.text == text,
                "call {i} ({size} bytes): payload changed on the way"
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(client.connection_count(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metainfo_travels_two_hops() {
    init_tracing();
    // B echoes what it sees.
    let (b, _) = echo_server("svc-b", "b");
    let server_b = b.start().await.unwrap();
    // A forwards to B from inside its handler.
    let client_b = Client::builder("svc-b")
        .caller("svc-a")
        .address(server_b.local_addr())
        .build()
        .unwrap();
    let server_a = gannet_core::Server::builder("svc-a")
        .bind(loopback())
        .handler("Forward", move |req: Echo| {
            let client_b = client_b.clone();
            async move {
                let seen_by_a = MetaInfo::current().unwrap_or_default();
                let mut from_b: Echo = client_b.call("Echo", &req).await?;
                // what A itself received, for the test to check
                from_b.text = format!(
                    "a-meta={} a-upstream={}",
                    seen_by_a.get_persistent("key").unwrap_or_default(),
                    seen_by_a.upstream("key").unwrap_or_default()
                );
                Ok(from_b)
            }
        })
        .start()
        .await
        .unwrap();

    let client = Client::builder("svc-a")
        .address(server_a.local_addr())
        .build()
        .unwrap();
    let mut cx = client.context("Forward");
    cx.meta.set_persistent("key", "persistent-value");
    cx.meta.set_transient("key", "transient-value");
    let reply: Echo = client.call_with(&mut cx, &echo("x")).await.unwrap();
    assert_eq!(
        reply.text,
        "a-meta=persistent-value a-upstream=transient-value"
    );
    assert_eq!(
        reply.meta, "persistent-value",
        "persistent pairs reach the second hop"
    );
    assert_eq!(reply.upstream, "", "transient pairs stop after one hop");
    server_a.shutdown().await.unwrap();
    server_b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_registry_pushes_new_instances_to_a_live_client() {
    init_tracing();
    let registry = MemoryRegistry::new();
    let (b1, _) = echo_server("pushed", "s1");
    let s1 = b1.registry(registry.clone()).start().await.unwrap();
    let client = Client::builder("pushed")
        .resolver(registry.resolver())
        .build()
        .unwrap();
    let first: Echo = client.call("Echo", &echo("x")).await.unwrap();
    assert_eq!(first.served_by, "s1");

    let (b2, hits2) = echo_server("pushed", "s2");
    // The grace period keeps s2 serving while clients learn it deregistered.
    let s2 = b2
        .registry(registry.clone())
        .exit_grace(Duration::from_millis(500))
        .start()
        .await
        .unwrap();
    // The memory resolver pushes; the default poll interval (5 s) is never waited for.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while hits2.get() == 0 && tokio::time::Instant::now() < deadline {
        let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    }
    assert!(hits2.get() > 0, "the new instance got no call");

    // Deregistration is pushed too: after s2 shuts down, calls only reach s1.
    s2.shutdown().await.unwrap();
    let before = hits2.get();
    for _ in 0..20 {
        let r: Echo = client.call("Echo", &echo("x")).await.unwrap();
        assert_eq!(r.served_by, "s1");
    }
    assert_eq!(hits2.get(), before);
    s1.shutdown().await.unwrap();
}

/// Starts servers with `weights`, returns them, their hit counters and a static resolver.
async fn weighted_servers(
    weights: &[u32],
) -> (Vec<gannet_core::RunningServer>, Vec<Hits>, StaticResolver) {
    let mut servers = Vec::new();
    let mut hits = Vec::new();
    let mut instances = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        let (b, h) = echo_server("lb", &format!("s{i}"));
        let s = b.start().await.unwrap();
        instances.push(Instance::new(s.local_addr()).with_weight(*w));
        servers.push(s);
        hits.push(h);
    }
    (servers, hits, StaticResolver::new(instances))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_distributes_by_weight() {
    init_tracing();
    let (servers, hits, resolver) = weighted_servers(&[10, 20, 30]).await;
    let client = Client::builder("lb").resolver(resolver).build().unwrap();
    for _ in 0..600 {
        let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    }
    let got: Vec<usize> = hits.iter().map(Hits::get).collect();
    assert_eq!(got, vec![100, 200, 300]);
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_random_distributes_by_weight() {
    init_tracing();
    let (servers, hits, resolver) = weighted_servers(&[10, 30]).await;
    let client = Client::builder("lb")
        .resolver(resolver)
        .load_balancer(WeightedRandom::new())
        .build()
        .unwrap();
    let n = 2000;
    for _ in 0..n {
        let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    }
    let share = hits[1].get() as f64 / n as f64;
    // expected 0.75; the standard deviation over 2000 draws is ~0.01
    assert!(
        (share - 0.75).abs() < 0.06,
        "share of the weight-30 instance: {share}"
    );
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_pins_keys_to_instances() {
    init_tracing();
    let (servers, _hits, resolver) = weighted_servers(&[10, 10, 10]).await;
    let client = Client::builder("lb")
        .resolver(resolver)
        .load_balancer(ConsistentHash::new())
        .build()
        .unwrap();
    let mut owner: HashMap<u64, String> = HashMap::new();
    for round in 0..3 {
        for key in 0..50u64 {
            let mut cx = client.context("Echo");
            cx.rpc_info.hash_key = Some(key);
            let r: Echo = client.call_with(&mut cx, &echo("x")).await.unwrap();
            let prev = owner.entry(key).or_insert_with(|| r.served_by.clone());
            assert_eq!(*prev, r.served_by, "key {key} moved in round {round}");
        }
    }
    let distinct: std::collections::HashSet<_> = owner.values().collect();
    assert_eq!(distinct.len(), 3, "50 keys spread over all instances");
    for s in servers {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_avoids_the_instance_with_calls_in_flight() {
    init_tracing();
    // "stuck" holds every call until the gate opens; "fast" answers at once.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stuck_hits = Hits::default();
    let (g, h) = (gate.clone(), stuck_hits.clone());
    let stuck = gannet_core::Server::builder("p2c")
        .bind(loopback())
        .handler("Echo", move |req: Echo| {
            h.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let g = g.clone();
            async move {
                let _permit = g.acquire().await;
                Ok(req)
            }
        })
        .start()
        .await
        .unwrap();
    let (b, fast_hits) = echo_server("p2c", "fast");
    let fast = b.start().await.unwrap();
    let client = Client::builder("p2c")
        .address(stuck.local_addr())
        .address(fast.local_addr())
        .load_balancer(PowerOfTwoChoices::new())
        .build()
        .unwrap();

    // Send calls until one is held by "stuck" (ties go either way, so a few may reach "fast").
    let mut held = Vec::new();
    while stuck_hits.get() == 0 {
        let c = client.clone();
        held.push(tokio::spawn(async move {
            c.call::<_, Echo>("Echo", &echo("held")).await
        }));
        assert!(
            eventually(Duration::from_secs(5), || stuck_hits.get()
                + fast_hits.get()
                >= held.len())
            .await
        );
    }
    // One call in flight on "stuck", none on "fast": every new call goes to "fast".
    let before = fast_hits.get();
    for _ in 0..50 {
        let r: Echo = client.call("Echo", &echo("x")).await.unwrap();
        assert_eq!(r.served_by, "fast");
    }
    assert_eq!(fast_hits.get(), before + 50);
    assert_eq!(stuck_hits.get(), 1);
    gate.add_permits(1000);
    for h in held {
        assert!(h.await.unwrap().is_ok());
    }
    stuck.shutdown().await.unwrap();
    fast.shutdown().await.unwrap();
}

#[derive(Debug, Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

struct Named(&'static str, Arc<Recorder>);

impl Tracer for Named {
    fn start(&self, cx: &mut Context) {
        self.1
            .0
            .lock()
            .unwrap()
            .push(format!("{} start {}", self.0, cx.method()));
    }
    fn finish(&self, cx: &mut Context) {
        let stats = &cx.rpc_info.stats;
        let outcome = match &stats.error {
            None => "ok".to_string(),
            Some(e) => e.kind().to_string(),
        };
        assert!(stats.duration().is_some(), "finish sees the duration");
        self.1
            .0
            .lock()
            .unwrap()
            .push(format!("{} finish {outcome}", self.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracers_start_in_order_and_finish_in_reverse_seeing_errors() {
    init_tracing();
    let (b, _) = echo_server("traced", "s1");
    let server = b.start().await.unwrap();
    let rec = Arc::new(Recorder::default());
    let client = Client::builder("traced")
        .address(server.local_addr())
        .tracer(Named("outer", rec.clone()))
        .tracer(Named("inner", rec.clone()))
        .build()
        .unwrap();
    let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    let err = client
        .call::<_, Echo>("Missing", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Remote);
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            "outer start Echo",
            "inner start Echo",
            "inner finish ok",
            "outer finish ok",
            "outer start Missing",
            "inner start Missing",
            "inner finish remote",
            "outer finish remote",
        ]
    );
    server.shutdown().await.unwrap();
}

/// A typed layer that hands the next service through unchanged.
#[derive(Clone)]
struct Passthrough;

impl Layer<PayloadService> for Passthrough {
    type Service = PayloadService;
    fn layer(self, inner: PayloadService) -> PayloadService {
        inner
    }
}

/// A middleware that records the method on the way in and the outcome on the way out.
fn recording(name: &'static str, rec: Arc<Recorder>) -> PayloadLayer {
    layer_fn(move |cx, req, next| {
        let rec = rec.clone();
        Box::pin(async move {
            let method = cx.method().to_string();
            rec.0.lock().unwrap().push(format!("{name} in {method}"));
            let res = next.call(cx, req).await;
            let outcome = res
                .as_ref()
                .map_or_else(|e| e.kind().to_string(), |_| "ok".into());
            rec.0.lock().unwrap().push(format!("{name} out {outcome}"));
            res
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_wraps_both_ends_in_order_and_sees_errors() {
    init_tracing();
    let rec = Arc::new(Recorder::default());
    let (b, hits) = echo_server("layered", "s1");
    let server = b
        .layer(recording("server-outer", rec.clone()))
        .layer(PayloadLayer::new(Passthrough))
        .layer(recording("server-inner", rec.clone()))
        .start()
        .await
        .unwrap();
    let client = Client::builder("layered")
        .address(server.local_addr())
        .layer(recording("client-outer", rec.clone()))
        .layer(PayloadLayer::new(Passthrough))
        .layer(recording("client-inner", rec.clone()))
        .build()
        .unwrap();
    let reply: Echo = client.call("Echo", &echo("x")).await.unwrap();
    assert_eq!(reply.text, "x");
    let err = client
        .call::<_, Echo>("Missing", &echo("x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Remote);
    assert_eq!(hits.get(), 1, "only the known method reached the handler");
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "client-outer in Echo",
            "client-inner in Echo",
            "server-outer in Echo",
            "server-inner in Echo",
            "server-inner out ok",
            "server-outer out ok",
            "client-inner out ok",
            "client-outer out ok",
            "client-outer in Missing",
            "client-inner in Missing",
            "server-outer in Missing",
            "server-inner in Missing",
            "server-inner out remote",
            "server-outer out remote",
            "client-inner out remote",
            "client-outer out remote",
        ]
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_of_only_pass_through_layers_still_calls() {
    init_tracing();
    let (b, hits) = echo_server("passthrough", "s1");
    let server = b
        .layer(PayloadLayer::new(Passthrough))
        .start()
        .await
        .unwrap();
    let client = Client::builder("passthrough")
        .address(server.local_addr())
        .layer(PayloadLayer::new(Passthrough))
        .build()
        .unwrap();
    let reply: Echo = client.call("Echo", &echo("through")).await.unwrap();
    assert_eq!(
        (reply.text.as_str(), reply.served_by.as_str()),
        ("through", "s1")
    );
    assert_eq!(hits.get(), 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_instance_opens_that_many_connections() {
    init_tracing();
    let (b, _) = echo_server("pool", "s1");
    let server = b.start().await.unwrap();
    let client = Client::builder("pool")
        .address(server.local_addr())
        .connections_per_instance(3)
        .build()
        .unwrap();
    for _ in 0..9 {
        let _: Echo = client.call("Echo", &echo("x")).await.unwrap();
    }
    assert_eq!(client.connection_count(), 3);
    server.shutdown().await.unwrap();
}

/// A registry that records what it was asked, and checks the server listens when registering.
#[derive(Default, Clone)]
struct Recording(Arc<std::sync::Mutex<Vec<String>>>);

#[async_trait::async_trait]
impl gannet_core::Registry for Recording {
    async fn register(&self, info: &gannet_core::RegistryInfo) -> gannet_core::Result<()> {
        // Registration comes after listening: the advertised port already accepts.
        let listening = tokio::net::TcpStream::connect(("127.0.0.1", info.address.port()))
            .await
            .is_ok();
        self.0
            .lock()
            .unwrap()
            .push(format!("register {} listening={listening}", info.address));
        Ok(())
    }
    async fn deregister(&self, info: &gannet_core::RegistryInfo) -> gannet_core::Result<()> {
        self.0
            .lock()
            .unwrap()
            .push(format!("deregister {}", info.address));
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_after_listening_with_the_advertised_address() {
    init_tracing();
    let rec = Recording::default();
    // Bound on every interface: the registered address is never 0.0.0.0.
    let (b, _) = echo_server("adv", "s1");
    let s = b
        .bind("0.0.0.0:0".parse().unwrap())
        .registry(rec.clone())
        .start()
        .await
        .unwrap();
    let registered = s.registry_info().address;
    assert!(!registered.ip().is_unspecified(), "{registered}");
    assert_eq!(registered.port(), s.local_addr().port());
    s.shutdown().await.unwrap();

    // An explicit advertised address wins.
    let (b, _) = echo_server("adv", "s2");
    let s = b
        .registry(rec.clone())
        .advertise("10.1.2.3:9999".parse().unwrap())
        .start()
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let log = rec.0.lock().unwrap().clone();
    assert_eq!(log.len(), 4);
    assert_eq!(log[0], format!("register {registered} listening=true"));
    assert_eq!(log[1], format!("deregister {registered}"));
    // (nothing listens on 127.0.0.1:9999, so the recorder reports listening=false there)
    assert_eq!(log[2], "register 10.1.2.3:9999 listening=false");
    assert_eq!(log[3], "deregister 10.1.2.3:9999");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_one_service_at_different_fixed_addresses_each_call_their_own() {
    init_tracing();
    let (a, _) = echo_server("same-name", "a");
    let (b, _) = echo_server("same-name", "b");
    let (a, b) = (a.start().await.unwrap(), b.start().await.unwrap());
    let to_a = Client::builder("same-name")
        .address(a.local_addr())
        .build()
        .unwrap();
    let to_b = Client::builder("same-name")
        .address(b.local_addr())
        .build()
        .unwrap();
    let ra: Echo = to_a.call("Echo", &echo("x")).await.unwrap();
    let rb: Echo = to_b.call("Echo", &echo("x")).await.unwrap();
    assert_eq!((ra.served_by.as_str(), rb.served_by.as_str()), ("a", "b"));
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
