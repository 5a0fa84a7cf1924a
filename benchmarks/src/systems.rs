//! Each system's echo server and client.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use gannet_core::discovery::{DiscoveryCache, Instance, Resolver};
use gannet_core::loadbalance::WeightedRoundRobin;
use gannet_core::service::{PayloadLayer, PayloadService};
use gannet_core::{Client, Context, Layer, Server, Service, Tracer};
use gannet_observability::Observability;

use crate::{BoxError, pb, raw, thrift};

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// Gannet with a fixed address and nothing switched on.
    Gannet,
    /// Gannet with discovery (a resolver through the discovery cache), a load balancer, and a
    /// tracer and a middleware on both sides: the issue's "ecosystem switched on".
    GannetEcosystem,
    /// [`System::GannetEcosystem`] plus timeout, failure-retry and circuit-breaker policies.
    GannetGoverned,
    /// [`System::GannetEcosystem`] plus the `gannet-observability` suite on both sides:
    /// OpenTelemetry spans (SDK provider, batch processor, an exporter that discards) and RPC
    /// metrics into a Prometheus recorder.
    GannetOtel,
    /// tonic (gRPC over HTTP/2), one shared `Channel`.
    Tonic,
    /// Volo (`volo-thrift`, TTHeader + framed binary Thrift), its default client.
    Volo,
    /// The raw-TCP ceiling ([`raw`]).
    RawTcp,
}

impl System {
    /// Every system.
    pub const ALL: [System; 7] = [
        System::Gannet,
        System::GannetEcosystem,
        System::GannetGoverned,
        System::GannetOtel,
        System::Tonic,
        System::Volo,
        System::RawTcp,
    ];

    /// The name used on the command line and in results.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            System::Gannet => "gannet",
            System::GannetEcosystem => "gannet-ecosystem",
            System::GannetGoverned => "gannet-governed",
            System::GannetOtel => "gannet-otel",
            System::Tonic => "tonic",
            System::Volo => "volo",
            System::RawTcp => "raw-tcp",
        }
    }

    /// The system named `name`.
    #[must_use]
    pub fn parse(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// The Gannet echo message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoMessage {
    /// The payload, shared with the read buffer on decode.
    #[prost(bytes = "bytes", tag = "1")]
    pub payload: Bytes,
}

/// A tracer that does real work per call: it accumulates durations and sizes.
#[derive(Debug, Default)]
pub struct CountingTracer {
    calls: AtomicU64,
    micros: AtomicU64,
    bytes: AtomicU64,
}

impl Tracer for CountingTracer {
    fn start(&self, _cx: &mut Context) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
    fn finish(&self, cx: &mut Context) {
        let s = &cx.rpc_info.stats;
        if let Some(d) = s.duration() {
            self.micros
                .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        }
        self.bytes
            .fetch_add((s.request_size + s.response_size) as u64, Ordering::Relaxed);
    }
}

/// The ecosystem case's middleware: counts calls and reports failures. Written as a typed
/// [`Layer`] (the way to write middleware without a per-call allocation); a
/// [`layer_fn`](gannet_core::service::layer_fn) closure boxes its future on every call.
#[derive(Debug, Clone, Default)]
struct CountingLayer(Arc<AtomicU64>);

impl Layer<PayloadService> for CountingLayer {
    type Service = Counting;
    fn layer(self, inner: PayloadService) -> Counting {
        Counting {
            calls: self.0,
            inner,
        }
    }
}

/// The service [`CountingLayer`] builds.
#[derive(Debug)]
struct Counting {
    calls: Arc<AtomicU64>,
    inner: PayloadService,
}

impl Service<Bytes> for Counting {
    type Response = Bytes;
    type Error = gannet_core::Error;

    async fn call(&self, cx: &mut Context, req: Bytes) -> gannet_core::Result<Bytes> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let res = self.inner.call(cx, req).await;
        if let Err(e) = &res {
            eprintln!("echo call failed: {e}");
        }
        res
    }
}

fn counting_layer() -> PayloadLayer {
    PayloadLayer::new(CountingLayer::default())
}

