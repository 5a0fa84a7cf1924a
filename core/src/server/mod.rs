//! The server: typed handlers by method, middleware, tracers, rate limits, registration and
//! graceful shutdown.
//!
//! ```no_run
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoRequest { #[prost(string, tag = "1")] message: String }
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoResponse { #[prost(string, tag = "1")] message: String }
//! # async fn demo() -> gannet_core::Result<()> {
//! use gannet_core::Server;
//! Server::builder("echo")
//!     .bind("127.0.0.1:8888".parse().unwrap())
//!     .handler("Echo", |req: EchoRequest| async move {
//!         Ok(EchoResponse { message: req.message })
//!     })
//!     .serve() // until Ctrl-C or SIGTERM, then shuts down gracefully
//!     .await
//! # }
//! ```

mod conn;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use faststr::FastStr;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::codec::ttheader::DEFAULT_MAX_FRAME_SIZE;
use crate::codec::{Codec, ProstCodec};
use crate::context::{Context, MetaInfo};
use crate::error::{Error, ErrorKind, Result, code};
use crate::policy::{Limiter, ServerPolicies};
use crate::registry::{NoopRegistry, Registry, RegistryInfo};
use crate::service::{BoxService, Layer, PayloadLayer, PayloadService, Service};
use crate::suite::ServerSuite;
use crate::tracer::{Tracer, Tracers};

type Handler = dyn Fn(Bytes) -> BoxFuture<'static, Result<Bytes>> + Send + Sync;

/// Builds a [`Server`].
#[must_use]
pub struct ServerBuilder {
    service: FastStr,
    handlers: HashMap<String, Arc<Handler>>,
    layers: Vec<PayloadLayer>,
    tracers: Vec<Box<dyn Tracer>>,
    registry: Arc<dyn Registry>,
    bind: SocketAddr,
    advertise: Option<SocketAddr>,
    weight: u32,
    tags: HashMap<String, String>,
    policies: Option<Arc<ServerPolicies>>,
    exit_grace: Duration,
    drain_timeout: Duration,
    max_frame_size: usize,
    errors: Vec<String>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("service", &self.service)
            .field("bind", &self.bind)
            .field("methods", &self.handlers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// The server's entry point: [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Starts building a server of `service`.
    pub fn builder(service: impl Into<FastStr>) -> ServerBuilder {
        ServerBuilder {
            service: service.into(),
            handlers: HashMap::new(),
            layers: Vec::new(),
            tracers: Vec::new(),
            registry: Arc::new(NoopRegistry),
            bind: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 8888)),
            advertise: None,
            weight: crate::discovery::DEFAULT_WEIGHT,
            tags: HashMap::new(),
            policies: None,
            exit_grace: Duration::ZERO,
            drain_timeout: Duration::from_secs(10),
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            errors: Vec::new(),
        }
    }
}

/// A set of method handlers that adds itself to a server: what `gannet-build` generates for a
/// service (`GreeterServer<S>`), and what [`ServerBuilder::service`] takes.
pub trait Handlers {
    /// Adds the handlers to `builder`.
    fn add_to(self, builder: ServerBuilder) -> ServerBuilder;
}

impl ServerBuilder {
    /// Serves `method` with `handler`, a plain async function from a Protobuf request to a
    /// Protobuf response. Inside it, [`MetaInfo::current`] gives the caller's metainfo, and
    /// clients called from it forward the persistent pairs.
    pub fn handler<Req, Resp, F, Fut>(self, method: impl Into<String>, handler: F) -> Self
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + Default + 'static,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        self.handler_with_codec(method, ProstCodec, handler)
    }

    /// Serves `method` with `handler`, decoding and encoding with `codec`.
    pub fn handler_with_codec<Req, Resp, Cd, F, Fut>(
        mut self,
        method: impl Into<String>,
        codec: Cd,
        handler: F,
    ) -> Self
    where
        Req: 'static,
        Resp: 'static,
        Cd: Codec<Req> + Codec<Resp>,
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp>> + Send + 'static,
    {
        let method = method.into();
        if method.is_empty() {
            self.errors
                .push("a handler has an empty method name".into());
        }
        // One shared pair: each request's future holds one reference (two cost a request two
        // more atomic updates).
        let shared = Arc::new((codec, handler));
        let erased: Arc<Handler> = Arc::new(move |payload: Bytes| {
            let shared = shared.clone();
            Box::pin(async move {
                let (codec, handler) = &*shared;
                let req: Req = Codec::<Req>::decode(codec, payload)?;
                let resp = handler(req).await?;
                let mut out = BytesMut::new();
                Codec::<Resp>::encode(codec, &resp, &mut out)?;
                Ok(out.freeze())
            })
        });
        if self.handlers.insert(method.clone(), erased).is_some() {
            self.errors
                .push(format!("method {method:?} has two handlers"));
        }
        self
    }

    /// Adds a set of handlers at once: a service generated by `gannet-build`
    /// (`GreeterServer::new(MyGreeter)`), or any [`Handlers`].
    ///
    /// ```
    /// # #[derive(Clone, PartialEq, prost::Message)] struct Ping {}
    /// use gannet_core::server::{Handlers, Server, ServerBuilder};
    ///
    /// /// Two methods that belong together.
    /// struct Health;
    ///
    /// impl Handlers for Health {
    ///     fn add_to(self, builder: ServerBuilder) -> ServerBuilder {
    ///         builder
    ///             .handler("Ping", |p: Ping| async move { Ok(p) })
    ///             .handler("Ready", |p: Ping| async move { Ok(p) })
    ///     }
    /// }
    ///
    /// let builder = Server::builder("health").service(Health);
    /// ```
    pub fn service(self, handlers: impl Handlers) -> Self {
        handlers.add_to(self)
    }

    /// Listens on `addr` (default `0.0.0.0:8888`; port 0 picks a free port).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Registers `addr` instead of the bound address (NAT, containers).
    pub fn advertise(mut self, addr: SocketAddr) -> Self {
        self.advertise = Some(addr);
        self
    }

    /// Registers in `registry` after listening, and deregisters first on shutdown.
    pub fn registry(mut self, registry: impl Registry) -> Self {
        self.registry = Arc::new(registry);
        self
    }

    /// Registers in a shared `registry`.
    pub fn registry_arc(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = registry;
        self
    }

    /// The registered weight (default 10).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight;
        self
    }

    /// Adds a registered tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Adds a middleware around every handler; the first added is the outermost.
    pub fn layer(mut self, layer: PayloadLayer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds a tracer.
    pub fn tracer(mut self, tracer: impl Tracer) -> Self {
        self.tracers.push(Box::new(tracer));
        self
    }

    /// Applies a suite.
    pub fn suite(self, suite: impl ServerSuite) -> Self {
        suite.apply(self)
    }

    /// Uses `policies` (shared, for example, with a config center) instead of fresh ones.
    pub fn policies(mut self, policies: Arc<ServerPolicies>) -> Self {
        self.policies = Some(policies);
        self
    }

    /// After deregistering, keep serving this long so clients see the change (default 0).
    pub fn exit_grace(mut self, grace: Duration) -> Self {
        self.exit_grace = grace;
        self
    }

    /// How long shutdown waits for in-flight calls before dropping them (default 10 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// The largest frame accepted from a client (default 16 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Listens, starts serving, then registers. Returns a handle to stop the server.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error for an invalid setup, a
    /// [`Transport`](ErrorKind::Transport) error if binding fails, or a
    /// [`Registry`](ErrorKind::Registry) error if registration fails (the server is stopped).
    pub async fn start(self) -> Result<RunningServer> {
        let mut errors = self.errors;
        if self.service.is_empty() {
            errors.push("service name is empty".into());
        }
        if self.handlers.is_empty() {
            errors.push("no handler registered".into());
        }
        if !errors.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!("invalid server {:?}: {}", self.service, errors.join("; ")),
            ));
        }
        let listener = TcpListener::bind(self.bind)
            .await
            .map_err(|e| Error::transport(format!("binding {} failed", self.bind), e))?;
        let local_addr = listener
            .local_addr()
            .map_err(|e| Error::transport("reading the bound address failed", e))?;
        let advertised = self.advertise.unwrap_or_else(|| routable(local_addr));
        let policies = self.policies.unwrap_or_default();
        let router = Arc::new(Router {
            service: self.service.clone(),
            handlers: self.handlers.into_iter().collect(),
        });
        // Without middleware the router is called directly (no boxed future per call).
        let chain = (!self.layers.is_empty())
            .then(|| {
                let bottom = PayloadService::server(SharedRouter(router.clone()));
                self.layers
                    .into_iter()
                    .rev()
                    .fold(bottom, |s, l| l.layer(s))
                    .into_top()
            })
            .flatten();
        let inner = Arc::new(ServerInner {
            service: self.service.clone(),
            router,
            chain,
            tracers: Tracers(self.tracers.into()),
            policies,
            max_frame_size: self.max_frame_size,
            stop_reading: CancellationToken::new(),
            hard_stop: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let accept = tokio::spawn(accept_loop(inner.clone(), listener));
        let info = RegistryInfo {
            weight: self.weight,
            tags: self.tags,
            ..RegistryInfo::new(self.service.to_string(), advertised)
        };
        tracing::info!(service = %self.service, %local_addr, %advertised, "server listening");
        let running = RunningServer {
            inner,
            accept,
            local_addr,
            info,
            registry: self.registry,
            exit_grace: self.exit_grace,
            drain_timeout: self.drain_timeout,
        };
        if let Err(e) = running.registry.register(&running.info).await {
            tracing::error!(service = %running.info.service_name, error = %e, "registration failed; stopping");
            running.stop_now().await;
            return Err(Error::with_source(
                ErrorKind::Registry,
                "registering the server failed",
                e,
            ));
        }
        Ok(running)
    }

    /// Starts the server and serves until Ctrl-C or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    /// What [`start`](ServerBuilder::start) or [`RunningServer::shutdown`] returns.
    pub async fn serve(self) -> Result<()> {
        // Install the signal handlers before listening, so a signal that arrives as soon as
        // the server is registered is not missed.
        let signal = shutdown_signal();
        let running = self.start().await?;
        signal.await;
        tracing::info!("shutdown signal received");
        running.shutdown().await
    }
}

