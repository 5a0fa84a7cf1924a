//! Against a real Nacos 2.x server (rnacos) started by the harness: the conformance kit
//! (clients following servers coming and going included).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gannet_conformance::harness::Nacos;
use gannet_conformance::registry::{Backend, Subject, check_all, done};
use gannet_registry_nacos::NacosOptions;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct NacosBackend {
    nacos: Arc<Nacos>,
    http: reqwest::Client,
}

impl NacosBackend {
    /// Calls Nacos's open API; returns the body.
    async fn call(&self, method: reqwest::Method, path: &str) -> Result<String, String> {
        let resp = self
            .http
            .request(
                method.clone(),
                format!("http://{}{path}", self.nacos.addr()),
            )
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{method} {path}: {status}: {body}"))
        }
    }
}

#[async_trait]
impl Backend for NacosBackend {
    async fn stop(&self) -> Result<bool, String> {
        done(self.nacos.stop().await)
    }

    async fn start(&self) -> Result<bool, String> {
        done(self.nacos.restart().await)
    }

    /// Removes every instance of every service through the open API, as an operator would:
    /// the registry must notice and register again.
    async fn expire_sessions(&self) -> Result<bool, String> {
        let list = self
            .call(
                reqwest::Method::GET,
                "/nacos/v1/ns/service/list?pageNo=1&pageSize=10000",
            )
            .await?;
        let list: serde_json::Value = serde_json::from_str(&list).map_err(|e| e.to_string())?;
        let services: Vec<String> = list["doms"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        for svc in services {
            let hosts = self
                .call(
                    reqwest::Method::GET,
                    &format!("/nacos/v1/ns/instance/list?serviceName={svc}"),
                )
                .await?;
            let hosts: serde_json::Value =
                serde_json::from_str(&hosts).map_err(|e| e.to_string())?;
            for h in hosts["hosts"].as_array().into_iter().flatten() {
                let (Some(ip), Some(port)) = (h["ip"].as_str(), h["port"].as_i64()) else {
                    continue;
                };
                self.call(
                    reqwest::Method::DELETE,
                    &format!(
                        "/nacos/v1/ns/instance?serviceName={svc}&ip={ip}&port={port}&ephemeral=true"
                    ),
                )
                .await?;
            }
        }
        Ok(true)
    }

    /// A persistent instance of `service` whose ip is not an IP address, registered by
    /// "another tool".
    async fn write_malformed(&self, service: &str) -> Result<bool, String> {
        self.call(
            reqwest::Method::POST,
            &format!(
                "/nacos/v1/ns/instance?serviceName={service}&ip=not-an-ip.invalid&port=1&ephemeral=false"
            ),
        )
        .await
        .map(|_| true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nacos_adapter_passes_the_conformance_kit() {
    init_tracing();
    let nacos = Arc::new(Nacos::start().await.expect("nacos for tests"));
    // The default check interval (10 s): longer than the kit's 5 s for pushes, so what the
    // watch delivers in time came by push, not by its periodic read.
    let opts = NacosOptions::new()
        .addr(nacos.addr())
        .request_timeout(Duration::from_secs(3));
    let dead = format!(
        "127.0.0.1:{}",
        gannet_conformance::harness::free_port().unwrap()
    );
    let unreachable = NacosOptions::new()
        .addr(dead)
        .request_timeout(Duration::from_secs(2));
    let mut subject = Subject::new(
        Arc::new(opts.registry()),
        Arc::new(opts.resolver()),
        Arc::new(NacosBackend {
            nacos: nacos.clone(),
            http: reqwest::Client::new(),
        }),
    );
    subject.unreachable = Some((
        Arc::new(unreachable.registry()),
        Arc::new(unreachable.resolver()),
    ));
    let report = check_all(&subject).await;
    println!("{report:#?}");
    // A real server can do everything the kit asks: nothing may be skipped.
    report.assert_all_passed();
}
