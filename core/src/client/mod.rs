//! The client: typed calls through middleware, tracers, governance, discovery, load balancing
//! and multiplexed connections.
//!
//! ```no_run
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoRequest { #[prost(string, tag = "1")] message: String }
//! # #[derive(Clone, PartialEq, prost::Message)] struct EchoResponse { #[prost(string, tag = "1")] message: String }
//! # async fn demo() -> gannet_core::Result<()> {
//! use gannet_core::Client;
//! let client = Client::builder("echo")
//!     .address("127.0.0.1:8888".parse().unwrap())
//!     .rpc_timeout(std::time::Duration::from_secs(1))
//!     .build()?;
//! let reply: EchoResponse = client.call("Echo", &EchoRequest { message: "hi".into() }).await?;
//! # Ok(()) }
//! ```

mod invoker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use faststr::FastStr;

use crate::codec::ttheader::DEFAULT_MAX_FRAME_SIZE;
use crate::codec::{Codec, ProstCodec};
use crate::context::{Context, MetaInfo};
use crate::discovery::{DiscoveryCache, Instance, Resolver, StaticResolver};
use crate::error::{Error, ErrorKind, Result};
use crate::loadbalance::{LoadBalancer, WeightedRoundRobin};
use crate::policy::{CircuitBreakerConfig, CircuitBreakers, ClientPolicies};
use crate::service::{BoxService, Layer, PayloadLayer, PayloadService, Service};
use crate::suite::ClientSuite;
use crate::tracer::{Tracer, Tracers};

pub(crate) use invoker::Invoker;

/// Builds a [`Client`]. Setters take and return the builder; errors wait for
/// [`build`](ClientBuilder::build).
#[must_use]
pub struct ClientBuilder<C = ProstCodec> {
    caller: FastStr,
    service: FastStr,
    resolver: Option<Arc<dyn Resolver>>,
    addresses: Vec<SocketAddr>,
    cache: Option<DiscoveryCache>,
    lb: Option<Arc<dyn LoadBalancer>>,
    layers: Vec<PayloadLayer>,
    tracers: Vec<Box<dyn Tracer>>,
    policies: Option<Arc<ClientPolicies>>,
    instance_breaker: Option<CircuitBreakerConfig>,
    rpc_timeout: Option<Duration>,
    connect_timeout: Option<Duration>,
    connections_per_instance: usize,
    max_frame_size: usize,
    codec: C,
    errors: Vec<String>,
}

impl<C> std::fmt::Debug for ClientBuilder<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("service", &self.service)
            .field("caller", &self.caller)
            .finish_non_exhaustive()
    }
}

impl ClientBuilder<ProstCodec> {
    fn new(service: FastStr) -> Self {
        Self {
            caller: FastStr::from_static_str("gannet-client"),
            service,
            resolver: None,
            addresses: Vec::new(),
            cache: None,
            lb: None,
            layers: Vec::new(),
            tracers: Vec::new(),
            policies: None,
            instance_breaker: None,
            rpc_timeout: None,
            connect_timeout: Some(Duration::from_millis(500)),
            connections_per_instance: 1,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            codec: ProstCodec,
            errors: Vec::new(),
        }
    }
}

impl<C> ClientBuilder<C> {
    /// The calling service's name, sent to the server (default `gannet-client`).
    pub fn caller(mut self, name: impl Into<FastStr>) -> Self {
        self.caller = name.into();
        self
    }

