//! A real etcd for tests.

use std::time::Duration;

use super::process::LocalProcess;
use super::{HarnessError, Result, find_binary, free_port, host_port, http, wait_ready};

/// A real etcd server for a test.
///
/// [`Etcd::start`] uses, in order: the endpoint in `GANNET_TEST_ETCD` (a server someone else
/// runs; it cannot be stopped or restarted), a container (feature `containers`, when a Docker
/// engine answers), or the local `etcd` binary installed by `scripts/install-test-servers etcd`,
/// with its own data directory and free loopback ports.
///
/// ```no_run
/// # async fn demo() -> gannet_conformance::harness::Result<()> {
/// let etcd = gannet_conformance::harness::Etcd::start().await?;
/// println!("etcd at {}", etcd.endpoint());
/// etcd.stop().await?;    // the server goes away (its data stays)
/// etcd.restart().await?; // and comes back on the same address
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Etcd {
    endpoint: String,
    kind: Kind,
}

#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per test server; whether the lint fires depends on the features"
)]
enum Kind {
    External,
    Local {
        process: LocalProcess,
        _dir: tempfile::TempDir,
    },
    #[cfg(feature = "containers")]
    Container(Box<testcontainers::ContainerAsync<testcontainers::GenericImage>>),
}

impl Etcd {
    /// Starts (or finds) an etcd and waits until it is healthy.
    ///
    /// # Errors
    /// If no way to run etcd works, with what to install.
    pub async fn start() -> Result<Etcd> {
        if let Ok(endpoint) = std::env::var("GANNET_TEST_ETCD") {
            let etcd = Etcd {
                endpoint,
                kind: Kind::External,
            };
            etcd.wait_healthy(Duration::from_secs(10)).await?;
            return Ok(etcd);
        }
        #[cfg(feature = "containers")]
        if super::docker_available() {
            match Self::start_container().await {
                Ok(etcd) => return Ok(etcd),
                Err(e) => {
                    tracing::warn!(error = %e, "etcd container failed; trying the local binary")
                }
            }
        }
        Self::start_local().await
    }

    async fn start_local() -> Result<Etcd> {
        let bin = find_binary("etcd")?;
        let mut last = String::new();
        // Ports are free when picked but may be taken before etcd binds them: try again.
        for _ in 0..3 {
            let dir = tempfile::Builder::new().prefix("gannet-etcd-").tempdir()?;
            let (port, peer) = (free_port()?, free_port()?);
            let client_url = format!("http://127.0.0.1:{port}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let args = vec![
                "--name".into(),
                "gannet-test".into(),
                "--data-dir".into(),
                dir.path().join("data").display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                peer_url.clone(),
                "--initial-advertise-peer-urls".into(),
                peer_url.clone(),
                "--initial-cluster".into(),
                format!("gannet-test={peer_url}"),
            ];
            let process =
                LocalProcess::new(bin.clone(), args, Vec::new(), dir.path().join("etcd.log"));
            process.spawn()?;
            let etcd = Etcd {
                endpoint: client_url,
                kind: Kind::Local { process, _dir: dir },
            };
            match etcd.wait_healthy(Duration::from_secs(30)).await {
                Ok(()) => return Ok(etcd),
                Err(e) => {
                    last = format!("{e}\n{}", etcd.log_tail());
                    etcd.kill().await;
                }
            }
        }
        Err(HarnessError(format!("etcd did not become healthy: {last}")))
    }

    #[cfg(feature = "containers")]
    async fn start_container() -> Result<Etcd> {
        use testcontainers::core::{IntoContainerPort, WaitFor};
        use testcontainers::runners::AsyncRunner;
        use testcontainers::{GenericImage, ImageExt};
        let container = GenericImage::new("quay.io/coreos/etcd", "v3.5.17")
            .with_exposed_port(2379.tcp())
            .with_wait_for(WaitFor::message_on_stderr("ready to serve client requests"))
            .with_cmd([
                "etcd",
                "--listen-client-urls",
                "http://0.0.0.0:2379",
                "--advertise-client-urls",
                "http://127.0.0.1:2379",
            ])
            .start()
            .await
            .map_err(|e| HarnessError(format!("etcd container: {e}")))?;
        let port = container
            .get_host_port_ipv4(2379)
            .await
            .map_err(|e| HarnessError(format!("etcd container port: {e}")))?;
        Ok(Etcd {
            endpoint: format!("http://127.0.0.1:{port}"),
            kind: Kind::Container(Box::new(container)),
        })
    }

