//! Real servers for tests: one type per server, each started from (in order) an endpoint in an
//! environment variable, a container when the `containers` feature is on and a Docker engine
//! answers, or the local binary `scripts/install-test-servers` put in the cache.
//!
//! Every local server gets its own temporary data directory and free loopback ports, and is
//! killed by process id when its handle drops.

mod consul;
mod etcd;
mod nacos;
mod otel;
mod process;
mod prometheus;
mod runner;

pub use consul::Consul;
pub use etcd::Etcd;
pub use nacos::Nacos;
pub use otel::OtelCollector;
pub use prometheus::Prometheus;

use std::path::PathBuf;

/// Why a test server could not be started.
#[derive(Debug)]
pub struct HarnessError(pub String);

impl std::fmt::Display for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        Self(e.to_string())
    }
}

/// The result type of the harness.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Where `scripts/install-test-servers` caches binaries: `$GANNET_CACHE/bin`, by default
/// `${XDG_CACHE_HOME:-$HOME/.cache}/gannet/bin`.
#[must_use]
pub fn cache_bin_dir() -> PathBuf {
    if let Some(c) = std::env::var_os("GANNET_CACHE") {
        return PathBuf::from(c).join("bin");
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("gannet").join("bin")
}

/// Finds the binary `name`: `$GANNET_<NAME>_BIN`, the cache, then `PATH`.
///
/// # Errors
/// If it is nowhere, with the command that installs it.
pub fn find_binary(name: &str) -> Result<PathBuf> {
    let var = format!("GANNET_{}_BIN", name.to_ascii_uppercase());
    if let Some(p) = std::env::var_os(&var) {
        return Ok(PathBuf::from(p));
    }
    let cached = cache_bin_dir().join(name);
    if cached.is_file() {
        return Ok(cached);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    Err(HarnessError(format!(
        "no {name} binary: run `scripts/install-test-servers {name}`, or set {var}, or point \
         the tests at a running server with GANNET_TEST_{}",
        name.to_ascii_uppercase()
    )))
}

/// A free TCP port on loopback (free when asked; servers retry on a clash).
///
/// # Errors
/// If no port can be bound.
pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Whether a Docker engine answers (its socket exists, or `DOCKER_HOST` is set).
#[must_use]
pub fn docker_available() -> bool {
    std::env::var_os("DOCKER_HOST").is_some()
        || std::path::Path::new("/var/run/docker.sock").exists()
}

/// `host:port` of an `http://host:port/` endpoint.
pub(crate) fn host_port(endpoint: &str) -> &str {
    endpoint.trim_start_matches("http://").trim_end_matches('/')
}

/// A minimal HTTP/1.0 exchange on loopback (the harness needs no HTTP client); returns the
/// body, or the status line for a status other than 2xx.
pub(crate) async fn http(host_port: &str, method: &str, path: &str, body: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(host_port).await?;
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {host_port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).await?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&resp).to_string())
    };
    let text = tokio::time::timeout(std::time::Duration::from_secs(5), fut)
        .await
        .map_err(|_| HarnessError(format!("{method} {path} on {host_port} timed out")))?
        .map_err(HarnessError::from)?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head.lines().next().unwrap_or_default();
    if status
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c.starts_with('2'))
    {
        Ok(body.to_string())
    } else {
        Err(HarnessError(format!("{method} {path}: {status}")))
    }
}

/// Free loopback ports `p`, `p + d` for every `d` in `offsets` (rnacos derives its gRPC and
/// console ports from its HTTP port).
///
/// # Errors
/// If no such group is found.
pub fn free_port_group(offsets: &[u16]) -> Result<u16> {
    for _ in 0..200 {
        let base = 20_000 + (fastrand_u16() % 20_000);
        let all_free = std::iter::once(0)
            .chain(offsets.iter().copied())
            .all(|d| std::net::TcpListener::bind(("127.0.0.1", base + d)).is_ok());
        if all_free {
            return Ok(base);
        }
    }
    Err(HarnessError("no free group of ports".into()))
}

fn fastrand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u16
}

/// Polls `ready` every 50 ms until it holds, the process exits, or `limit` passes.
pub(crate) async fn wait_ready<F, Fut>(
    what: &str,
    process: Option<&process::LocalProcess>,
    limit: std::time::Duration,
    mut ready: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if ready().await {
            return Ok(());
        }
        if let Some(p) = process {
            if p.exited() {
                return Err(HarnessError(format!("{what} exited:\n{}", p.log_tail())));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            let tail = process
                .map(process::LocalProcess::log_tail)
                .unwrap_or_default();
            return Err(HarnessError(format!(
                "{what} not ready after {limit:?}\n{tail}"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
