//! How a test server runs: a local process, or (feature `containers`) a container.
//!
//! Containers run on the **host network**: the server listens on the free loopback ports the
//! harness picked, exactly like the local binary, so the same readiness checks, endpoints and
//! fault tests work, a container can reach what runs on the host (Prometheus scraping a test's
//! exporter), and clients that derive one port from another (nacos-sdk: gRPC = HTTP + 1000)
//! keep working. Host networking needs a Linux Docker engine.

use std::path::{Path, PathBuf};

use super::Result;
use super::process::LocalProcess;

/// A running test server.
#[derive(Debug)]
pub(crate) enum Runner {
    Local(Box<LocalProcess>),
    #[cfg(feature = "containers")]
    Container {
        container: Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>,
        log: PathBuf,
    },
}

impl Runner {
    /// The local process, for readiness checks that notice an early exit.
    pub(crate) fn process(&self) -> Option<&LocalProcess> {
        match self {
            Runner::Local(p) => Some(p),
            #[cfg(feature = "containers")]
            Runner::Container { .. } => None,
        }
    }

    /// Stops the server (its data stays for [`Runner::restart`]).
    pub(crate) async fn stop(&self) -> Result<()> {
        match self {
            Runner::Local(p) => {
                p.kill().await;
                Ok(())
            }
            #[cfg(feature = "containers")]
            Runner::Container { container, .. } => container
                .stop()
                .await
                .map_err(|e| super::HarnessError(format!("stopping the container: {e}"))),
        }
    }

    /// Starts the server again with the same ports and data.
    pub(crate) async fn restart(&self) -> Result<()> {
        match self {
            Runner::Local(p) => p.restart().await,
            #[cfg(feature = "containers")]
            Runner::Container { container, log } => {
                container
                    .start()
                    .await
                    .map_err(|e| super::HarnessError(format!("starting the container: {e}")))?;
                follow_logs(container, log);
                Ok(())
            }
        }
    }

    /// The end of the server's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        match self {
            Runner::Local(p) => p.log_tail(),
            #[cfg(feature = "containers")]
            Runner::Container { log, .. } => tail(log),
        }
    }
}

#[cfg_attr(
    not(feature = "containers"),
    allow(dead_code, reason = "read only for containers")
)]
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// How to start a server: its local binary, or (feature `containers`) an image.
#[derive(Debug, Clone)]
pub(crate) enum Launch {
    Local(PathBuf),
    #[cfg(feature = "containers")]
    Container {
        image: &'static str,
        tag: &'static str,
    },
}

impl Launch {
    /// The local binary `name`, or an error saying what to install.
    pub(crate) fn local(name: &str) -> Result<Launch> {
        Ok(Launch::Local(super::find_binary(name)?))
    }

    /// Whether this runs a container (paths inside it differ from the host's).
    pub(crate) fn is_container(&self) -> bool {
        !matches!(self, Launch::Local(_))
    }

    /// Starts the server with `args` and `env`; `mounts` (host dir, container path) apply to
    /// containers only; output goes to `log`.
    pub(crate) async fn start(
        &self,
        args: Vec<String>,
        env: Vec<(String, String)>,
        mounts: Vec<(PathBuf, String)>,
        log: PathBuf,
    ) -> Result<Runner> {
        match self {
            Launch::Local(bin) => {
                let _ = mounts;
                let process = LocalProcess::new(bin.clone(), args, env, log);
                process.spawn()?;
                Ok(Runner::Local(Box::new(process)))
            }
            #[cfg(feature = "containers")]
            Launch::Container { image, tag } => {
                start_container(ContainerSpec {
                    image,
                    tag,
                    cmd: args,
                    env,
                    mounts,
                    log,
                })
                .await
            }
        }
    }
}

/// Tries `start` with a container of `image:tag` when the `containers` feature is on and a
/// Docker engine answers, then with the local binary `binary`.
pub(crate) async fn start_either<T, F, Fut>(
    what: &str,
    binary: &str,
    image: (&'static str, &'static str),
    start: F,
) -> Result<T>
where
    F: Fn(Launch) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    #[cfg(feature = "containers")]
    if super::docker_available() {
        match start(Launch::Container {
            image: image.0,
            tag: image.1,
        })
        .await
        {
            Ok(t) => return Ok(t),
            Err(e) => {
                tracing::warn!(error = %e, "{what} container failed; trying the local binary");
            }
        }
    }
    #[cfg(not(feature = "containers"))]
    let _ = (what, image);
    start(Launch::local(binary)?).await
}

/// What to run in a container.
#[cfg(feature = "containers")]
#[derive(Debug)]
pub(crate) struct ContainerSpec<'a> {
    pub(crate) image: &'a str,
    pub(crate) tag: &'a str,
    pub(crate) cmd: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    /// Host directories to mount: (host path, container path).
    pub(crate) mounts: Vec<(PathBuf, String)>,
    /// Where the container's stdout and stderr are copied (what `output()`-style readers read).
    pub(crate) log: PathBuf,
}

/// Starts a container on the host network and copies its output to `spec.log`.
#[cfg(feature = "containers")]
pub(crate) async fn start_container(spec: ContainerSpec<'_>) -> Result<Runner> {
    use testcontainers::core::Mount;
    use testcontainers::runners::AsyncRunner;
    use testcontainers::{GenericImage, ImageExt};
    let mut request = GenericImage::new(spec.image, spec.tag)
        .with_network("host")
        .with_cmd(spec.cmd);
    for (k, v) in spec.env {
        request = request.with_env_var(k, v);
    }
    for (host, target) in spec.mounts {
        request = request.with_mount(Mount::bind_mount(host.display().to_string(), target));
    }
    let container = request
        .start()
        .await
        .map_err(|e| super::HarnessError(format!("container {}:{}: {e}", spec.image, spec.tag)))?;
    follow_logs(&container, &spec.log);
    Ok(Runner::Container {
        container: Box::new(container),
        log: spec.log,
    })
}

/// Appends the container's stdout and stderr to `log` as they come.
#[cfg(feature = "containers")]
fn follow_logs(
    container: &testcontainers::ContainerAsync<testcontainers::GenericImage>,
    log: &Path,
) {
    use tokio::io::AsyncBufReadExt;
    for mut stream in [container.stdout(true), container.stderr(true)] {
        let log = log.to_path_buf();
        tokio::spawn(async move {
            let mut line = String::new();
            while stream.read_line(&mut line).await.is_ok_and(|n| n > 0) {
                use std::io::Write;
                if let Ok(mut f) = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                {
                    let _ = f.write_all(line.as_bytes());
                }
                line.clear();
            }
        });
    }
}
