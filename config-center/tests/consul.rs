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