    /// Discovers instances through `resolver`.
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.resolver = Some(Arc::new(resolver));
        self
    }

    /// Discovers instances through a shared resolver.
    pub fn resolver_arc(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Calls a fixed address (may be given several times) instead of discovering.
    pub fn address(mut self, addr: SocketAddr) -> Self {
        self.addresses.push(addr);
        self
    }

    /// Shares watches through `cache` instead of the process-wide [`DiscoveryCache::global`].
    pub fn discovery_cache(mut self, cache: DiscoveryCache) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Balances with `lb` (default [`WeightedRoundRobin`]).
    pub fn load_balancer(mut self, lb: impl LoadBalancer) -> Self {
        self.lb = Some(Arc::new(lb));
        self
    }

    /// Adds a middleware; the first added is the outermost.
    pub fn layer(mut self, layer: PayloadLayer) -> Self {
        self.layers.push(layer);
        self
    }

    /// Adds a tracer; tracers start in the order added and finish in reverse.
    pub fn tracer(mut self, tracer: impl Tracer) -> Self {
        self.tracers.push(Box::new(tracer));
        self
    }

    /// Applies a suite.
    pub fn suite(self, suite: impl ClientSuite) -> Self {
        suite.apply(self)
    }

    /// Uses `policies` (shared, for example, with a config center) instead of fresh ones.
    pub fn policies(mut self, policies: Arc<ClientPolicies>) -> Self {
        self.policies = Some(policies);
        self
    }

    /// Turns on per-instance circuit breakers with `config`.
    pub fn instance_circuit_breaker(mut self, config: CircuitBreakerConfig) -> Self {
        self.instance_breaker = Some(config);
        self
    }

    /// The timeout of one attempt when no `rpc_timeout` policy says otherwise (default none).
    pub fn rpc_timeout(mut self, timeout: Duration) -> Self {
        self.rpc_timeout = Some(timeout);
        self
    }

    /// The connect timeout when no policy says otherwise (default 500 ms).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Multiplexed connections per instance (default 1).
    pub fn connections_per_instance(mut self, n: usize) -> Self {
        if n == 0 {
            self.errors
                .push("connections_per_instance must be at least 1".into());
        }
        self.connections_per_instance = n;
        self
    }

    /// The largest frame accepted from the server (default 16 MiB).
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Encodes payloads with `codec` instead of Protobuf.
    pub fn codec<C2>(self, codec: C2) -> ClientBuilder<C2> {
        ClientBuilder {
            caller: self.caller,
            service: self.service,
            resolver: self.resolver,
            addresses: self.addresses,
            cache: self.cache,
            lb: self.lb,
            layers: self.layers,
            tracers: self.tracers,
            policies: self.policies,
            instance_breaker: self.instance_breaker,
            rpc_timeout: self.rpc_timeout,
            connect_timeout: self.connect_timeout,
            connections_per_instance: self.connections_per_instance,
            max_frame_size: self.max_frame_size,
            codec,
            errors: self.errors,
        }
    }

    /// Builds the client. Discovery starts on the first call.
    ///
    /// # Errors
    /// A [`Config`](ErrorKind::Config) error if the service name is empty, no resolver or
    /// address was given, both were, or a setting was invalid.
    pub fn build(self) -> Result<Client<C>> {
        let mut errors = self.errors;
        if self.service.is_empty() {
            errors.push("service name is empty".into());
        }
        let resolver: Option<Arc<dyn Resolver>> = match (self.resolver, self.addresses.is_empty()) {
            (Some(r), true) => Some(r),
            (None, false) => Some(Arc::new(StaticResolver::new(
                self.addresses.into_iter().map(Instance::new).collect(),
            ))),
            (Some(_), false) => {
                errors.push("give either a resolver or addresses, not both".into());
                None
            }
            (None, true) => {
                errors.push("no resolver and no address: nothing to call".into());
                None
            }
        };
        if !errors.is_empty() {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "invalid client for {:?}: {}",
                    self.service,
                    errors.join("; ")
                ),
            ));
        }
        let resolver = resolver.unwrap_or_else(|| Arc::new(StaticResolver::new(Vec::new())));
        let breakers = CircuitBreakers::default();
        if let Some(cfg) = self.instance_breaker {
            breakers.instance_config.store(cfg)?;
        }
        let invoker = Invoker::new(invoker::InvokerConfig {
            caller: self.caller.clone(),
            service: self.service.clone(),
            resolver,
            cache: self
                .cache
                .unwrap_or_else(|| DiscoveryCache::global().clone()),
            lb: self
                .lb
                .unwrap_or_else(|| Arc::new(WeightedRoundRobin::new())),
            policies: self.policies.unwrap_or_default(),
            breakers,
            rpc_timeout: self.rpc_timeout,
            connect_timeout: self.connect_timeout,
            connections_per_instance: self.connections_per_instance,
            max_frame_size: self.max_frame_size,
        });
        // Without middleware the invoker is called directly (no boxed future per call).
        let chain = if self.layers.is_empty() {
            None
        } else {
            let bottom = PayloadService::client(invoker.clone());
            self.layers
                .into_iter()
                .rev()
                .fold(bottom, |s, l| l.layer(s))
                .into_top()
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                caller: self.caller,
                service: self.service,
                invoker,
                chain,
                tracers: Tracers(self.tracers.into()),
            }),
            codec: Arc::new(self.codec),
        })
    }
}

struct ClientInner {
    caller: FastStr,
    service: FastStr,
    invoker: Invoker,
    chain: Option<BoxService<Bytes, Bytes, Error>>,
    tracers: Tracers,
}

