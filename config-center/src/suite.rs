//! Client and server suites that keep policies in line with a config source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::StreamExt;
use gannet_core::policy::{ClientPolicies, DegradationConfig, LimitConfig, ServerPolicies};
use gannet_core::{ClientBuilder, ClientSuite, ServerBuilder, ServerSuite};

use crate::{ConfigEvent, ConfigSource};

/// How long building a suite waits for each key's current value before starting with the
/// defaults (the watch keeps trying, and applies the value when the source answers).
const INITIAL_READ: Duration = Duration::from_secs(5);

/// How often a watch task checks whether its client or server is gone.
const LIVENESS_CHECK: Duration = Duration::from_secs(5);

/// A governance config category (the last part of a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Category {
    /// `rpc_timeout`: per-method rpc and connect timeouts (client).
    RpcTimeout,
    /// `retry`: per-method failure retry or backup request (client).
    Retry,
    /// `circuit_break`: per-method circuit breakers (client).
    CircuitBreak,
    /// `degradation`: drop a share of calls (client).
    Degradation,
    /// `limit`: QPS and connection limits (server).
    Limit,
}

impl Category {
    /// The client-side categories.
    pub const CLIENT: [Category; 4] = [
        Category::RpcTimeout,
        Category::Retry,
        Category::CircuitBreak,
        Category::Degradation,
    ];

    /// The key suffix, as kitex-contrib spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Category::RpcTimeout => "rpc_timeout",
            Category::Retry => "retry",
            Category::CircuitBreak => "circuit_break",
            Category::Degradation => "degradation",
            Category::Limit => "limit",
        }
    }
}

/// Counts of what a suite's watches did, for health checks and tests.
#[derive(Debug, Clone, Default)]
pub struct ConfigStatus(Arc<StatusInner>);

#[derive(Debug, Default)]
struct StatusInner {
    applied: AtomicU64,
    rejected: AtomicU64,
    restored: AtomicU64,
    source_errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ConfigStatus {
    /// Values parsed, validated and swapped in.
    #[must_use]
    pub fn applied(&self) -> u64 {
        self.0.applied.load(Ordering::Acquire)
    }

    /// Values refused (bad JSON or invalid); the policy in force stayed.
    #[must_use]
    pub fn rejected(&self) -> u64 {
        self.0.rejected.load(Ordering::Acquire)
    }

    /// Deleted (or absent) keys whose default was restored.
    #[must_use]
    pub fn restored(&self) -> u64 {
        self.0.restored.load(Ordering::Acquire)
    }

    /// Times the source could not be reached or read.
    #[must_use]
    pub fn source_errors(&self) -> u64 {
        self.0.source_errors.load(Ordering::Acquire)
    }

    /// The last rejection or source error, as text.
    #[must_use]
    pub fn last_error(&self) -> Option<String> {
        self.0
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn error(&self, counter: &AtomicU64, message: String) {
        *self.0.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
        counter.fetch_add(1, Ordering::AcqRel);
    }
}

/// What a watch task updates: the policies it serves, held weakly so a dropped client or
/// server stops its watches.
#[derive(Clone)]
enum Target {
    Client(Weak<ClientPolicies>),
    Server(Weak<ServerPolicies>),
}

impl Target {
    fn is_alive(&self) -> bool {
        match self {
            Target::Client(w) => w.strong_count() > 0,
            Target::Server(w) => w.strong_count() > 0,
        }
    }

    /// Applies one event; `Ok(true)` if a value was stored, `Ok(false)` if a default was
    /// restored, `Err` if the value was refused (the policy in force stays).
    fn apply(&self, category: Category, event: &ConfigEvent) -> gannet_core::Result<bool> {
        match self {
            Target::Client(w) => {
                let Some(p) = w.upgrade() else {
                    return Ok(false);
                };
                match (category, event) {
                    (Category::RpcTimeout, ConfigEvent::Value(v)) => p.timeout.set_json(v),
                    (Category::RpcTimeout, ConfigEvent::Deleted) => {
                        p.timeout.clear();
                        return Ok(false);
                    }
                    (Category::Retry, ConfigEvent::Value(v)) => p.retry.set_json(v),
                    (Category::Retry, ConfigEvent::Deleted) => {
                        p.retry.clear();
                        return Ok(false);
                    }
                    (Category::CircuitBreak, ConfigEvent::Value(v)) => p.circuit_break.set_json(v),
                    (Category::CircuitBreak, ConfigEvent::Deleted) => {
                        p.circuit_break.clear();
                        return Ok(false);
                    }
                    (Category::Degradation, ConfigEvent::Value(v)) => p.degradation.set_json(v),
                    (Category::Degradation, ConfigEvent::Deleted) => {
                        p.degradation.store(DegradationConfig::default())?;
                        return Ok(false);
                    }
                    (Category::Limit, _) => return Ok(false),
                }?;
                Ok(true)
            }
            Target::Server(w) => {
                let Some(p) = w.upgrade() else {
                    return Ok(false);
                };
                match (category, event) {
                    (Category::Limit, ConfigEvent::Value(v)) => {
                        p.limit.set_json(v)?;
                        Ok(true)
                    }
                    (Category::Limit, ConfigEvent::Deleted) => {
                        p.limit.store(LimitConfig::default())?;
                        Ok(false)
                    }
                    _ => Ok(false),
                }
            }
        }
    }
}

/// Starts one watch task per key; returns when each has handled the key's current state (or
/// after [`INITIAL_READ`]).
async fn watch_all(
    source: Arc<dyn ConfigSource>,
    target: Target,
    keys: Vec<(Category, String)>,
    status: ConfigStatus,
) {
    let mut first = Vec::new();
    for (category, key) in keys {
        let (tx, rx) = tokio::sync::oneshot::channel();
        first.push((key.clone(), rx));
        tokio::spawn(watch_one(
            source.clone(),
            target.clone(),
            category,
            key,
            status.clone(),
            tx,
        ));
    }
    // One deadline for all keys: an unreachable source delays building by INITIAL_READ once,
    // not once per key.
    let deadline = tokio::time::Instant::now() + INITIAL_READ;
    for (key, rx) in first {
        if tokio::time::timeout_at(deadline, rx).await.is_err() {
            tracing::warn!(
                source = source.name(),
                %key,
                "no answer from the config source yet; starting with the policy defaults"
            );
        }
    }
}

async fn watch_one(
    source: Arc<dyn ConfigSource>,
    target: Target,
    category: Category,
    key: String,
    status: ConfigStatus,
    first: tokio::sync::oneshot::Sender<()>,
) {
    let mut first = Some(first);
    let mut events = source.watch(&key);
    let mut check = tokio::time::interval(LIVENESS_CHECK);
    check.tick().await;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            _ = check.tick() => {
                if target.is_alive() { continue } else { break }
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(event) => {
                match target.apply(category, &event) {
                    Ok(true) => {
                        status.0.applied.fetch_add(1, Ordering::AcqRel);
                        tracing::info!(source = source.name(), %key, "config applied");
                        metrics::counter!("gannet.config.applied", "key" => key.clone())
                            .increment(1);
                    }
                    Ok(false) => {
                        status.0.restored.fetch_add(1, Ordering::AcqRel);
                        tracing::info!(
                            source = source.name(),
                            %key,
                            "config key absent; the default policy applies"
                        );
                    }
                    Err(e) => {
                        tracing::warn!(
                            source = source.name(),
                            %key,
                            error = %e,
                            "config value refused; keeping the policy in force"
                        );
                        metrics::counter!("gannet.config.rejected", "key" => key.clone())
                            .increment(1);
                        status.error(&status.0.rejected, format!("{key}: {e}"));
                    }
                }
                if let Some(tx) = first.take() {
                    let _ = tx.send(());
                }
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "config source unavailable; policies unchanged");
                metrics::counter!("gannet.config.source_errors", "key" => key.clone()).increment(1);
                status.error(&status.0.source_errors, e.to_string());
            }
        }
        if !target.is_alive() {
            break;
        }
    }
    tracing::debug!(%key, "config watch stopped");
}

