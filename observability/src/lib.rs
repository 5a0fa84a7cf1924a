//! # gannet-observability
//!
//! OpenTelemetry tracing and RPC metrics for [Gannet](https://github.com/gannet-rs/gannet), the
//! equivalent of kitex-contrib's `obs-opentelemetry` and `monitor-prometheus`:
//!
//! - **Spans** ([`OtelTracer`]): one per call on each side, named `{service}/{method}`, kind
//!   client or server, with `rpc.system`, `rpc.service`, `rpc.method`, `peer.service`,
//!   `server.address`/`server.port` (client) or `client.address`/`client.port` (server), and the
//!   error's kind and status on failure. Trace context travels in the call's metainfo through
//!   the global `TextMapPropagator` (W3C trace context + baggage unless you set another;
//!   [`B3Propagator`] for Zipkin's headers), so a server span is the child of the client span that called it,
//!   across any number of hops. Inside a handler the server span is the current OpenTelemetry
//!   context and a `tracing` span with `trace_id` and `span_id` is entered.
//! - **Metrics** ([`MetricsTracer`], [module docs](metrics)): call durations, payload sizes and
//!   calls in flight through the [`metrics`](::metrics) facade; [`install_prometheus`] serves
//!   them to Prometheus.
//! - **Suites**: [`Observability`] installs both on a client or a server in one line.
//! - **Export**: [`otlp::OtlpConfig`] sets up batching OTLP export (gRPC or HTTP) from the
//!   standard `OTEL_*` variables.
//!
//! ```no_run
//! use gannet_core::{Client, Server};
//! use gannet_observability::Observability;
//! # #[derive(Clone, PartialEq, prost::Message)] struct Ping { #[prost(string, tag = "1")] text: String }
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let otel = gannet_observability::otlp::OtlpConfig::new("frontend").install()?;
//! gannet_observability::install_prometheus("127.0.0.1:9464".parse()?)?;
//!
//! let server = Server::builder("echo")
//!     .suite(Observability::default())
//!     .handler("Ping", |p: Ping| async move { Ok(p) })
//!     .start()
//!     .await?;
//! let client = Client::builder("echo")
//!     .address(server.local_addr())
//!     .suite(Observability::default())
//!     .build()?;
//! let _pong: Ping = client.call("Ping", &Ping { text: "hi".into() }).await?;
//! server.shutdown().await?;
//! otel.shutdown().await;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod b3;
mod cache;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
mod trace;
mod w3c;

pub use crate::b3::B3Propagator;
pub use crate::metrics::MetricsTracer;
#[cfg(feature = "prometheus")]
pub use crate::metrics::install_prometheus;
pub use crate::trace::{
    CallSpan, INSTRUMENTATION_SCOPE, OtelTracer, SharedPropagator, default_propagator,
};
pub use crate::w3c::W3cTraceContext;

use gannet_core::{ClientBuilder, ClientSuite, ServerBuilder, ServerSuite};
use opentelemetry::propagation::{TextMapCompositePropagator, TextMapPropagator};
use opentelemetry_sdk::propagation::BaggagePropagator;

use crate::trace::{Propagation, Side};

/// What can go wrong setting observability up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ObservabilityError {
    /// A configuration value (an `OTEL_*` variable, an option) is invalid.
    #[error("observability config: {0}")]
    Config(String),
    /// An exporter could not be built or installed.
    #[error("observability exporter: {0}")]
    Exporter(String),
}

/// The propagator `OTEL_PROPAGATORS` names: a comma-separated list of `tracecontext`,
/// `baggage`, `b3` (single header), `b3multi` or `none`; unset means
/// `tracecontext,baggage`.
///
/// # Errors
/// If the list names a propagator this build does not have.
pub fn propagator_from_env() -> Result<SharedPropagator, ObservabilityError> {
    let list = std::env::var("OTEL_PROPAGATORS").unwrap_or_default();
    propagator_from_list(&list)
}

fn propagator_from_list(list: &str) -> Result<SharedPropagator, ObservabilityError> {
    let mut parts: Vec<Box<dyn TextMapPropagator + Send + Sync>> = Vec::new();
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(default_propagator());
    }
    for name in names {
        match name {
            "tracecontext" => parts.push(Box::new(W3cTraceContext::new())),
            "baggage" => parts.push(Box::new(BaggagePropagator::new())),
            "none" => {}
            "b3" => parts.push(Box::new(B3Propagator::single_header())),
            "b3multi" => parts.push(Box::new(B3Propagator::multiple_headers())),
            other => {
                return Err(ObservabilityError::Config(format!(
                    "OTEL_PROPAGATORS names {other:?}; supported: tracecontext, baggage, b3, \
                     b3multi, none"
                )));
            }
        }
    }
    Ok(std::sync::Arc::new(TextMapCompositePropagator::new(parts)))
}

