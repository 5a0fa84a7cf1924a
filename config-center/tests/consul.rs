//! The Consul source against a real Consul agent started by the harness: values changed while
//! a client and a server run, and watching resumes after Consul restarts.

use gannet_config_center::consul::ConsulSource;
use gannet_conformance::config::{self as kit, Store, TIMEOUT};
use gannet_conformance::harness::Consul;

struct ConsulStore {
    endpoint: String,
    source: ConsulSource,
    http: reqwest::Client,
}

impl Store for ConsulStore {
    async fn put(&self, key: &str, value: &str) {
        let url = format!("{}/v1/kv/{}", self.endpoint, self.source.consul_key(key));
        let resp = self
            .http
            .put(url)
            .body(value.to_string())
            .send()
            .await
            .expect("put");
        assert!(resp.status().is_success(), "put {key}: {}", resp.status());
    }

    async fn delete(&self, key: &str) {
        let url = format!("{}/v1/kv/{}", self.endpoint, self.source.consul_key(key));
        let resp = self.http.delete(url).send().await.expect("delete");
        assert!(
            resp.status().is_success(),
            "delete {key}: {}",
            resp.status()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_config_changes_policies_live_and_survives_a_restart() {
    let consul = Consul::start().await.expect("consul starts");
    let source = ConsulSource::new(consul.endpoint());
    let store = ConsulStore {
        endpoint: consul.endpoint().to_string(),
        source: source.clone(),
        http: reqwest::Client::new(),
    };
    assert_eq!(
        source.consul_key(TIMEOUT),
        "KitexConfig/cli/svc/rpc_timeout",
        "kitex-contrib's key layout"
    );
    kit::every_behaviour(
        source,
        &store,
        "Consul",
        async { consul.stop().await.expect("Consul stops") },
        async { consul.restart().await.expect("Consul restarts") },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_source_gives_defaults_errors_and_no_long_wait() {
    // A port where nothing listens.
    let port = gannet_conformance::harness::free_port().unwrap();
    let source = ConsulSource::new(format!("http://127.0.0.1:{port}"));
    let started = std::time::Instant::now();
    let f = kit::Fixture::start(source).await;
    let waited = started.elapsed();
    // The server's suite (one key) and the client's (four keys) each wait once, 5 s, for an
    // answer that does not come: about 10 s in all, where waiting per key took 25 s.
    assert!(
        waited < std::time::Duration::from_secs(20),
        "building waited {waited:?}"
    );
    assert!(f.client_config.source_errors() > 0, "the outage is counted");
    assert!(
        f.client_config
            .last_error()
            .is_some_and(|e| e.contains("consul")),
        "{:?}",
        f.client_config.last_error()
    );
    assert_eq!(f.timeout_ms(), None, "defaults are in force");
    f.call(10).await.expect("calls work with the defaults");
    f.server.shutdown().await.unwrap();
}
