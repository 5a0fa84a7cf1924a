//! RPC metrics through the [`metrics`] facade, so any `metrics` exporter can publish them.
//!
//! | name | kind | unit | labels |
//! |---|---|---|---|
//! | `rpc.client.duration`, `rpc.server.duration` | histogram | milliseconds | `rpc.service`, `rpc.method`, `rpc.status`, `peer.service`, `rpc.retried` |
//! | `rpc.client.request.size`, `rpc.client.response.size`, `rpc.server.request.size`, `rpc.server.response.size` | histogram | bytes | the same |
//! | `rpc.client.active_requests`, `rpc.server.active_requests` | gauge | calls | `rpc.service`, `rpc.method` |
//!
//! `rpc.status` is `ok` or the error kind (`timeout`, `remote`, `connect`, … as
//! [`ErrorKind::as_str`](gannet_core::ErrorKind::as_str) names them); `rpc.retried` is `true`
//! when the client sent more than one attempt (client side) or the call was a retry (server side).
//! A Prometheus exporter shows the names with underscores (`rpc_client_duration_bucket`).
//!
//! Handles are looked up once per label set and cached by the tracer, so recording costs a few
//! atomic operations per call. Recording goes to the recorder installed when a label set is
//! first seen: install the exporter before the first call.

use std::sync::{Arc, Once};

use gannet_core::policy::retry::RETRY_TAG;
use gannet_core::{Context, Tracer};
use metrics::{Gauge, Histogram, Unit};

use crate::cache::Cache;
use crate::trace::Side;

/// `rpc.client.duration`: client call duration in milliseconds.
pub const CLIENT_DURATION: &str = "rpc.client.duration";
/// `rpc.server.duration`: server call duration in milliseconds.
pub const SERVER_DURATION: &str = "rpc.server.duration";
/// `rpc.client.request.size`: encoded request payload size in bytes, client side.
pub const CLIENT_REQUEST_SIZE: &str = "rpc.client.request.size";
/// `rpc.client.response.size`: encoded response payload size in bytes, client side.
pub const CLIENT_RESPONSE_SIZE: &str = "rpc.client.response.size";
/// `rpc.server.request.size`: encoded request payload size in bytes, server side.
pub const SERVER_REQUEST_SIZE: &str = "rpc.server.request.size";
/// `rpc.server.response.size`: encoded response payload size in bytes, server side.
pub const SERVER_RESPONSE_SIZE: &str = "rpc.server.response.size";
/// `rpc.client.active_requests`: client calls in flight.
pub const CLIENT_ACTIVE: &str = "rpc.client.active_requests";
/// `rpc.server.active_requests`: server calls in flight.
pub const SERVER_ACTIVE: &str = "rpc.server.active_requests";

/// Bucket bounds for the duration histograms, in milliseconds.
pub const DURATION_BUCKETS_MS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0,
    5000.0, 10000.0,
];

/// Bucket bounds for the size histograms, in bytes.
pub const SIZE_BUCKETS_BYTES: &[f64] = &[
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
    4_194_304.0,
];

struct Names {
    duration: &'static str,
    request: &'static str,
    response: &'static str,
    active: &'static str,
}

const CLIENT: Names = Names {
    duration: CLIENT_DURATION,
    request: CLIENT_REQUEST_SIZE,
    response: CLIENT_RESPONSE_SIZE,
    active: CLIENT_ACTIVE,
};
const SERVER: Names = Names {
    duration: SERVER_DURATION,
    request: SERVER_REQUEST_SIZE,
    response: SERVER_RESPONSE_SIZE,
    active: SERVER_ACTIVE,
};

fn describe() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (name, side) in [(CLIENT_DURATION, "client"), (SERVER_DURATION, "server")] {
            metrics::describe_histogram!(
                name,
                Unit::Milliseconds,
                format!("Duration of RPC calls, {side} side")
            );
        }
        for name in [
            CLIENT_REQUEST_SIZE,
            CLIENT_RESPONSE_SIZE,
            SERVER_REQUEST_SIZE,
            SERVER_RESPONSE_SIZE,
        ] {
            metrics::describe_histogram!(name, Unit::Bytes, "Encoded payload size of RPC calls");
        }
        for name in [CLIENT_ACTIVE, SERVER_ACTIVE] {
            metrics::describe_gauge!(name, Unit::Count, "RPC calls in flight");
        }
    });
}

/// The label values of one outcome, beside its method's (see [`Active`]).
struct OutcomeKey {
    peer: String,
    status: &'static str,
    retried: bool,
}

impl OutcomeKey {
    fn is(&self, peer: &str, status: &str, retried: bool) -> bool {
        self.status == status && self.retried == retried && self.peer == peer
    }
}

struct Outcome {
    key: OutcomeKey,
    duration: Histogram,
    request: Histogram,
    response: Histogram,
}

/// One service and method: its in-flight gauge, and the handles of each outcome seen, so
/// `finish` looks up only what differs between outcomes.
struct Active {
    service: String,
    method: String,
    gauge: Gauge,
    outcomes: Cache<Outcome>,
}

/// The active-requests gauge a call incremented, kept in its extensions until `finish`.
struct InFlight(Arc<Active>);

