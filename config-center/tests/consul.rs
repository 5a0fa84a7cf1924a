//! The Consul source against a real Consul agent started by the harness: values changed while
//! a client and a server run, and watching resumes after Consul restarts.

mod common;

use common::{Store, TIMEOUT};
use gannet_config_center::consul::ConsulSource;
use gannet_conformance::harness::Consul;
use gannet_core::ErrorKind;

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
    let f = common::timeouts(source.clone(), &store).await;
    common::retry_and_breaker(&f, &store).await;
    common::limit(&f, &store).await;

    store
        .put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 3000}}"#)
        .await;
    common::eventually("3 s timeout", || async { f.timeout_ms() == Some(3000) }).await;
    consul.stop().await.expect("consul stops");
    common::eventually("the watch notices the outage", || async {
        f.client_config.source_errors() > 0
    })
    .await;
    assert_eq!(
        f.timeout_ms(),
        Some(3000),
        "policies stay while Consul is down"
    );
    f.call(100).await.expect("calls go on while Consul is down");
    consul.restart().await.expect("consul restarts");
    store.put(TIMEOUT, r#"{"*": {"rpc_timeout_ms": 50}}"#).await;
    common::eventually("a value written after the restart applies", || async {
        f.call(300)
            .await
            .is_err_and(|e| e.kind() == ErrorKind::Timeout)
    })
    .await;
    f.server.shutdown().await.unwrap();
}
