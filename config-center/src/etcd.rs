//! Config from etcd: key `k` is etcd key `{prefix}/k` (kitex-contrib's config-etcd layout, prefix
//! `/KitexConfig` by default), watched with etcd's watch API from the revision it was read at.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, WatchOptions};
use futures::stream::BoxStream;

use crate::watch::{Changes, Tx, report_failure, spawn_watch};
use crate::{ConfigError, ConfigEvent, ConfigSource};
use gannet_core::watch::Backoff;

/// kitex-contrib config-etcd's default prefix.
pub const DEFAULT_PREFIX: &str = "/KitexConfig";

/// Config values in etcd.
///
/// ```no_run
/// # async fn run() {
/// use gannet_config_center::{ClientConfig, etcd::EtcdSource};
/// let source = EtcdSource::new(["http://127.0.0.1:2379"]);
/// // etcd key /KitexConfig/frontend/echo/rpc_timeout holds {"*": {"rpc_timeout_ms": 300}}
/// let config = ClientConfig::new(source, "frontend", "echo").await;
/// # let _ = config; }
/// ```
#[derive(Clone)]
pub struct EtcdSource {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    prefix: String,
    name: String,
    connect_timeout: Duration,
    request_timeout: Duration,
    auth: Option<(String, String)>,
    client: tokio::sync::Mutex<Option<Client>>,
}

impl std::fmt::Debug for EtcdSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdSource")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdSource {
    /// A source on the etcd cluster at `endpoints` (`http://host:port`), prefix
    /// [`DEFAULT_PREFIX`], connect and request timeouts of 5 s. Connects on first use.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self::build(
            endpoints.into_iter().map(Into::into).collect(),
            DEFAULT_PREFIX.into(),
            None,
            Duration::from_secs(5),
        )
    }

    fn build(
        endpoints: Vec<String>,
        prefix: String,
        auth: Option<(String, String)>,
        timeout: Duration,
    ) -> Self {
        let prefix = prefix.trim_end_matches('/').to_string();
        let name = format!("etcd:{}{}", endpoints.join(","), prefix);
        Self {
            inner: Arc::new(Inner {
                endpoints,
                prefix,
                name,
                connect_timeout: timeout,
                request_timeout: timeout,
                auth,
                client: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Uses `prefix` instead of [`DEFAULT_PREFIX`].
    #[must_use]
    pub fn prefix(self, prefix: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.endpoints.clone(),
            prefix.into(),
            i.auth.clone(),
            i.connect_timeout,
        )
    }

    /// Authenticates with `user` and `password`.
    #[must_use]
    pub fn auth(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.endpoints.clone(),
            i.prefix.clone(),
            Some((user.into(), password.into())),
            i.connect_timeout,
        )
    }

    /// The etcd key of config key `key`.
    #[must_use]
    pub fn etcd_key(&self, key: &str) -> String {
        format!("{}/{key}", self.inner.prefix)
    }

    fn err(&self, e: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(&self.inner.name, e.to_string())
    }

    /// The shared client, connecting if needed.
    async fn client(&self) -> Result<Client, ConfigError> {
        let mut slot = self.inner.client.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let i = &self.inner;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(i.connect_timeout)
            .with_timeout(i.request_timeout)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some((u, p)) = &i.auth {
            opts = opts.with_user(u.clone(), p.clone());
        }
        let c = tokio::time::timeout(
            i.connect_timeout,
            Client::connect(i.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| {
            self.err(format!(
                "connecting timed out after {:?}",
                i.connect_timeout
            ))
        })?
        .map_err(|e| self.err(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Forgets the client after an error, so the next use connects again.
    async fn reset(&self) {
        *self.inner.client.lock().await = None;
    }

    /// The key's state and the revision it was read at.
    async fn read(&self, key: &str) -> Result<(ConfigEvent, i64), ConfigError> {
        let mut c = self.client().await?;
        let resp = match c.get(key, None::<GetOptions>).await {
            Ok(r) => r,
            Err(e) => {
                self.reset().await;
                return Err(self.err(e));
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        let state = match resp.kvs().first() {
            Some(kv) => ConfigEvent::Value(
                String::from_utf8(kv.value().to_vec())
                    .map_err(|_| self.err(format!("the value of {key} is not UTF-8")))?,
            ),
            None => ConfigEvent::Deleted,
        };
        Ok((state, revision))
    }

    /// Reads `key`, sends its state if it changed, then follows its changes until the watch
    /// breaks (an error) or the receiver is gone (`Ok`).
    async fn follow(&self, key: &str, changes: &mut Changes, tx: &Tx) -> Result<(), ConfigError> {
        let (state, revision) = self.read(key).await?;
        if let Some(item) = changes.observe(Ok(state)) {
            if tx.send(item).await.is_err() {
                return Ok(());
            }
        }
        let mut c = self.client().await?;
        let opts = WatchOptions::new().with_start_revision(revision + 1);
        let mut stream = match c.watch(key, Some(opts)).await {
            Ok(w) => w,
            Err(e) => {
                self.reset().await;
                return Err(self.err(e));
            }
        };
        loop {
            let msg = tokio::select! {
                () = tx.closed() => return Ok(()),
                m = stream.message() => m,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Err(self.err("the watch stream ended")),
                Err(e) => {
                    self.reset().await;
                    return Err(self.err(e));
                }
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                return Err(self.err(format!(
                    "watch cancelled ({}); reading again",
                    resp.cancel_reason()
                )));
            }
            for ev in resp.events() {
                let state = match (ev.event_type(), ev.kv()) {
                    (EventType::Put, Some(kv)) => match String::from_utf8(kv.value().to_vec()) {
                        Ok(v) => ConfigEvent::Value(v),
                        Err(_) => {
                            let e = self.err(format!("the value of {key} is not UTF-8"));
                            if tx.send(Err(e)).await.is_err() {
                                return Ok(());
                            }
                            continue;
                        }
                    },
                    (EventType::Delete, _) => ConfigEvent::Deleted,
                    (EventType::Put, None) => continue,
                };
                if let Some(item) = changes.observe(Ok(state)) {
                    if tx.send(item).await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl ConfigSource for EtcdSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(match self.read(&self.etcd_key(key)).await?.0 {
            ConfigEvent::Value(v) => Some(v),
            ConfigEvent::Deleted => None,
        })
    }

    fn watch(&self, key: &str) -> BoxStream<'static, Result<ConfigEvent, ConfigError>> {
        let source = self.clone();
        let key = self.etcd_key(key);
        spawn_watch(|tx| async move {
            let mut changes = Changes::default();
            let mut backoff = Backoff::default();
            loop {
                match source.follow(&key, &mut changes, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        if !report_failure(&mut backoff, &tx, &key, e).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}
