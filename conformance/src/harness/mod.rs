//! Real servers for tests: one type per server, each started from (in order) an endpoint in an
//! environment variable, a container when the `containers` feature is on and a Docker engine
//! answers, or the local binary `scripts/install-test-servers` put in the cache.
//!
//! Every local server gets its own temporary data directory and free loopback ports, and is
//! killed by process id when its handle drops.

mod etcd;
mod process;

pub use etcd::Etcd;

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