/// Sets the global propagator from `OTEL_PROPAGATORS` (see [`propagator_from_env`]).
///
/// # Errors
/// As [`propagator_from_env`].
pub fn install_propagator_from_env() -> Result<(), ObservabilityError> {
    let p = propagator_from_env()?;
    opentelemetry::global::set_text_map_propagator(Shared(p));
    Ok(())
}

/// A shared propagator usable where an owned one is expected.
#[derive(Debug)]
struct Shared(SharedPropagator);

impl TextMapPropagator for Shared {
    fn inject_context(
        &self,
        cx: &opentelemetry::Context,
        injector: &mut dyn opentelemetry::propagation::Injector,
    ) {
        self.0.inject_context(cx, injector);
    }

    fn extract_with_context(
        &self,
        cx: &opentelemetry::Context,
        extractor: &dyn opentelemetry::propagation::Extractor,
    ) -> opentelemetry::Context {
        self.0.extract_with_context(cx, extractor)
    }

    fn fields(&self) -> opentelemetry::propagation::text_map_propagator::FieldIter<'_> {
        self.0.fields()
    }
}

/// Tracing and metrics for a client or a server, in one line:
/// `Client::builder("echo").suite(Observability::default())`, and the same on
/// `Server::builder`.
///
/// Spans go to the global tracer provider and metrics to the global `metrics` recorder: install
/// both (for example with [`otlp::OtlpConfig::install`] and [`install_prometheus`]) before
/// building clients and servers.
#[derive(Clone)]
pub struct Observability {
    tracing: bool,
    metrics: bool,
    propagation: Propagation,
}

impl Default for Observability {
    fn default() -> Self {
        Self {
            tracing: true,
            metrics: true,
            propagation: Propagation::Global,
        }
    }
}

impl std::fmt::Debug for Observability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observability")
            .field("tracing", &self.tracing)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Observability {
    /// Whether to record spans (default on).
    #[must_use]
    pub fn tracing(mut self, on: bool) -> Self {
        self.tracing = on;
        self
    }

    /// Whether to record metrics (default on).
    #[must_use]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Propagates trace context with `propagator` instead of the global one (for example a
    /// company's own trace-id header).
    #[must_use]
    pub fn propagator(mut self, propagator: SharedPropagator) -> Self {
        self.propagation = Propagation::Custom(propagator);
        self
    }
}

impl ClientSuite for Observability {
    fn apply<C>(self, mut builder: ClientBuilder<C>) -> ClientBuilder<C> {
        if self.tracing {
            builder = builder.tracer(OtelTracer::new(Side::Client, self.propagation.clone()));
        }
        if self.metrics {
            builder = builder.tracer(MetricsTracer::new(Side::Client));
        }
        builder
    }
}

impl ServerSuite for Observability {
    fn apply(self, mut builder: ServerBuilder) -> ServerBuilder {
        if self.tracing {
            builder = builder
                .tracer(OtelTracer::new(Side::Server, self.propagation.clone()))
                .layer(trace::server_context_layer());
        }
        if self.metrics {
            builder = builder.tracer(MetricsTracer::new(Side::Server));
        }
        builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields a propagator list carries, sorted (a composite's order is unspecified).
    fn fields(list: &str) -> Vec<String> {
        let mut f: Vec<String> = propagator_from_list(list)
            .unwrap()
            .fields()
            .map(str::to_owned)
            .collect();
        f.sort();
        f
    }

    #[test]
    fn propagator_lists() {
        assert_eq!(fields(""), ["baggage", "traceparent", "tracestate"]);
        assert_eq!(fields("tracecontext"), ["traceparent", "tracestate"]);
        assert!(fields("none").is_empty());
        let err = propagator_from_list("tracecontext,jaeger").err().unwrap();
        assert!(err.to_string().contains("jaeger"), "{err}");
    }

    #[test]
    fn b3_lists() {
        assert_eq!(fields("b3"), ["b3"]);
        assert_eq!(
            fields("b3multi,baggage"),
            ["baggage", "x-b3-sampled", "x-b3-spanid", "x-b3-traceid"]
        );
    }
}