/// A [`Tracer`] that records the RPC metrics of every call (see the [module](self) docs).
pub struct MetricsTracer {
    side: Side,
    active: Cache<Active>,
}

impl std::fmt::Debug for MetricsTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsTracer")
            .field("side", &self.side)
            .finish_non_exhaustive()
    }
}

impl MetricsTracer {
    /// Records `rpc.client.*` metrics.
    #[must_use]
    pub fn client() -> Self {
        Self::new(Side::Client)
    }

    /// Records `rpc.server.*` metrics.
    #[must_use]
    pub fn server() -> Self {
        Self::new(Side::Server)
    }

    pub(crate) fn new(side: Side) -> Self {
        describe();
        Self {
            side,
            active: Cache::new(),
        }
    }

    fn names(&self) -> &'static Names {
        match self.side {
            Side::Client => &CLIENT,
            Side::Server => &SERVER,
        }
    }

    /// The gauge and outcome handles of `service`/`method`.
    fn active(&self, service: &str, method: &str) -> Arc<Active> {
        let names = self.names();
        self.active.get_or_insert(
            (service, method),
            |a| a.service == service && a.method == method,
            || Active {
                service: service.to_owned(),
                method: method.to_owned(),
                gauge: metrics::gauge!(
                    names.active,
                    "rpc.service" => service.to_owned(),
                    "rpc.method" => method.to_owned(),
                ),
                outcomes: Cache::new(),
            },
        )
    }
}

fn labels(active: &Active, key: &OutcomeKey) -> Vec<metrics::Label> {
    vec![
        metrics::Label::new("rpc.service", active.service.clone()),
        metrics::Label::new("rpc.method", active.method.clone()),
        metrics::Label::new("rpc.status", key.status),
        metrics::Label::new("peer.service", key.peer.clone()),
        metrics::Label::new("rpc.retried", if key.retried { "true" } else { "false" }),
    ]
}

impl Tracer for MetricsTracer {
    fn start(&self, cx: &mut Context) {
        let active = self.active(&cx.rpc_info.callee.service, cx.method());
        active.gauge.increment(1.0);
        cx.extensions.insert(InFlight(active));
    }

    fn finish(&self, cx: &mut Context) {
        let active = match cx.extensions.remove::<InFlight>() {
            Some(InFlight(active)) => {
                active.gauge.decrement(1.0);
                active
            }
            // Not started by this tracer: record the outcome, leave the gauge alone.
            None => self.active(&cx.rpc_info.callee.service, cx.method()),
        };
        let info = &cx.rpc_info;
        let stats = &info.stats;
        let (peer, retried) = match self.side {
            Side::Client => (info.callee.service.as_str(), stats.attempts > 1),
            Side::Server => (
                info.caller.service.as_str(),
                cx.meta.upstream(RETRY_TAG).is_some(),
            ),
        };
        let status = stats.error.as_ref().map_or("ok", |e| e.kind().as_str());
        let names = self.names();
        let o = active.outcomes.get_or_insert(
            (peer, status, retried),
            |o| o.key.is(peer, status, retried),
            || {
                let key = OutcomeKey {
                    peer: peer.to_owned(),
                    status,
                    retried,
                };
                let l = labels(&active, &key);
                Outcome {
                    duration: metrics::histogram!(names.duration, l.clone()),
                    request: metrics::histogram!(names.request, l.clone()),
                    response: metrics::histogram!(names.response, l),
                    key,
                }
            },
        );
        if let Some(d) = stats.duration() {
            o.duration.record(d.as_secs_f64() * 1000.0);
        }
        o.request.record(stats.request_size as f64);
        if stats.error.is_none() {
            o.response.record(stats.response_size as f64);
        }
    }
}

/// Installs a Prometheus exporter as the global `metrics` recorder, serving `/metrics` on
/// `addr`, with histogram buckets for Gannet's duration and size metrics.
///
/// Call it once, inside a Tokio runtime, before the first call. Any other `metrics` exporter
/// works too: install it instead, and Gannet's metrics go there (set histogram buckets the way
/// that exporter expects).
///
/// # Errors
/// If the address cannot be bound or a global recorder is already installed.
#[cfg(feature = "prometheus")]
pub fn install_prometheus(
    addr: std::net::SocketAddr,
) -> Result<metrics_exporter_prometheus::PrometheusHandle, crate::ObservabilityError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let err = |e: metrics_exporter_prometheus::BuildError| {
        crate::ObservabilityError::Exporter(format!("prometheus exporter on {addr}: {e}"))
    };
    let builder = PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("duration".into()), DURATION_BUCKETS_MS)
        .map_err(err)?
        .set_buckets_for_metric(Matcher::Suffix(".size".into()), SIZE_BUCKETS_BYTES)
        .map_err(err)?;
    let (recorder, exporter) = builder.build().map_err(err)?;
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| {
        crate::ObservabilityError::Exporter(format!("a metrics recorder is already installed: {e}"))
    })?;
    tokio::spawn(async move {
        if let Err(e) = exporter.await {
            tracing::error!(error = ?e, "prometheus exporter stopped");
        }
    });
    tracing::info!(%addr, "prometheus exporter serving /metrics");
    Ok(handle)
}
