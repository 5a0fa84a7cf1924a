//! Suites: one value that applies several options to a client or server builder, so that an
//! integration (tracing, metrics, a config center) is one line for its users.

use crate::client::ClientBuilder;
use crate::server::ServerBuilder;

/// Applies a set of options to a [`ClientBuilder`].
///
/// ```
/// use gannet_core::{ClientBuilder, ClientSuite, NoopTracer};
/// struct Observability;
/// impl ClientSuite for Observability {
///     fn apply<C>(self, builder: ClientBuilder<C>) -> ClientBuilder<C> {
///         builder.tracer(NoopTracer)
///     }
/// }
/// let builder = gannet_core::Client::builder("echo").suite(Observability);
/// # let _ = builder;
/// ```
pub trait ClientSuite {
    /// Returns `builder` with this suite's options applied.
    fn apply<C>(self, builder: ClientBuilder<C>) -> ClientBuilder<C>;
}

/// Applies a set of options to a [`ServerBuilder`].
pub trait ServerSuite {
    /// Returns `builder` with this suite's options applied.
    fn apply(self, builder: ServerBuilder) -> ServerBuilder;
}
