//! Config from Consul's KV store: key `k` is Consul key `{prefix}/k` (kitex-contrib's
//! config-consul layout, prefix `KitexConfig` by default), watched with blocking queries.
//!
//! The KV API is two requests (`GET /v1/kv/{key}?raw`, the same with `index` and `wait` to
//! block until it changes), made with `reqwest`.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;

use crate::watch::{Changes, report_failure, spawn_watch};
use crate::{ConfigError, ConfigEvent, ConfigSource};
use gannet_core::watch::Backoff;

/// kitex-contrib config-consul's default prefix.
pub const DEFAULT_PREFIX: &str = "KitexConfig";

/// How long one blocking query waits on the server before answering unchanged.
const WAIT: Duration = Duration::from_secs(30);

/// Config values in Consul's KV store.
///
/// ```no_run
/// # async fn run() {
/// use gannet_config_center::{ClientConfig, consul::ConsulSource};
/// let source = ConsulSource::new("http://127.0.0.1:8500");
/// // Consul key KitexConfig/frontend/echo/rpc_timeout holds {"*": {"rpc_timeout_ms": 300}}
/// let config = ClientConfig::new(source, "frontend", "echo").await;
/// # let _ = config; }
/// ```
#[derive(Clone)]
pub struct ConsulSource {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: String,
    prefix: String,
    token: Option<String>,
    name: String,
    http: reqwest::Client,
}

impl std::fmt::Debug for ConsulSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulSource")
            .field("endpoint", &self.inner.endpoint)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

/// A key's state and the index Consul reported with it.
struct Read {
    state: ConfigEvent,
    index: u64,
}

impl ConsulSource {
    /// A source on the Consul agent at `endpoint` (`http://host:port`), prefix
    /// [`DEFAULT_PREFIX`].
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self::build(endpoint.into(), DEFAULT_PREFIX.into(), None)
    }

    fn build(endpoint: String, prefix: String, token: Option<String>) -> Self {
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let prefix = prefix.trim_matches('/').to_string();
        let name = format!("consul:{endpoint}/{prefix}");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A blocking query answers within WAIT (plus Consul's jitter of WAIT/16).
            .timeout(WAIT + Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                endpoint,
                prefix,
                token,
                name,
                http,
            }),
        }
    }

    /// Uses `prefix` instead of [`DEFAULT_PREFIX`].
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(i.endpoint.clone(), prefix.into(), i.token.clone())
    }

    /// Sends `token` as the ACL token.
    #[must_use]
    pub fn token(self, token: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(i.endpoint.clone(), i.prefix.clone(), Some(token.into()))
    }

    /// The Consul key of config key `key`.
    #[must_use]
    pub fn consul_key(&self, key: &str) -> String {
        if self.inner.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.inner.prefix)
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(&self.inner.name, e.to_string())
    }

    /// Reads the key; with `index`, blocks until it changes past that index (or [`WAIT`]).
    async fn read(&self, key: &str, index: Option<u64>) -> Result<Read, ConfigError> {
        let i = &self.inner;
        let mut url = format!("{}/v1/kv/{key}?raw", i.endpoint);
        if let Some(index) = index {
            url.push_str(&format!("&index={index}&wait={}s", WAIT.as_secs()));
        }
        let mut req = i.http.get(&url);
        if let Some(t) = &i.token {
            req = req.header("X-Consul-Token", t);
        }
        let resp = req.send().await.map_err(|e| self.err(e))?;
        let index = resp
            .headers()
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let status = resp.status();
        let state = if status == reqwest::StatusCode::NOT_FOUND {
            ConfigEvent::Deleted
        } else if status.is_success() {
            let body = resp.bytes().await.map_err(|e| self.err(e))?;
            ConfigEvent::Value(
                String::from_utf8(body.to_vec())
                    .map_err(|_| self.err(format!("the value of {key} is not UTF-8")))?,
            )
        } else {
            let body = resp.text().await.unwrap_or_default();
            return Err(self.err(format!("GET {key}: {status}: {}", body.trim())));
        };
        Ok(Read { state, index })
    }
}

#[async_trait::async_trait]
impl ConfigSource for ConsulSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(match self.read(&self.consul_key(key), None).await?.state {
            ConfigEvent::Value(v) => Some(v),
            ConfigEvent::Deleted => None,
        })
    }

    fn watch(&self, key: &str) -> BoxStream<'static, Result<ConfigEvent, ConfigError>> {
        let source = self.clone();
        let key = self.consul_key(key);
        spawn_watch(|tx| async move {
            let mut changes = Changes::default();
            let mut index: Option<u64> = None;
            let mut backoff = Backoff::default();
            loop {
                let read = tokio::select! {
                    () = tx.closed() => return,
                    r = source.read(&key, index) => r,
                };
                match read {
                    Ok(r) => {
                        backoff.reset();
                        // An index that goes backwards (a restarted Consul) starts over.
                        index = match index {
                            Some(i) if r.index < i => Some(0),
                            _ => Some(r.index.max(1)),
                        };
                        if let Some(item) = changes.observe(Ok(r.state)) {
                            if tx.send(item).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // Read afresh (not blocking on an index a restarted agent may never
                        // reach) once it answers again.
                        index = None;
                        if !report_failure(&mut backoff, &tx, &key, e).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}