/// A client suite whose policies follow the config source: `rpc_timeout`, `retry`,
/// `circuit_break` and `degradation` under `{client}/{server}/`.
///
/// Build it with [`ClientConfig::new`] (which reads the current values), then apply it with
/// `ClientBuilder::suite`. One `ClientConfig` serves one client: it carries that client's
/// policies.
pub struct ClientConfig {
    policies: Arc<ClientPolicies>,
    status: ConfigStatus,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ClientConfig {
    /// Reads the client's config from `source` (waiting up to a few seconds for an answer;
    /// defaults apply meanwhile) and keeps watching it.
    pub async fn new(source: impl ConfigSource, client: &str, server: &str) -> Self {
        Self::from_arc(Arc::new(source), client, server).await
    }

    /// As [`ClientConfig::new`], sharing a source.
    pub async fn from_arc(source: Arc<dyn ConfigSource>, client: &str, server: &str) -> Self {
        let policies = Arc::new(ClientPolicies::default());
        let status = ConfigStatus::default();
        let keys = Category::CLIENT
            .iter()
            .map(|c| (*c, source.client_key(client, server, *c)))
            .collect();
        watch_all(
            source,
            Target::Client(Arc::downgrade(&policies)),
            keys,
            status.clone(),
        )
        .await;
        Self { policies, status }
    }

    /// The policies this suite keeps current.
    #[must_use]
    pub fn policies(&self) -> &Arc<ClientPolicies> {
        &self.policies
    }

    /// What the watches did (keep a clone before applying the suite).
    #[must_use]
    pub fn status(&self) -> ConfigStatus {
        self.status.clone()
    }
}

impl ClientSuite for ClientConfig {
    fn apply<C>(self, builder: ClientBuilder<C>) -> ClientBuilder<C> {
        builder.policies(self.policies)
    }
}

/// A server suite whose `limit` (QPS and connections) follows `{server}/limit` in the source.
pub struct ServerConfig {
    policies: Arc<ServerPolicies>,
    status: ConfigStatus,
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl ServerConfig {
    /// Reads the server's config from `source` and keeps watching it.
    pub async fn new(source: impl ConfigSource, server: &str) -> Self {
        Self::from_arc(Arc::new(source), server).await
    }

    /// As [`ServerConfig::new`], sharing a source.
    pub async fn from_arc(source: Arc<dyn ConfigSource>, server: &str) -> Self {
        let policies = Arc::new(ServerPolicies::default());
        let status = ConfigStatus::default();
        let keys = vec![(Category::Limit, source.server_key(server, Category::Limit))];
        watch_all(
            source,
            Target::Server(Arc::downgrade(&policies)),
            keys,
            status.clone(),
        )
        .await;
        Self { policies, status }
    }

    /// The policies this suite keeps current.
    #[must_use]
    pub fn policies(&self) -> &Arc<ServerPolicies> {
        &self.policies
    }

    /// What the watch did.
    #[must_use]
    pub fn status(&self) -> ConfigStatus {
        self.status.clone()
    }
}

impl ServerSuite for ServerConfig {
    fn apply(self, builder: ServerBuilder) -> ServerBuilder {
        builder.policies(self.policies)
    }
}