/// The bound address with an address other servers can reach: an unspecified IP becomes the
/// first non-loopback interface address (or loopback when there is none).
fn routable(bound: SocketAddr) -> SocketAddr {
    if !bound.ip().is_unspecified() {
        return bound;
    }
    let ip = if_addrs::get_if_addrs()
        .ok()
        .and_then(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .find(|ip| !ip.is_loopback() && ip.is_ipv4() == bound.is_ipv4())
        })
        .unwrap_or(if bound.is_ipv4() {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
        });
    SocketAddr::new(ip, bound.port())
}

/// Installs the SIGTERM handler now and returns a future that ends on Ctrl-C or SIGTERM.
fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    async move {
        #[cfg(unix)]
        if let Ok(mut term) = term {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) struct ServerInner {
    service: FastStr,
    router: Arc<Router>,
    chain: Option<BoxService<Bytes, Bytes, Error>>,
    tracers: Tracers,
    policies: Arc<ServerPolicies>,
    max_frame_size: usize,
    stop_reading: CancellationToken,
    hard_stop: CancellationToken,
    tracker: TaskTracker,
}

async fn accept_loop(inner: Arc<ServerInner>, listener: TcpListener) {
    loop {
        let accepted = tokio::select! {
            () = inner.stop_reading.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let Some(permit) = Limiter::admit_connection(&inner.policies) else {
                    tracing::warn!(%peer, limit = inner.policies.limit.config().connection_limit,
                        "connection limit reached; closing the new connection");
                    drop(stream);
                    continue;
                };
                let inner2 = inner.clone();
                inner.tracker.spawn(async move {
                    let hard = inner2.hard_stop.clone();
                    tokio::select! {
                        () = hard.cancelled() => {}
                        () = conn::serve(inner2, stream, peer) => {}
                    }
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A server that is listening; stop it with [`shutdown`](RunningServer::shutdown).
#[must_use = "dropping a RunningServer leaves it running; call shutdown()"]
pub struct RunningServer {
    inner: Arc<ServerInner>,
    accept: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
    info: RegistryInfo,
    registry: Arc<dyn Registry>,
    exit_grace: Duration,
    drain_timeout: Duration,
}

impl std::fmt::Debug for RunningServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningServer")
            .field("service", &self.inner.service)
            .field("local_addr", &self.local_addr)
            .field("advertised", &self.info.address)
            .finish()
    }
}

impl RunningServer {
    /// The address the server listens on.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the server registered.
    #[must_use]
    pub fn registry_info(&self) -> &RegistryInfo {
        &self.info
    }

    /// The server's live policies (rate limits).
    #[must_use]
    pub fn policies(&self) -> &Arc<ServerPolicies> {
        &self.inner.policies
    }

    /// Shuts down gracefully: deregisters, keeps serving for the exit grace period, stops
    /// accepting and reading, waits for in-flight calls to finish (up to the drain timeout),
    /// then closes every connection.
    ///
    /// # Errors
    /// A [`Registry`](ErrorKind::Registry) error if deregistration failed (the server still
    /// shuts down).
    pub async fn shutdown(self) -> Result<()> {
        let service = self.inner.service.clone();
        let dereg = self.registry.deregister(&self.info).await;
        if let Err(e) = &dereg {
            tracing::error!(%service, error = %e, "deregistration failed");
        }
        if !self.exit_grace.is_zero() {
            tokio::time::sleep(self.exit_grace).await;
        }
        self.inner.stop_reading.cancel();
        let _ = self.accept.await;
        self.inner.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(%service, timeout = ?self.drain_timeout, "in-flight calls did not finish in time; dropping them");
            self.inner.hard_stop.cancel();
            self.inner.tracker.wait().await;
        }
        tracing::info!(%service, "server stopped");
        dereg.map_err(|e| {
            Error::with_source(ErrorKind::Registry, "deregistering the server failed", e)
        })
    }

    async fn stop_now(&self) {
        self.inner.stop_reading.cancel();
        self.inner.hard_stop.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}

struct Router {
    service: FastStr,
    handlers: HashMap<String, Arc<Handler>, crate::transport::FastHash>,
}

/// The router at the bottom of a middleware chain.
#[derive(Clone)]
pub(crate) struct SharedRouter(Arc<Router>);

impl Service<Bytes> for SharedRouter {
    type Response = Bytes;
    type Error = Error;

    fn call(&self, cx: &mut Context, payload: Bytes) -> impl Future<Output = Result<Bytes>> + Send {
        self.0.call(cx, payload)
    }
}

impl Service<Bytes> for Router {
    type Response = Bytes;
    type Error = Error;

    async fn call(&self, cx: &mut Context, payload: Bytes) -> Result<Bytes> {
        let Some(handler) = self.handlers.get(cx.method()) else {
            tracing::debug!(service = %self.service, method = cx.method(), "unknown method");
            return Err(Error::remote(
                code::UNKNOWN_METHOD,
                format!("unknown method {}/{}", self.service, cx.method()),
            ));
        };
        let fut = AssertUnwindSafe(handler(payload)).catch_unwind();
        match MetaInfo::scope_lent(&mut cx.meta, fut).await {
            Ok(res) => res,
            Err(_) => {
                tracing::error!(service = %self.service, method = cx.method(), "handler panicked");
                Err(Error::remote(code::INTERNAL, "handler panicked"))
            }
        }
    }
}

impl ServerInner {
    /// Runs one decoded request through the limiter, tracers and the chain.
    pub(crate) async fn process(&self, cx: &mut Context, payload: Bytes) -> Result<Bytes> {
        if !self.policies.limit.check_qps() {
            return Err(Error::remote(
                code::RATE_LIMITED,
                "rate limited by the server's QPS limit",
            ));
        }
        let traced = !self.tracers.is_empty();
        if traced {
            cx.rpc_info.stats.start = Some(crate::clock::Timestamp::now());
            cx.rpc_info.stats.request_size = payload.len();
            self.tracers.start(cx);
        }
        let res = match &self.chain {
            Some(chain) => chain.call_dyn(cx, payload).await,
            None => self.router.call(cx, payload).await,
        };
        if traced {
            let stats = &mut cx.rpc_info.stats;
            stats.end = Some(crate::clock::Timestamp::now());
            match &res {
                Ok(p) => stats.response_size = p.len(),
                Err(e) => stats.error = Some(e.clone()),
            }
            self.tracers.finish(cx);
        }
        res
    }
}
