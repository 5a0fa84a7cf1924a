//! Config from Nacos: client key `{client}/{server}/{category}` is data id
//! `{client}.{server}.{category}` and server key `{server}/{category}` is `{server}.{category}`,
//! in group `DEFAULT_GROUP` (kitex-contrib's config-nacos layout).
//!
//! Changes are pushed through `nacos-sdk`'s config listener. nacos-sdk 0.8 never reports a
//! deleted config (its listener stays silent and its cache keeps the old value), so the watch
//! also reads the config through Nacos's open API (`GET /nacos/v1/cs/configs`, 404 = absent)
//! every two seconds: that read is what notices deletes, and outages.

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use nacos_sdk::api::config::{
    ConfigChangeListener, ConfigResponse, ConfigService, ConfigServiceBuilder,
};
use nacos_sdk::api::props::ClientProps;
use tokio::sync::mpsc;

use crate::watch::{Changes, spawn_watch};
use crate::{ConfigError, ConfigEvent, ConfigSource};

/// kitex-contrib config-nacos's default group.
pub const DEFAULT_GROUP: &str = "DEFAULT_GROUP";

/// How often a watch reads the config through the open API.
const POLL: Duration = Duration::from_secs(2);

/// Config values in Nacos.
///
/// ```no_run
/// # async fn run() {
/// use gannet_config_center::{ClientConfig, nacos::NacosSource};
/// // the Nacos HTTP address; the SDK derives the gRPC port (HTTP + 1000)
/// let source = NacosSource::new("127.0.0.1:8848");
/// // data id frontend.echo.rpc_timeout in DEFAULT_GROUP holds {"*": {"rpc_timeout_ms": 300}}
/// let config = ClientConfig::new(source, "frontend", "echo").await;
/// # let _ = config; }
/// ```
#[derive(Clone)]
pub struct NacosSource {
    inner: Arc<Inner>,
}

struct Inner {
    addr: String,
    group: String,
    namespace: String,
    auth: Option<(String, String)>,
    name: String,
    http: reqwest::Client,
    service: tokio::sync::OnceCell<ConfigService>,
    token: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for NacosSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NacosSource")
            .field("addr", &self.inner.addr)
            .field("group", &self.inner.group)
            .field("namespace", &self.inner.namespace)
            .finish_non_exhaustive()
    }
}

/// Forwards the SDK's pushes to a watch task.
struct Pushes(mpsc::UnboundedSender<String>);

impl ConfigChangeListener for Pushes {
    fn notify(&self, config_resp: ConfigResponse) {
        let _ = self.0.send(config_resp.content().clone());
    }
}

impl NacosSource {
    /// A source on the Nacos server whose HTTP address is `addr` (`host:port`), group
    /// [`DEFAULT_GROUP`], the public namespace. Connects on first use.
    pub fn new(addr: impl Into<String>) -> Self {
        Self::build(addr.into(), DEFAULT_GROUP.into(), String::new(), None)
    }

    fn build(
        addr: String,
        group: String,
        namespace: String,
        auth: Option<(String, String)>,
    ) -> Self {
        let addr = addr
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let name = format!("nacos:{addr}/{namespace}/{group}");
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                addr,
                group,
                namespace,
                auth,
                name,
                http,
                service: tokio::sync::OnceCell::new(),
                token: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// Uses `group` instead of [`DEFAULT_GROUP`].
    #[must_use]
    pub fn group(self, group: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.addr.clone(),
            group.into(),
            i.namespace.clone(),
            i.auth.clone(),
        )
    }

