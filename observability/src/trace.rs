//! OpenTelemetry spans for every call, and trace context carried in [`MetaInfo`].
//!
//! A client call starts a span of kind client, named `{service}/{method}`, as a child of the
//! OpenTelemetry context current where the call is made, and injects that context into the
//! call's transient metainfo with the text-map propagator. The server extracts it from the
//! metainfo the caller sent and starts a span of kind server as its child. While the handler
//! runs, that server span is the current OpenTelemetry context (so calls the handler makes are
//! its children) and a `tracing` span carrying `trace_id` and `span_id` is entered (so logs
//! written inside the handler carry the trace id).

use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gannet_core::service::{PayloadLayer, layer_fn};
use gannet_core::{Context, MetaInfo, Tracer};
use opentelemetry::global::{self, BoxedTracer};
use opentelemetry::propagation::{
    Extractor, Injector, TextMapCompositePropagator, TextMapPropagator,
};
use opentelemetry::trace::{FutureExt as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{KeyValue, StringValue, Value};
use opentelemetry_sdk::propagation::BaggagePropagator;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::cache::Cache;

/// The instrumentation scope name of Gannet's spans.
pub const INSTRUMENTATION_SCOPE: &str = "gannet";

/// The propagator a tracer injects and extracts trace context with.
pub type SharedPropagator = Arc<dyn TextMapPropagator + Send + Sync>;

/// W3C trace context ([`W3cTraceContext`](crate::W3cTraceContext)) and W3C baggage: the
/// default when no global propagator is set.
#[must_use]
pub fn default_propagator() -> SharedPropagator {
    Arc::new(TextMapCompositePropagator::new(vec![
        Box::new(crate::W3cTraceContext::new()),
        Box::new(BaggagePropagator::new()),
    ]))
}

fn fallback() -> &'static SharedPropagator {
    static DEFAULT: OnceLock<SharedPropagator> = OnceLock::new();
    DEFAULT.get_or_init(default_propagator)
}

/// Which propagator the tracers use.
#[derive(Clone, Default)]
pub(crate) enum Propagation {
    /// The globally configured propagator (`opentelemetry::global::set_text_map_propagator`);
    /// W3C trace context + baggage while none is set.
    #[default]
    Global,
    /// A propagator of the user's.
    Custom(SharedPropagator),
}

impl Propagation {
    fn with<T>(&self, f: impl FnOnce(&dyn TextMapPropagator) -> T) -> T {
        match self {
            Propagation::Custom(p) => f(p.as_ref()),
            Propagation::Global => {
                let mut f = Some(f);
                global::get_text_map_propagator(|p| {
                    let f = f.take().expect("get_text_map_propagator calls once");
                    // The global default is a no-op propagator, which has no fields.
                    if p.fields().next().is_none() {
                        f(fallback().as_ref())
                    } else {
                        f(p)
                    }
                })
            }
        }
    }
}

/// Writes propagation fields into a call's transient metainfo (one hop, as trace context must).
struct MetaInjector<'a>(&'a mut MetaInfo);

impl Injector for MetaInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.set_transient(key, value);
    }
}

/// Reads propagation fields from what the previous hop sent.
struct MetaExtractor<'a>(&'a MetaInfo);

impl Extractor for MetaExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.upstream(key)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.upstream_pairs().map(|(k, _)| k).collect()
    }
}

/// The OpenTelemetry context of the call's span, kept in the call's
/// [`Extensions`](gannet_core::Extensions) from `start` to `finish`.
///
/// Middleware can read it to add attributes or events to the span:
///
/// ```
/// use gannet_observability::CallSpan;
/// use opentelemetry::trace::TraceContextExt;
/// fn tag(cx: &gannet_core::Context) {
///     if let Some(span) = cx.extensions.get::<CallSpan>() {
///         span.context().span().add_event("checked", vec![]);
///     }
/// }
/// ```
#[derive(Debug, Clone)]
pub struct CallSpan(opentelemetry::Context);

impl CallSpan {
    /// The OpenTelemetry context whose active span is the call's span.
    #[must_use]
    pub fn context(&self) -> &opentelemetry::Context {
        &self.0
    }
}

/// Which side of a call a tracer observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// A [`Tracer`] that records one OpenTelemetry span per call.
pub struct OtelTracer {
    side: Side,
    tracer: BoxedTracer,
    propagation: Propagation,
    caches: Caches,
}

impl std::fmt::Debug for OtelTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelTracer")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl OtelTracer {
    /// A client tracer on the global tracer provider (set it up before building the client).
    #[must_use]
    pub fn client() -> Self {
        Self::new(Side::Client, Propagation::Global)
    }

    /// A server tracer on the global tracer provider (set it up before building the server).
    #[must_use]
    pub fn server() -> Self {
        Self::new(Side::Server, Propagation::Global)
    }

    pub(crate) fn new(side: Side, propagation: Propagation) -> Self {
        Self {
            side,
            tracer: global::tracer(INSTRUMENTATION_SCOPE),
            propagation,
            caches: Caches::default(),
        }
    }

    /// Uses `propagator` instead of the global one.
    #[must_use]
    pub fn with_propagator(mut self, propagator: SharedPropagator) -> Self {
        self.propagation = Propagation::Custom(propagator);
        self
    }
}

