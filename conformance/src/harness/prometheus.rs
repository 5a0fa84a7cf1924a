//! A real Prometheus server for tests.

use std::net::SocketAddr;
use std::time::Duration;

use super::runner::{Launch, Runner, start_either};
use super::{HarnessError, Result, free_port, http, wait_ready};

/// The image the container path runs.
const IMAGE: (&str, &str) = ("prom/prometheus", "v2.53.2");

/// A real Prometheus server scraping the given targets every second.
///
/// Started as a `prom/prometheus` container on the host network (feature `containers`, when a
/// Docker engine answers), else from the `prometheus` binary installed by
/// `scripts/install-test-servers prometheus`; with its own storage and a free loopback port.
#[derive(Debug)]
pub struct Prometheus {
    addr: String,
    runner: Runner,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts Prometheus with one scrape job (`gannet`) on `targets` and waits until ready.
    ///
    /// # Errors
    /// If it cannot be started, with what to install.
    pub async fn start(targets: &[SocketAddr]) -> Result<Prometheus> {
        start_either("prometheus", "prometheus", IMAGE, |launch| {
            Self::start_with(launch, targets)
        })
        .await
    }

    async fn start_with(launch: Launch, targets: &[SocketAddr]) -> Result<Prometheus> {
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
        let (config_arg, storage) = if launch.is_container() {
            // The image runs as `nobody`: let it read the mounted config; keep its storage in
            // the image's own volume.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
            std::fs::set_permissions(&config_path, std::fs::Permissions::from_mode(0o644))?;
            (
                "/gannet/prometheus.yml".to_string(),
                "/prometheus".to_string(),
            )
        } else {
            (
                config_path.display().to_string(),
                dir.path().join("data").display().to_string(),
            )
        };
        let args = vec![
            format!("--config.file={config_arg}"),
            format!("--storage.tsdb.path={storage}"),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".into(),
        ];
        let mounts = vec![(dir.path().to_path_buf(), "/gannet".to_string())];
        let runner = launch
            .start(args, Vec::new(), mounts, dir.path().join("prometheus.log"))
            .await?;
        let p = Prometheus {
            addr: format!("127.0.0.1:{port}"),
            runner,
            _dir: dir,
        };
        let addr = p.addr.clone();
        wait_ready(
            "prometheus",
            p.runner.process(),
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