    /// Uses the namespace (tenant) with id `namespace` instead of the public one.
    #[must_use]
    pub fn namespace(self, namespace: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.addr.clone(),
            i.group.clone(),
            namespace.into(),
            i.auth.clone(),
        )
    }

    /// Logs in with `user` and `password`.
    #[must_use]
    pub fn auth(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        let i = &self.inner;
        Self::build(
            i.addr.clone(),
            i.group.clone(),
            i.namespace.clone(),
            Some((user.into(), password.into())),
        )
    }

    fn err(&self, e: impl std::fmt::Display) -> ConfigError {
        ConfigError::new(&self.inner.name, e.to_string())
    }

    /// The SDK's config service, built on first use (and again after a failed build).
    async fn service(&self) -> Result<&ConfigService, ConfigError> {
        let i = &self.inner;
        i.service
            .get_or_try_init(|| async {
                let mut props = ClientProps::new()
                    .server_addr(i.addr.clone())
                    .namespace(i.namespace.clone())
                    .app_name("gannet-config-center");
                let builder = match &i.auth {
                    Some((u, p)) => {
                        props = props.auth_username(u.clone()).auth_password(p.clone());
                        ConfigServiceBuilder::new(props).enable_auth_plugin_http()
                    }
                    None => ConfigServiceBuilder::new(props),
                };
                builder.build().await.map_err(|e| self.err(e))
            })
            .await
    }

    /// An access token for the open API, when the source logs in.
    async fn token(&self, refresh: bool) -> Result<Option<String>, ConfigError> {
        let i = &self.inner;
        let Some((user, password)) = &i.auth else {
            return Ok(None);
        };
        let mut slot = i.token.lock().await;
        if let (Some(t), false) = (&*slot, refresh) {
            return Ok(Some(t.clone()));
        }
        let resp = i
            .http
            .post(format!("http://{}/nacos/v1/auth/login", i.addr))
            .form(&[("username", user.as_str()), ("password", password.as_str())])
            .send()
            .await
            .map_err(|e| self.err(e))?;
        let body = resp.text().await.map_err(|e| self.err(e))?;
        let token = body
            .split("\"accessToken\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .ok_or_else(|| self.err("login to Nacos failed: no access token in the answer"))?
            .to_string();
        *slot = Some(token.clone());
        Ok(Some(token))
    }

    /// Reads a data id through the open API: the authoritative state, deletes included.
    async fn read(&self, data_id: &str) -> Result<ConfigEvent, ConfigError> {
        let i = &self.inner;
        for attempt in 0..2 {
            let mut query = vec![("dataId", data_id), ("group", i.group.as_str())];
            if !i.namespace.is_empty() {
                query.push(("tenant", i.namespace.as_str()));
            }
            let token = self.token(attempt > 0).await?;
            if let Some(t) = &token {
                query.push(("accessToken", t.as_str()));
            }
            let resp = i
                .http
                .get(format!("http://{}/nacos/v1/cs/configs", i.addr))
                .query(&query)
                .send()
                .await
                .map_err(|e| self.err(e))?;
            let status = resp.status();
            if status == reqwest::StatusCode::NOT_FOUND {
                return Ok(ConfigEvent::Deleted);
            }
            if status.is_success() {
                return Ok(ConfigEvent::Value(
                    resp.text().await.map_err(|e| self.err(e))?,
                ));
            }
            let denied = status == reqwest::StatusCode::FORBIDDEN
                || status == reqwest::StatusCode::UNAUTHORIZED;
            if !(denied && token.is_some() && attempt == 0) {
                let body = resp.text().await.unwrap_or_default();
                return Err(self.err(format!("reading {data_id}: {status}: {}", body.trim())));
            }
        }
        Err(self.err(format!("reading {data_id}: access denied")))
    }
}

/// The data id of a config key (`a/b/c` → `a.b.c`).
#[must_use]
pub fn data_id(key: &str) -> String {
    key.replace('/', ".")
}

#[async_trait::async_trait]
impl ConfigSource for NacosSource {
    fn name(&self) -> &str {
        &self.inner.name
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(match self.read(&data_id(key)).await? {
            ConfigEvent::Value(v) => Some(v),
            ConfigEvent::Deleted => None,
        })
    }

    fn watch(&self, key: &str) -> BoxStream<'static, Result<ConfigEvent, ConfigError>> {
        let source = self.clone();
        let data_id = data_id(key);
        spawn_watch(|tx| async move {
            let (ptx, mut pushes) = mpsc::unbounded_channel();
            let listener: Arc<dyn ConfigChangeListener> = Arc::new(Pushes(ptx));
            let group = source.inner.group.clone();
            let mut listening = false;
            let mut changes = Changes::default();
            let mut poll = tokio::time::interval(POLL);
            loop {
                let read = tokio::select! {
                    () = tx.closed() => break,
                    Some(content) = pushes.recv() => Ok(ConfigEvent::Value(content)),
                    _ = poll.tick() => source.read(&data_id).await,
                };
                if let Some(item) = changes.observe(read) {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
                // After the first read, so a slow SDK start does not delay it.
                if !listening {
                    if let Ok(svc) = source.service().await {
                        listening = svc
                            .add_listener(data_id.clone(), group.clone(), listener.clone())
                            .await
                            .is_ok();
                    }
                }
            }
            if listening {
                if let Ok(svc) = source.service().await {
                    let _ = svc.remove_listener(data_id, group, listener).await;
                }
            }
        })
    }
}
