//! Tracers: hooks at the start and the end of every call, on both sides.

use std::sync::Arc;

use crate::context::Context;

/// Observes calls. Several tracers run in the order they were added on
/// [`start`](Tracer::start) and in reverse order on [`finish`](Tracer::finish), which sees the
/// call's error and statistics in [`RpcInfo::stats`](crate::context::RpcInfo::stats).
///
/// ```
/// use gannet_core::{Context, Tracer};
/// #[derive(Debug)]
/// struct LogTracer;
/// impl Tracer for LogTracer {
///     fn start(&self, cx: &mut Context) {
///         tracing::info!(method = cx.method(), "call started");
///     }
///     fn finish(&self, cx: &mut Context) {
///         let stats = &cx.rpc_info.stats;
///         tracing::info!(method = cx.method(), ok = stats.error.is_none(), "call finished");
///     }
/// }
/// ```
pub trait Tracer: Send + Sync + 'static {
    /// Called before the call enters the middleware chain.
    fn start(&self, cx: &mut Context);
    /// Called after the call left the middleware chain, with its outcome in the context.
    fn finish(&self, cx: &mut Context);
}

/// A tracer that does nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoopTracer;

impl Tracer for NoopTracer {
    fn start(&self, _cx: &mut Context) {}
    fn finish(&self, _cx: &mut Context) {}
}

/// Tracers of one client or server, run in order and in reverse.
///
/// Each is boxed, not in an `Arc`: reaching the data of an `Arc<dyn _>` computes its offset
/// from the vtable's alignment on every call (~17 instructions per call for a client's
/// start and finish), a box points at it.
#[derive(Clone, Default)]
pub(crate) struct Tracers(pub(crate) Arc<[Box<dyn Tracer>]>);

impl Tracers {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[inline]
    pub(crate) fn start(&self, cx: &mut Context) {
        for t in self.0.iter() {
            t.start(cx);
        }
    }

    #[inline]
    pub(crate) fn finish(&self, cx: &mut Context) {
        for t in self.0.iter().rev() {
            t.finish(cx);
        }
    }
}

impl std::fmt::Debug for Tracers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracers")
            .field("len", &self.0.len())
            .finish()
    }
}
