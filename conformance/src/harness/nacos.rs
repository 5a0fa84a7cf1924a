//! A real Nacos 2.x server (rnacos) for tests.

use std::time::Duration;

use super::process::LocalProcess;
use super::{HarnessError, Result, find_binary, free_port_group, http, wait_ready};

/// A real Nacos server: `rnacos`, a Nacos 2.x server in Rust that speaks the HTTP open API and
/// the gRPC protocol `nacos-sdk` uses.
///
/// [`Nacos::start`] uses the endpoint in `GANNET_TEST_NACOS` (`host:port` of the HTTP API) if
/// set, else the `rnacos` binary built by `scripts/install-test-servers nacos`, with its own
/// data directory; its gRPC port is the HTTP port + 1000 and its console + 2000, all on
/// loopback.
#[derive(Debug)]
pub struct Nacos {
    addr: String,
    local: Option<(LocalProcess, tempfile::TempDir)>,
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
        let bin = find_binary("rnacos")?;
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("gannet-nacos-").tempdir()?;
            let port = free_port_group(&[1000, 2000])?;
            let envs = vec![
                ("RNACOS_HTTP_PORT".to_string(), port.to_string()),
                (
                    "RNACOS_CONFIG_DB_DIR".to_string(),
                    dir.path().join("db").display().to_string(),
                ),
                ("RNACOS_SDK_HOST".to_string(), "127.0.0.1".to_string()),
                ("RNACOS_CONSOLE_HOST".to_string(), "127.0.0.1".to_string()),
                ("RNACOS_HTTP_WORKERS".to_string(), "2".to_string()),
            ];
            let process =
                LocalProcess::new(bin.clone(), Vec::new(), envs, dir.path().join("rnacos.log"));
            process.spawn()?;
            let n = Nacos {
                addr: format!("127.0.0.1:{port}"),
                local: Some((process, dir)),
            };
            match n.wait_ready(Duration::from_secs(60)).await {
                Ok(()) => return Ok(n),
                Err(e) => {
                    last = e.to_string();
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
        wait_ready("nacos", self.local.as_ref().map(|(p, _)| p), limit, || {
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
        })
        .await
    }

    fn local(&self) -> Result<&LocalProcess> {
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
        self.local()?.kill().await;
        Ok(())
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
