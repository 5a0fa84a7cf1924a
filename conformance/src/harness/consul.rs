//! A real Consul agent (dev mode) for tests.

use std::time::Duration;

use super::runner::{Launch, Runner, start_either};
use super::{HarnessError, Result, free_port, host_port, http, wait_ready};

/// The image the container path runs.
const IMAGE: (&str, &str) = ("hashicorp/consul", "1.20");

/// A real Consul agent in dev mode (a single-node server, state in memory).
///
/// [`Consul::start`] uses the endpoint in `GANNET_TEST_CONSUL` if set, else a `hashicorp/consul`
/// container on the host network (feature `containers`, when a Docker engine answers), else the
/// local `consul` binary installed by `scripts/install-test-servers consul`; on free loopback
/// ports (HTTP, Serf LAN/WAN, server RPC; DNS and gRPC off).
#[derive(Debug)]
pub struct Consul {
    endpoint: String,
    local: Option<(Runner, tempfile::TempDir)>,
}

impl Consul {
    /// Starts (or finds) Consul and waits until it has a leader.
    ///
    /// # Errors
    /// If it cannot be started, with what to install.
    pub async fn start() -> Result<Consul> {
        if let Ok(endpoint) = std::env::var("GANNET_TEST_CONSUL") {
            let c = Consul {
                endpoint,
                local: None,
            };
            c.wait_ready(Duration::from_secs(10)).await?;
            return Ok(c);
        }
        start_either("consul", "consul", IMAGE, Self::start_with).await
    }

    async fn start_with(launch: Launch) -> Result<Consul> {
        let mut last = String::new();
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("gannet-consul-")
                .tempdir()?;
            let http_port = free_port()?;
            let mut args: Vec<String> = [
                "agent",
                "-dev",
                "-client",
                "127.0.0.1",
                "-bind",
                "127.0.0.1",
                "-log-level",
                "warn",
            ]
            .map(String::from)
            .to_vec();
            for (flag, port) in [
                ("-http-port", http_port),
                ("-serf-lan-port", free_port()?),
                ("-serf-wan-port", free_port()?),
                ("-server-port", free_port()?),
            ] {
                args.push(flag.into());
                args.push(port.to_string());
            }
            args.extend(["-dns-port", "-1", "-grpc-port", "-1"].map(String::from));
            let runner = launch
                .start(args, Vec::new(), Vec::new(), dir.path().join("consul.log"))
                .await?;
            let c = Consul {
                endpoint: format!("http://127.0.0.1:{http_port}"),
                local: Some((runner, dir)),
            };
            match c.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(c),
                Err(e) => {
                    let tail = c
                        .local
                        .as_ref()
                        .map(|(r, _)| r.log_tail())
                        .unwrap_or_default();
                    last = format!("{e}\n{tail}");
                    c.stop().await.ok();
                }
            }
        }
        Err(HarnessError(format!("consul did not start: {last}")))
    }

    /// The HTTP API, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn host_port(&self) -> &str {
        host_port(&self.endpoint)
    }

    async fn wait_ready(&self, limit: Duration) -> Result<()> {
        let hp = self.host_port().to_string();
        wait_ready(
            "consul",
            self.local.as_ref().and_then(|(r, _)| r.process()),
            limit,
            || {
                let hp = hp.clone();
                async move {
                    // A non-empty leader address means the dev server elected itself.
                    http(&hp, "GET", "/v1/status/leader", "")
                        .await
                        .is_ok_and(|b| b.trim().len() > 2)
                }
            },
        )
        .await
    }

    fn local(&self) -> Result<&Runner> {
        self.local
            .as_ref()
            .map(|(p, _)| p)
            .ok_or_else(|| HarnessError("an external consul cannot be stopped or restarted".into()))
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
        self.wait_ready(Duration::from_secs(30)).await
    }
}
