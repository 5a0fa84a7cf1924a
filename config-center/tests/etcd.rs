//! The etcd source against a real etcd started by the harness: values changed while a client
//! and a server run, and watching resumes after etcd restarts.

use gannet_config_center::etcd::EtcdSource;
use gannet_conformance::config::{self as kit, Store, TIMEOUT};
use gannet_conformance::harness::Etcd;

struct EtcdStore {
    endpoint: String,
    source: EtcdSource,
}

impl EtcdStore {
    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([self.endpoint.as_str()], None)
            .await
            .expect("etcd answers")
    }
}

impl Store for EtcdStore {
    async fn put(&self, key: &str, value: &str) {
        self.client()
            .await
            .put(self.source.etcd_key(key), value, None)
            .await
            .expect("put");
    }

    async fn delete(&self, key: &str) {
        self.client()
            .await
            .delete(self.source.etcd_key(key), None)
            .await
            .expect("delete");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_config_changes_policies_live_and_survives_a_restart() {
    let etcd = Etcd::start().await.expect("etcd starts");
    let source = EtcdSource::new([etcd.endpoint()]);
    let store = EtcdStore {
        endpoint: etcd.endpoint().to_string(),
        source: source.clone(),
    };
    assert_eq!(
        source.etcd_key(TIMEOUT),
        "/KitexConfig/cli/svc/rpc_timeout",
        "kitex-contrib's key layout"
    );
    kit::every_behaviour(
        source,
        &store,
        "etcd",
        async { etcd.stop().await.expect("etcd stops") },
        async { etcd.restart().await.expect("etcd restarts") },
    )
    .await;
}