/// A client of one service. Cheap to clone; clones share connections and policies.
pub struct Client<C = ProstCodec> {
    inner: Arc<ClientInner>,
    codec: Arc<C>,
}

impl<C> Clone for Client<C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            codec: self.codec.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("service", &self.inner.service)
            .field("caller", &self.inner.caller)
            .finish_non_exhaustive()
    }
}

impl Client<ProstCodec> {
    /// Starts building a client of `service`.
    pub fn builder(service: impl Into<FastStr>) -> ClientBuilder<ProstCodec> {
        ClientBuilder::new(service.into())
    }
}

impl<C> Client<C> {
    /// The called service.
    #[must_use]
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The client's live policies: swap them to change timeouts, retries, breakers and
    /// degradation while calls run.
    #[must_use]
    pub fn policies(&self) -> &Arc<ClientPolicies> {
        self.inner.invoker.policies()
    }

    /// The client's circuit breakers (state, and the per-instance breaker config).
    #[must_use]
    pub fn circuit_breakers(&self) -> &CircuitBreakers {
        self.inner.invoker.breakers()
    }

    /// Open connections, over all instances.
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.inner.invoker.connection_count()
    }

    /// A fresh context for calling `method` from this client.
    pub fn context(&self, method: impl Into<FastStr>) -> Context {
        let mut meta = MetaInfo::default();
        meta.inherit_current();
        Context::with_meta(
            self.inner.caller.clone(),
            self.inner.service.clone(),
            method,
            meta,
        )
    }

    /// Calls `method` with `req`.
    ///
    /// # Errors
    /// Any [`Error`]: the kind says what failed.
    pub async fn call<Req, Resp>(&self, method: impl Into<FastStr>, req: &Req) -> Result<Resp>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let mut cx = self.context(method);
        self.call_with(&mut cx, req).await
    }

    /// Calls with a prepared context: set metainfo, a per-call timeout or a hash key first.
    ///
    /// # Errors
    /// Any [`Error`]: the kind says what failed.
    pub async fn call_with<Req, Resp>(&self, cx: &mut Context, req: &Req) -> Result<Resp>
    where
        C: Codec<Req> + Codec<Resp>,
    {
        let mut buf = BytesMut::new();
        Codec::<Req>::encode(&*self.codec, req, &mut buf)?;
        let payload = self.call_raw(cx, buf.freeze()).await?;
        Codec::<Resp>::decode(&*self.codec, payload)
    }

    /// Calls with an encoded payload, returning the encoded reply.
    ///
    /// # Errors
    /// Any [`Error`]: the kind says what failed.
    pub async fn call_raw(&self, cx: &mut Context, payload: Bytes) -> Result<Bytes> {
        let inner = &*self.inner;
        let traced = !inner.tracers.is_empty();
        cx.rpc_info.stats.request_size = payload.len();
        if traced {
            cx.rpc_info.stats.start = Some(crate::clock::Timestamp::now());
            inner.tracers.start(cx);
        }
        let res = match &inner.chain {
            Some(chain) => {
                // The chain's future lives in this one (no allocation) when it fits.
                let slot = std::pin::pin!(crate::inline::Slot::new());
                chain.call_in(cx, payload, slot).await
            }
            None => inner.invoker.call(cx, payload).await,
        };
        if traced {
            let stats = &mut cx.rpc_info.stats;
            stats.end = Some(crate::clock::Timestamp::now());
            match &res {
                Ok(p) => stats.response_size = p.len(),
                Err(e) => stats.error = Some(e.clone()),
            }
            inner.tracers.finish(cx);
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A middleware written the plain way: an `async fn` around the inner call.
    struct Counting(PayloadService);

    impl Service<Bytes> for Counting {
        type Response = Bytes;
        type Error = Error;
        async fn call(&self, cx: &mut Context, req: Bytes) -> Result<Bytes> {
            let res = self.0.call(cx, req).await;
            if res.is_err() {
                tracing::debug!("failed");
            }
            res
        }
    }

    #[test]
    fn a_typed_middleware_over_the_invoker_fits_the_inline_slot() {
        let client = Client::builder("sizes")
            .address("127.0.0.1:9".parse().unwrap())
            .build()
            .unwrap();
        let layer = Counting(PayloadService::client(client.inner.invoker.clone()));
        let mut cx = client.context("M");
        let fut = layer.call(&mut cx, Bytes::new());
        // Past the slot, every call through such a chain would allocate its future.
        assert!(
            std::mem::size_of_val(&fut) <= crate::inline::SLOT_BYTES,
            "{} bytes",
            std::mem::size_of_val(&fut)
        );
    }
}
