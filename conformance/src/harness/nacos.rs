//! A real Nacos 2.x server (rnacos) for tests.

use std::time::Duration;

use super::runner::{Launch, Runner, start_either};
use super::{HarnessError, Result, free_port_group, http, wait_ready};

/// The image the container path runs (rnacos's own).
const IMAGE: (&str, &str) = ("qingpan/rnacos", "stable");

/// A real Nacos server: `rnacos`, a Nacos 2.x server in Rust that speaks the HTTP open API and
/// the gRPC protocol `nacos-sdk` uses.
///
/// [`Nacos::start`] uses the endpoint in `GANNET_TEST_NACOS` (`host:port` of the HTTP API) if
/// set, else a `qingpan/rnacos` container on the host network (feature `containers`, when a
/// Docker engine answers), else the `rnacos` binary built by
/// `scripts/install-test-servers nacos`; with its own data directory; its gRPC port is the
/// HTTP port + 1000 and its console + 2000, all on loopback.
#[derive(Debug)]
pub struct Nacos {
    addr: String,
    local: Option<(Runner, tempfile::TempDir)>,
}

impl Nacos {
    /// Starts (or finds) Nacos and waits until its naming API answers.
    ///
    /// # Errors
    /// If it cannot be started, with what to install.
    pub async fn start() -> Result<Nacos> {
        if let Ok(addr) = std::env::var("GANNET_TEST_NACOS") {
            let n = Nacos { addr, local: None };
            n.wait_ready(Duration::from_secs(10)).await?;
            return Ok(n);
        }
        start_either("nacos", "rnacos", IMAGE, Self::start_with).await
    }

    async fn start_with(launch: Launch) -> Result<Nacos> {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("gannet-nacos-").tempdir()?;
            let port = free_port_group(&[1000, 2000])?;
            let envs = vec![
                ("RNACOS_HTTP_PORT".to_string(), port.to_string()),
                (
                    "RNACOS_CONFIG_DB_DIR".to_string(),
                    if launch.is_container() {
                        "/gannet/db".to_string()
                    } else {
                        dir.path().join("db").display().to_string()
                    },
                ),
                ("RNACOS_SDK_HOST".to_string(), "127.0.0.1".to_string()),
                ("RNACOS_CONSOLE_HOST".to_string(), "127.0.0.1".to_string()),
                ("RNACOS_HTTP_WORKERS".to_string(), "2".to_string()),
            ];
            let mounts = vec![(dir.path().to_path_buf(), "/gannet".to_string())];
            let runner = launch
                .start(Vec::new(), envs, mounts, dir.path().join("rnacos.log"))
                .await?;
            let n = Nacos {
                addr: format!("127.0.0.1:{port}"),
                local: Some((runner, dir)),
            };
            match n.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return Ok(n),
                Err(e) => {
                    let tail = n
                        .local
                        .as_ref()
                        .map(|(r, _)| r.log_tail())
                        .unwrap_or_default();
                    last = format!("{e}\n{tail}");
                    n.stop().await.ok();
                }
            }
        }
        Err(HarnessError(format!("rnacos did not start: {last}")))
    }

    /// The HTTP API address, `127.0.0.1:PORT` (what `nacos-sdk` takes as its server address).
    #[must_use]
    pub fn addr(&self) -> &str {
        &self.addr
    }

    async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let addr = self.addr.clone();
        wait_ready(
            "nacos",
            self.local.as_ref().and_then(|(r, _)| r.process()),
            limit,
            || {
                let addr = addr.clone();
                async move {
                    http(
                        &addr,
                        "GET",
                        "/nacos/v1/ns/instance/list?serviceName=gannet-ready",
                        "",
                    )
                    .await
                    .is_ok()
                }
            },
        )
        .await
    }

    fn local(&self) -> Result<&Runner> {
        self.local
            .as_ref()
            .map(|(p, _)| p)
            .ok_or_else(|| HarnessError("an external nacos cannot be stopped or restarted".into()))
    }

    /// Stops the server.
    ///
    /// # Errors
    /// If the server is external.
    pub async fn stop(&self) -> Result<()> {
        self.local()?.stop().await
    }

    /// Starts the server again on the same ports and waits until it answers.
    ///
    /// # Errors
    /// If the server is external or does not come back.
    pub async fn restart(&self) -> Result<()> {
        self.local()?.restart().await?;
        self.wait_ready(Duration::from_secs(60)).await
    }
}