const POLICIES_TIMEOUT: &str = r#"{"*": {"rpc_timeout_ms": 5000, "conn_timeout_ms": 1000}}"#;
const POLICIES_RETRY: &str = r#"{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 1, "cb_policy": {"error_rate": 0.1}}}}}"#;
const POLICIES_BREAKER: &str = r#"{"*": {"enable": true, "err_rate": 0.5, "min_sample": 200}}"#;

/// A running echo server.
#[derive(Debug)]
pub enum ServerHandle {
    /// A Gannet server.
    Gannet(Box<gannet_core::RunningServer>),
    /// Another system's server task.
    Task(tokio::task::JoinHandle<()>),
    /// The raw server (runs until the runtime ends).
    Detached,
}

impl ServerHandle {
    /// Stops the server.
    pub async fn stop(self) {
        match self {
            ServerHandle::Gannet(s) => {
                let s = *s;
                let _ = s.shutdown().await;
            }
            ServerHandle::Task(t) => t.abort(),
            ServerHandle::Detached => {}
        }
    }
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A free loopback port, for servers that cannot report the port they bound.
fn free_addr() -> Result<SocketAddr, BoxError> {
    let l = std::net::TcpListener::bind(loopback())?;
    Ok(l.local_addr()?)
}

async fn wait_listening(addr: SocketAddr) -> Result<(), BoxError> {
    for _ in 0..500 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err(format!("server at {addr} did not start listening").into())
}

struct TonicEcho;

#[tonic::async_trait]
impl pb::echo_server::Echo for TonicEcho {
    async fn echo(
        &self,
        request: tonic::Request<pb::EchoRequest>,
    ) -> Result<tonic::Response<pb::EchoResponse>, tonic::Status> {
        Ok(tonic::Response::new(pb::EchoResponse {
            payload: request.into_inner().payload,
        }))
    }
}

struct VoloEcho;

impl thrift::volo_gen::echo::Echo for VoloEcho {
    async fn echo(
        &self,
        req: thrift::volo_gen::echo::EchoRequest,
    ) -> Result<thrift::volo_gen::echo::EchoResponse, volo_thrift::ServerError> {
        Ok(thrift::volo_gen::echo::EchoResponse {
            payload: req.payload,
        })
    }
}

/// Starts `system`'s echo server on the current runtime.
///
/// # Errors
/// If the server cannot start.
pub async fn start_server(system: System) -> Result<(SocketAddr, ServerHandle), BoxError> {
    match system {
        System::Gannet | System::GannetEcosystem | System::GannetGoverned | System::GannetOtel => {
            let mut b = Server::builder("echo")
                .bind(loopback())
                .handler("Echo", |req: EchoMessage| async move { Ok(req) });
            if system != System::Gannet {
                b = b.tracer(CountingTracer::default()).layer(counting_layer());
            }
            if system == System::GannetOtel {
                install_observability();
                b = b.suite(Observability::default());
            }
            let s = b.start().await?;
            Ok((s.local_addr(), ServerHandle::Gannet(Box::new(s))))
        }
        System::Tonic => {
            let listener = tokio::net::TcpListener::bind(loopback()).await?;
            let addr = listener.local_addr()?;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
            let task = tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(pb::echo_server::EchoServer::new(TonicEcho))
                    .serve_with_incoming(incoming)
                    .await;
            });
            Ok((addr, ServerHandle::Task(task)))
        }
        System::Volo => {
            let addr = free_addr()?;
            let task = tokio::spawn(async move {
                let _ = thrift::volo_gen::echo::EchoServer::new(VoloEcho)
                    .run(volo::net::Address::from(addr))
                    .await;
            });
            wait_listening(addr).await?;
            Ok((addr, ServerHandle::Task(task)))
        }
        System::RawTcp => Ok((raw::serve(loopback()).await?, ServerHandle::Detached)),
    }
}

/// Discards exported spans: the benchmark measures recording and batching, not a network.
#[derive(Debug)]
struct Discard;

impl opentelemetry_sdk::trace::SpanExporter for Discard {
    async fn export(
        &self,
        _batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

/// Installs, once per process, an OpenTelemetry SDK tracer provider with a batch processor
/// (exporting to [`Discard`]) and a Prometheus metrics recorder.
fn install_observability() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(Discard)
            .build();
        opentelemetry::global::set_tracer_provider(provider);
        if let Err(e) = gannet_observability::install_prometheus(loopback()) {
            eprintln!("metrics recorder not installed: {e}");
        }
    });
}

