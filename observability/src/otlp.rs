//! OTLP export of Gannet's spans, configured by the standard `OTEL_*` environment variables.
//!
//! - `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` / `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` (default) or
//!   `http/protobuf` (needs the `otlp-http` feature);
//! - `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_ENDPOINT`: the collector
//!   (default `http://localhost:4317` for gRPC, `http://localhost:4318` for HTTP), unless
//!   [`OtlpConfig::endpoint`] sets it;
//! - `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`: the resource;
//! - `OTEL_BSP_*`: the batch span processor (queue size, delay, batch size);
//! - `OTEL_PROPAGATORS`: see [`propagator_from_env`](crate::propagator_from_env).

use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::ObservabilityError;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (tonic).
    Grpc,
    /// OTLP over HTTP with protobuf bodies (feature `otlp-http`).
    HttpProtobuf,
}

impl OtlpProtocol {
    /// The protocol the `OTEL_*` variables ask for (gRPC when unset).
    ///
    /// # Errors
    /// If the variable names a protocol this build does not support.
    pub fn from_env() -> Result<Self, ObservabilityError> {
        let v = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .unwrap_or_default();
        Self::parse(&v)
    }

    /// The protocol named by an `OTEL_EXPORTER_OTLP_PROTOCOL` value (gRPC when empty).
    ///
    /// # Errors
    /// If `value` names a protocol this build does not support.
    pub fn parse(value: &str) -> Result<Self, ObservabilityError> {
        match value.trim() {
            "" | "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            other => Err(ObservabilityError::Config(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not supported (use grpc or http/protobuf)"
            ))),
        }
    }
}

/// How to export spans over OTLP. [`OtlpConfig::install`] sets the global tracer provider and
/// propagator, which Gannet's tracers use.
///
/// ```no_run
/// # async fn run() -> Result<(), gannet_observability::ObservabilityError> {
/// let otel = gannet_observability::otlp::OtlpConfig::new("checkout")
///     .endpoint("http://127.0.0.1:4317")
///     .install()?;
/// // ... build clients and servers with `Observability::default()`, serve ...
/// otel.shutdown().await; // flushes what is still queued
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    service_name: String,
    endpoint: Option<String>,
    protocol: Option<OtlpProtocol>,
}

impl OtlpConfig {
    /// Export for `service_name` (overridden by `OTEL_SERVICE_NAME` when set).
    #[must_use]
    pub fn new(service_name: impl Into<String>) -> Self {
        Self {
            service_name: service_name.into(),
            endpoint: None,
            protocol: None,
        }
    }

    /// The collector's endpoint, instead of the environment's or the default.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// The transport, instead of the environment's.
    #[must_use]
    pub fn protocol(mut self, protocol: OtlpProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Builds a batching OTLP exporter and installs it as the global tracer provider, and the
    /// propagator `OTEL_PROPAGATORS` names as the global propagator.
    ///
    /// # Errors
    /// If the configuration is invalid or the exporter cannot be built.
    pub fn install(self) -> Result<OtelGuard, ObservabilityError> {
        let protocol = match self.protocol {
            Some(p) => p,
            None => OtlpProtocol::from_env()?,
        };
        let exporter = build_exporter(protocol, self.endpoint.as_deref())?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(self.service_name.clone());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        opentelemetry::global::set_tracer_provider(provider.clone());
        crate::install_propagator_from_env()?;
        tracing::info!(
            service = %self.service_name,
            ?protocol,
            endpoint = self.endpoint.as_deref().unwrap_or("(from the environment)"),
            "OTLP span export installed"
        );
        Ok(OtelGuard { provider })
    }
}

fn build_exporter(
    protocol: OtlpProtocol,
    endpoint: Option<&str>,
) -> Result<SpanExporter, ObservabilityError> {
    let err = |e: opentelemetry_otlp::ExporterBuildError| {
        ObservabilityError::Exporter(format!("OTLP exporter: {e}"))
    };
    match protocol {
        OtlpProtocol::Grpc => {
            let mut b = SpanExporter::builder().with_tonic();
            if let Some(ep) = endpoint {
                b = b.with_endpoint(ep);
            }
            b.build().map_err(err)
        }
        #[cfg(feature = "otlp-http")]
        OtlpProtocol::HttpProtobuf => {
            let mut b = SpanExporter::builder()
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary);
            if let Some(ep) = endpoint {
                b = b.with_endpoint(format!("{}/v1/traces", ep.trim_end_matches('/')));
            }
            b.build().map_err(err)
        }
        #[cfg(not(feature = "otlp-http"))]
        OtlpProtocol::HttpProtobuf => Err(ObservabilityError::Config(
            "OTLP over HTTP needs gannet-observability's `otlp-http` feature".into(),
        )),
    }
}

/// Keeps the exporter; [`OtelGuard::shutdown`] flushes queued spans and stops it.
#[derive(Debug)]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// The tracer provider that was installed.
    #[must_use]
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }

    /// Exports every span still queued, without stopping.
    pub async fn flush(&self) {
        let p = self.provider.clone();
        // The SDK's flush blocks the calling thread until the exporter answers.
        match tokio::task::spawn_blocking(move || p.force_flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing spans failed"),
            Err(e) => tracing::warn!(error = %e, "flushing spans panicked"),
        }
    }

    /// Flushes queued spans and stops the exporter.
    pub async fn shutdown(self) {
        let p = self.provider;
        match tokio::task::spawn_blocking(move || p.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "span exporter shutdown failed"),
            Err(e) => tracing::warn!(error = %e, "span exporter shutdown panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::OtlpProtocol;

    #[test]
    fn protocol_names() {
        assert_eq!(OtlpProtocol::parse("").unwrap(), OtlpProtocol::Grpc);
        assert_eq!(OtlpProtocol::parse("grpc").unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            OtlpProtocol::parse(" http/protobuf ").unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        let e = OtlpProtocol::parse("http/json").unwrap_err();
        assert!(e.to_string().contains("http/json"), "{e}");
    }
}
