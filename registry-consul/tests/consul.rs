//! Against a real Consul agent started by the harness: the conformance kit (clients following
//! servers coming and going included).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gannet_conformance::harness::Consul;
use gannet_conformance::registry::{Backend, Subject, check_all, done};
use gannet_registry_consul::ConsulOptions;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct ConsulBackend {
    consul: Arc<Consul>,
    http: reqwest::Client,
}

impl ConsulBackend {
    async fn put(&self, path: &str, body: &str) -> Result<(), String> {
        let resp = self
            .http
            .put(format!("{}{path}", self.consul.endpoint()))
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("PUT {path}: {}", resp.status()))
        }
    }
}

#[async_trait]
impl Backend for ConsulBackend {
    async fn stop(&self) -> Result<bool, String> {
        done(self.consul.stop().await)
    }

    async fn start(&self) -> Result<bool, String> {
        done(self.consul.restart().await)
    }

    /// Consul has no sessions behind a service registration: what a registry can lose is the
    /// registration itself (an operator, or the agent reaping it). Deregister everything.
    async fn expire_sessions(&self) -> Result<bool, String> {
        let body = self
            .http
            .get(format!("{}/v1/agent/services", self.consul.endpoint()))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())?;
        let services: std::collections::HashMap<String, serde_json::Value> =
            serde_json::from_slice(&body).map_err(|e| e.to_string())?;
        for id in services.keys() {
            self.put(&format!("/v1/agent/service/deregister/{id}"), "")
                .await?;
        }
        Ok(true)
    }

    /// An instance of `service` at an address that is not an IP address, registered by
    /// "another tool".
    async fn write_malformed(&self, service: &str) -> Result<bool, String> {
        let body = serde_json::json!({
            "ID": format!("{service}-not-gannet"),
            "Name": service,
            "Address": "not-an-ip.invalid",
            "Port": 1,
        });
        self.put("/v1/agent/service/register", &body.to_string())
            .await
            .map(|()| true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_adapter_passes_the_conformance_kit() {
    init_tracing();
    let consul = Arc::new(Consul::start().await.expect("consul for tests"));
    let opts = ConsulOptions::new()
        .endpoint(consul.endpoint())
        .ttl(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(2))
        .wait(Duration::from_secs(5));
    let dead = format!(
        "http://127.0.0.1:{}",
        gannet_conformance::harness::free_port().unwrap()
    );
    let unreachable = ConsulOptions::new()
        .endpoint(dead)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1));
    let mut subject = Subject::new(
        Arc::new(opts.registry()),
        Arc::new(opts.resolver()),
        Arc::new(ConsulBackend {
            consul: consul.clone(),
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