/// What every span of one service and method starts with, built once.
struct Prepared {
    service: String,
    method: String,
    name: String,
    attributes: Vec<KeyValue>,
}

fn text(s: &str) -> Value {
    Value::from(s.to_owned())
}

/// Prepared span starts by (service, method), and address strings by IP.
#[derive(Default)]
struct Caches {
    prepared: Cache<Prepared>,
    ips: Cache<(IpAddr, StringValue)>,
}

impl Caches {
    fn prepared(&self, side: Side, cx: &Context) -> Arc<Prepared> {
        let info = &cx.rpc_info;
        let (service, method) = (info.callee.service.as_str(), info.method.as_str());
        self.prepared.get_or_insert(
            (service, method),
            |p| p.method == method && p.service == service,
            || {
                let mut attributes = vec![
                    KeyValue::new("rpc.system", "gannet"),
                    KeyValue::new("rpc.service", text(service)),
                    KeyValue::new("rpc.method", text(method)),
                ];
                if side == Side::Client {
                    attributes.push(KeyValue::new("peer.service", text(service)));
                }
                Prepared {
                    service: service.to_owned(),
                    method: method.to_owned(),
                    name: format!("{service}/{method}"),
                    attributes,
                }
            },
        )
    }

    fn ip(&self, ip: IpAddr) -> StringValue {
        self.ips
            .get_or_insert(
                ip,
                |(i, _)| *i == ip,
                || (ip, StringValue::from(Arc::<str>::from(ip.to_string()))),
            )
            .1
            .clone()
    }
}

impl Tracer for OtelTracer {
    fn start(&self, cx: &mut Context) {
        let (kind, parent) = match self.side {
            Side::Client => (SpanKind::Client, opentelemetry::Context::current()),
            Side::Server => (
                SpanKind::Server,
                self.propagation
                    .with(|p| p.extract(&MetaExtractor(&cx.meta))),
            ),
        };
        let prepared = self.caches.prepared(self.side, cx);
        let info = &cx.rpc_info;
        // Room for what `finish` adds, so the span's attributes are allocated once.
        let mut attributes = Vec::with_capacity(prepared.attributes.len() + 4);
        attributes.extend(prepared.attributes.iter().cloned());
        if self.side == Side::Server {
            if !info.caller.service.is_empty() {
                attributes.push(KeyValue::new("peer.service", text(&info.caller.service)));
            }
            if let Some(peer) = info.caller.address {
                attributes.push(KeyValue::new("client.address", self.caches.ip(peer.ip())));
                attributes.push(KeyValue::new("client.port", i64::from(peer.port())));
            }
        }
        let span = self
            .tracer
            .span_builder(prepared.name.clone())
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        let otel_cx = parent.with_span(span);
        if self.side == Side::Client {
            self.propagation
                .with(|p| p.inject_context(&otel_cx, &mut MetaInjector(&mut cx.meta)));
        }
        cx.extensions.insert(CallSpan(otel_cx));
    }

    fn finish(&self, cx: &mut Context) {
        let Some(CallSpan(otel_cx)) = cx.extensions.remove::<CallSpan>() else {
            return;
        };
        let span = otel_cx.span();
        let info = &cx.rpc_info;
        if self.side == Side::Client {
            if let Some(addr) = info.callee.address {
                span.set_attribute(KeyValue::new("server.address", self.caches.ip(addr.ip())));
                span.set_attribute(KeyValue::new("server.port", i64::from(addr.port())));
            }
            if info.stats.attempts > 1 {
                span.set_attribute(KeyValue::new(
                    "rpc.gannet.attempts",
                    i64::from(info.stats.attempts),
                ));
            }
        }
        match &info.stats.error {
            None => span.set_status(Status::Ok),
            Some(e) => {
                span.set_attribute(KeyValue::new("error.type", e.kind().as_str()));
                if let Some(code) = e.remote_code() {
                    span.set_attribute(KeyValue::new("rpc.gannet.status_code", i64::from(code)));
                }
                span.set_status(Status::error(e.to_string()));
            }
        }
        span.end();
    }
}

/// The server middleware that makes the call's span current while the handler runs: the
/// OpenTelemetry context (for calls the handler makes) and a `tracing` span with the trace and
/// span ids (for logs). With `tracing-opentelemetry`'s layer installed, that `tracing` span is
/// also exported, as a child of the server span.
pub(crate) fn server_context_layer() -> PayloadLayer {
    layer_fn(|cx, req: Bytes, next| {
        let Some(CallSpan(otel_cx)) = cx.extensions.get::<CallSpan>().cloned() else {
            return Box::pin(gannet_core::Service::call(next, cx, req));
        };
        let sc = otel_cx.span().span_context().clone();
        let span = tracing::info_span!(
            "rpc.server",
            rpc.service = %cx.rpc_info.callee.service,
            rpc.method = %cx.method(),
            trace_id = %sc.trace_id(),
            span_id = %sc.span_id(),
        );
        let _ = span.set_parent(otel_cx.clone());
        Box::pin(
            gannet_core::Service::call(next, cx, req)
                .with_context(otel_cx)
                .instrument(span),
        )
    })
}
