//! A real OpenTelemetry collector (rotel) for tests.

use std::time::Duration;

use super::runner::{Launch, Runner, start_either};
use super::{HarnessError, Result, free_port, wait_ready};

/// The image the container path runs (rotel's own).
const IMAGE: (&str, &str) = ("streamfold/rotel", "latest");

/// A real OTLP collector, `rotel`, that prints every span it receives (name, trace id,
/// parent id, kind, attributes) to its log, which [`OtelCollector::output`] returns.
///
/// Started as a `streamfold/rotel` container on the host network (feature `containers`, when a
/// Docker engine answers; its output is copied to the same log), else from the `rotel-agent`
/// binary installed by `scripts/install-test-servers otel-collector`; with OTLP/gRPC and
/// OTLP/HTTP on free loopback ports. (An external collector cannot be read back, so there is
/// no environment-variable override.)
#[derive(Debug)]
pub struct OtelCollector {
    grpc: String,
    http: String,
    runner: Runner,
    dir: tempfile::TempDir,
}

impl OtelCollector {
    /// Starts the collector and waits until it says it started.
    ///
    /// # Errors
    /// If it cannot be started, with what to install.
    pub async fn start() -> Result<OtelCollector> {
        start_either("rotel", "rotel-agent", IMAGE, Self::start_with).await
    }

    async fn start_with(launch: Launch) -> Result<OtelCollector> {
        let dir = tempfile::Builder::new().prefix("gannet-rotel-").tempdir()?;
        let (g, h) = (free_port()?, free_port()?);
        let args = vec![
            "start".into(),
            "--exporter".into(),
            "blackhole".into(),
            "--debug-log".into(),
            "traces".into(),
            "--debug-log-verbosity".into(),
            "detailed".into(),
            "--otlp-grpc-endpoint".into(),
            format!("127.0.0.1:{g}"),
            "--otlp-http-endpoint".into(),
            format!("127.0.0.1:{h}"),
        ];
        let runner = launch
            .start(
                args,
                vec![("NO_COLOR".into(), "1".into())],
                Vec::new(),
                dir.path().join("rotel.log"),
            )
            .await?;
        let c = OtelCollector {
            grpc: format!("http://127.0.0.1:{g}"),
            http: format!("http://127.0.0.1:{h}"),
            runner,
            dir,
        };
        let log = c.dir.path().join("rotel.log");
        wait_ready("rotel", c.runner.process(), Duration::from_secs(30), || {
            let log = log.clone();
            async move {
                std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Starting Rotel"))
                    && std::net::TcpStream::connect(("127.0.0.1", g)).is_ok()
            }
        })
        .await
        .map_err(|e| HarnessError(format!("{e}")))?;
        Ok(c)
    }

    /// The OTLP/gRPC endpoint, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn grpc_endpoint(&self) -> &str {
        &self.grpc
    }

    /// The OTLP/HTTP endpoint, `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn http_endpoint(&self) -> &str {
        &self.http
    }

    /// Everything the collector printed so far, ANSI colour codes removed.
    #[must_use]
    pub fn output(&self) -> String {
        let raw = std::fs::read_to_string(self.dir.path().join("rotel.log")).unwrap_or_default();
        strip_ansi(&raw)
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in '@'..='~'
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ansi_codes_are_removed() {
        assert_eq!(
            super::strip_ansi("\u{1b}[1;32mName\u{1b}[0m : x"),
            "Name : x"
        );
    }
}
