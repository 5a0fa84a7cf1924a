//! The Nacos source against a real Nacos (rnacos) started by the harness: values changed while
//! a client and a server run, deletes noticed although nacos-sdk does not report them, and
//! watching resumed after Nacos restarts.

use gannet_config_center::nacos::{DEFAULT_GROUP, NacosSource, data_id};
use gannet_conformance::config::{self as kit, Store, TIMEOUT};
use gannet_conformance::harness::Nacos;

/// Writes through Nacos's open API, as an operator's tooling would.
struct NacosStore {
    addr: String,
    http: reqwest::Client,
}

impl NacosStore {
    /// Waits until the open API reads `key` as `want` (`None`: absent). rnacos applies a
    /// publish after answering it, so a read right after the write can still see the old
    /// state on a loaded machine; the kit's steps start from the written state.
    async fn settled(&self, key: &str, want: Option<&str>) {
        for _ in 0..200 {
            let resp = self
                .http
                .get(format!("http://{}/nacos/v1/cs/configs", self.addr))
                .query(&[("dataId", data_id(key).as_str()), ("group", DEFAULT_GROUP)])
                .send()
                .await
                .expect("read back");
            let now = if resp.status() == reqwest::StatusCode::NOT_FOUND {
                None
            } else {
                Some(resp.text().await.expect("read back"))
            };
            if now.as_deref() == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("{key} did not read back as {want:?} within 10 s");
    }
}

impl Store for NacosStore {
    async fn put(&self, key: &str, value: &str) {
        let resp = self
            .http
            .post(format!("http://{}/nacos/v1/cs/configs", self.addr))
            .form(&[
                ("dataId", data_id(key).as_str()),
                ("group", DEFAULT_GROUP),
                ("content", value),
            ])
            .send()
            .await
            .expect("publish");
        assert!(
            resp.status().is_success(),
            "publish {key}: {}",
            resp.status()
        );
        self.settled(key, Some(value)).await;
    }

    async fn delete(&self, key: &str) {
        let resp = self
            .http
            .delete(format!("http://{}/nacos/v1/cs/configs", self.addr))
            .query(&[("dataId", data_id(key).as_str()), ("group", DEFAULT_GROUP)])
            .send()
            .await
            .expect("delete");
        assert!(
            resp.status().is_success(),
            "delete {key}: {}",
            resp.status()
        );
        self.settled(key, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_config_changes_policies_live_and_survives_a_restart() {
    let nacos = Nacos::start().await.expect("nacos starts");
    let source = NacosSource::new(nacos.addr());
    let store = NacosStore {
        addr: nacos.addr().to_string(),
        http: reqwest::Client::new(),
    };
    assert_eq!(
        data_id(TIMEOUT),
        "cli.svc.rpc_timeout",
        "kitex-contrib's data id layout"
    );
    kit::every_behaviour(
        source,
        &store,
        "Nacos",
        async { nacos.stop().await.expect("Nacos stops") },
        async { nacos.restart().await.expect("Nacos restarts") },
    )
    .await;
}