/// A resolver that answers with one address, through the discovery cache's polling watch:
/// the ecosystem case's stand-in for a registry.
#[derive(Debug)]
struct OneAddress(SocketAddr);

#[async_trait::async_trait]
impl Resolver for OneAddress {
    fn name(&self) -> &str {
        "bench-one-address"
    }
    async fn resolve(&self, _target: &str) -> gannet_core::Result<Vec<Instance>> {
        Ok(vec![Instance::new(self.0)])
    }
}

type VoloClient = thrift::volo_gen::echo::EchoClient;

/// A client of one system.
#[derive(Clone)]
pub enum Caller {
    /// Gannet.
    Gannet(Client),
    /// tonic, sharing one `Channel`.
    Tonic(pb::echo_client::EchoClient<tonic::transport::Channel>),
    /// Volo.
    Volo(VoloClient),
    /// Raw TCP.
    Raw(raw::Client),
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Caller::Gannet(_) => "Caller::Gannet",
            Caller::Tonic(_) => "Caller::Tonic",
            Caller::Volo(_) => "Caller::Volo",
            Caller::Raw(_) => "Caller::Raw",
        })
    }
}

impl Caller {
    /// Connects a client of `system` to `addr`.
    ///
    /// # Errors
    /// If the client cannot be built or connect.
    pub async fn connect(system: System, addr: SocketAddr) -> Result<Caller, BoxError> {
        Ok(match system {
            System::Gannet => Caller::Gannet(Client::builder("echo").address(addr).build()?),
            System::GannetEcosystem | System::GannetGoverned | System::GannetOtel => {
                // A cache of its own: the global one shares a watch per resolver name and
                // target, which would hand every system in one process the first one's address.
                let mut b = Client::builder("echo")
                    .resolver(OneAddress(addr))
                    .discovery_cache(DiscoveryCache::new(Duration::from_secs(60)))
                    .load_balancer(WeightedRoundRobin::new())
                    .tracer(CountingTracer::default())
                    .layer(counting_layer());
                if system == System::GannetOtel {
                    install_observability();
                    b = b.suite(Observability::default());
                }
                let client = b.build()?;
                if system == System::GannetGoverned {
                    let p = client.policies();
                    p.timeout.set_json(POLICIES_TIMEOUT)?;
                    p.retry.set_json(POLICIES_RETRY)?;
                    p.circuit_break.set_json(POLICIES_BREAKER)?;
                }
                Caller::Gannet(client)
            }
            System::Tonic => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                    .tcp_nodelay(true)
                    .connect()
                    .await?;
                Caller::Tonic(pb::echo_client::EchoClient::new(channel))
            }
            System::Volo => Caller::Volo(
                thrift::volo_gen::echo::EchoClientBuilder::new("echo")
                    .address(volo::net::Address::from(addr))
                    .build(),
            ),
            System::RawTcp => Caller::Raw(raw::Client::connect(addr).await?),
        })
    }

    /// Sends `payload` and returns the length of the echoed payload.
    ///
    /// # Errors
    /// The system's error, as text.
    pub async fn call(&self, payload: &Bytes) -> Result<usize, BoxError> {
        match self {
            Caller::Gannet(c) => {
                let reply: EchoMessage = c
                    .call(
                        "Echo",
                        &EchoMessage {
                            payload: payload.clone(),
                        },
                    )
                    .await?;
                Ok(reply.payload.len())
            }
            Caller::Tonic(c) => {
                let reply = c
                    .clone()
                    .echo(pb::EchoRequest {
                        payload: payload.clone(),
                    })
                    .await?;
                Ok(reply.into_inner().payload.len())
            }
            Caller::Volo(c) => {
                let reply = c
                    .echo(thrift::volo_gen::echo::EchoRequest {
                        payload: payload.clone(),
                    })
                    .await?;
                Ok(reply.payload.len())
            }
            Caller::Raw(c) => Ok(c.call(payload).await?.len()),
        }
    }
}