    /// The client URL, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn host_port(&self) -> &str {
        host_port(&self.endpoint)
    }

    fn log_tail(&self) -> String {
        match &self.kind {
            Kind::Local { process, .. } => process.log_tail(),
            _ => String::new(),
        }
    }

    async fn kill(&self) {
        if let Kind::Local { process, .. } = &self.kind {
            process.kill().await;
        }
    }

    /// Stops the server; its data stays for [`restart`](Etcd::restart).
    ///
    /// # Errors
    /// If the server is external (not ours to stop).
    pub async fn stop(&self) -> Result<()> {
        match &self.kind {
            Kind::External => Err(HarnessError("an external etcd cannot be stopped".into())),
            Kind::Local { process, .. } => {
                process.kill().await;
                Ok(())
            }
            #[cfg(feature = "containers")]
            Kind::Container(c) => c
                .stop()
                .await
                .map_err(|e| HarnessError(format!("stopping the etcd container: {e}"))),
        }
    }

    /// Starts the server again on the same address with the same data, and waits until healthy.
    ///
    /// # Errors
    /// If the server is external or does not come back.
    pub async fn restart(&self) -> Result<()> {
        match &self.kind {
            Kind::External => {
                return Err(HarnessError("an external etcd cannot be restarted".into()));
            }
            Kind::Local { process, .. } => process.restart().await?,
            #[cfg(feature = "containers")]
            Kind::Container(c) => c
                .start()
                .await
                .map_err(|e| HarnessError(format!("starting the etcd container: {e}")))?,
        }
        self.wait_healthy(Duration::from_secs(30)).await
    }

    /// Waits until `GET /health` answers `"health":"true"`.
    ///
    /// # Errors
    /// If it does not within `limit`.
    pub async fn wait_healthy(&self, limit: Duration) -> Result<()> {
        let process = match &self.kind {
            Kind::Local { process, .. } => Some(process),
            _ => None,
        };
        let hp = self.host_port().to_string();
        wait_ready("etcd", process, limit, || {
            let hp = hp.clone();
            async move {
                http(&hp, "GET", "/health", "")
                    .await
                    .is_ok_and(|body| body.contains("\"health\":\"true\""))
            }
        })
        .await
    }

    /// Writes `value` at `key` directly (through etcd's JSON gateway), for tests that need
    /// data an adapter did not write, such as malformed values.
    ///
    /// # Errors
    /// If etcd does not accept it.
    pub async fn put_raw(&self, key: &str, value: &[u8]) -> Result<()> {
        let body = format!(
            r#"{{"key":"{}","value":"{}"}}"#,
            base64(key.as_bytes()),
            base64(value)
        );
        let resp = http(self.host_port(), "POST", "/v3/kv/put", &body).await?;
        if resp.contains("\"header\"") {
            Ok(())
        } else {
            Err(HarnessError(format!("etcd put failed: {resp}")))
        }
    }

    /// Revokes every lease, as if all clients lost their sessions: every key attached to a
    /// lease disappears.
    ///
    /// # Errors
    /// If etcd does not answer.
    pub async fn revoke_all_leases(&self) -> Result<usize> {
        let list = http(self.host_port(), "POST", "/v3/lease/leases", "{}").await?;
        let mut n = 0;
        for id in json_ids(&list) {
            http(
                self.host_port(),
                "POST",
                "/v3/lease/revoke",
                &format!(r#"{{"ID":"{id}"}}"#),
            )
            .await?;
            n += 1;
        }
        Ok(n)
    }
}

/// The `"ID":"…"` values in etcd's lease list.
fn json_ids(s: &str) -> Vec<String> {
    s.split("\"ID\":\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect()
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(super::base64(b""), "");
        assert_eq!(super::base64(b"f"), "Zg==");
        assert_eq!(super::base64(b"fo"), "Zm8=");
        assert_eq!(super::base64(b"foo"), "Zm9v");
        assert_eq!(super::base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn lease_ids_are_found() {
        let s = r#"{"header":{},"leases":[{"ID":"7587"},{"ID":"42"}]}"#;
        assert_eq!(super::json_ids(s), ["7587", "42"]);
    }
}
