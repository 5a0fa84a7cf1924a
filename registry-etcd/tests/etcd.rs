//! Against a real etcd started by the harness: the conformance kit (clients following servers
//! coming and going included).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gannet_conformance::harness::Etcd;
use gannet_conformance::registry::{Backend, Subject, check_all, done};
use gannet_registry_etcd::EtcdOptions;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

struct EtcdBackend {
    etcd: Arc<Etcd>,
    prefix: String,
}

#[async_trait]
impl Backend for EtcdBackend {
    async fn stop(&self) -> Result<bool, String> {
        done(self.etcd.stop().await)
    }
    async fn start(&self) -> Result<bool, String> {
        done(self.etcd.restart().await)
    }
    async fn expire_sessions(&self) -> Result<bool, String> {
        self.etcd
            .revoke_all_leases()
            .await
            .map(|_| true)
            .map_err(|e| e.to_string())
    }
    async fn write_malformed(&self, service: &str) -> Result<bool, String> {
        let key = format!("{}/{service}/127.0.0.1:1", self.prefix);
        done(self.etcd.put_raw(&key, b"{this is not json").await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_adapter_passes_the_conformance_kit() {
    init_tracing();
    let etcd = Arc::new(Etcd::start().await.expect("etcd for tests"));
    let prefix = "conformance/registry";
    let opts = EtcdOptions::new()
        .endpoint(etcd.endpoint())
        .prefix(prefix)
        .ttl(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(2));
    let dead = format!(
        "http://127.0.0.1:{}",
        gannet_conformance::harness::free_port().unwrap()
    );
    let unreachable = EtcdOptions::new()
        .endpoint(dead)
        .connect_timeout(Duration::from_secs(1))
        .request_timeout(Duration::from_secs(1));
    let mut subject = Subject::new(
        Arc::new(opts.registry()),
        Arc::new(opts.resolver()),
        Arc::new(EtcdBackend {
            etcd: etcd.clone(),
            prefix: prefix.into(),
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
