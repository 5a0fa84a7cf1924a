//! A real Prometheus server for tests.

use std::net::SocketAddr;
use std::time::Duration;

use super::process::LocalProcess;
use super::{HarnessError, Result, find_binary, free_port, http, wait_ready};

/// A real Prometheus server scraping the given targets every second.
///
/// Started from the `prometheus` binary installed by `scripts/install-test-servers prometheus`,
/// with its own storage directory and a free loopback port.
#[derive(Debug)]
pub struct Prometheus {
    addr: String,
    process: LocalProcess,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with one scrape job (`gannet`) on `targets` and waits until ready.
    ///
    /// # Errors
    /// If it cannot be started, with what to install.
    pub async fn start(targets: &[SocketAddr]) -> Result<Prometheus> {
        let bin = find_binary("prometheus")?;
        let dir = tempfile::Builder::new()
            .prefix("gannet-prometheus-")
            .tempdir()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: gannet\n    static_configs:\n      - targets: [{}]\n",
            list.join(", ")
        );
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let port = free_port()?;
        let args = vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.path().join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ];
        let process = LocalProcess::new(bin, args, Vec::new(), dir.path().join("prometheus.log"));
        process.spawn()?;
        let p = Prometheus {
            addr: format!("127.0.0.1:{port}"),
            process,
            _dir: dir,
        };
        let addr = p.addr.clone();
        wait_ready(
            "prometheus",
            Some(&p.process),
            Duration::from_secs(60),
            || {
                let addr = addr.clone();
                async move { http(&addr, "GET", "/-/ready", "").await.is_ok() }
            },
        )
        .await?;
        Ok(p)
    }

    /// The HTTP API, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs an instant query; returns the JSON answer.
    ///
    /// # Errors
    /// If Prometheus does not answer.
    pub async fn query(&self, promql: &str) -> Result<String> {
        let q: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        http(&self.addr, "GET", &format!("/api/v1/query?query={q}"), "")
            .await
            .map_err(|e| HarnessError(format!("query {promql:?}: {e}")))
    }
}
