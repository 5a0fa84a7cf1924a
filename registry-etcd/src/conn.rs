//! One lazily opened etcd connection, shared by clones, with per-request timeouts.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::OnceCell;

use crate::{Error, EtcdOptions};

#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) opts: Arc<EtcdOptions>,
    client: Arc<OnceCell<Client>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("endpoints", &self.opts.endpoints_or_default())
            .field("prefix", &self.opts.prefix)
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(opts: EtcdOptions) -> Self {
        Self {
            opts: Arc::new(opts),
            client: Arc::new(OnceCell::new()),
        }
    }

    /// The client, connecting on first use.
    pub(crate) async fn client(&self) -> Result<Client, Error> {
        let opts = &self.opts;
        let client = self
            .client
            .get_or_try_init(|| async {
                let mut co = ConnectOptions::new()
                    .with_connect_timeout(opts.connect_timeout)
                    .with_timeout(opts.request_timeout)
                    .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
                if let Some((user, password)) = &opts.user {
                    co = co.with_user(user.clone(), password.clone());
                }
                #[cfg(feature = "tls")]
                if let Some(tls) = &opts.tls {
                    co = co.with_tls(tls.clone());
                }
                let endpoints = opts.endpoints_or_default();
                let connect = Client::connect(endpoints, Some(co));
                match tokio::time::timeout(opts.connect_timeout, connect).await {
                    Ok(res) => res.map_err(Error::from),
                    Err(_) => Err(Error::Timeout(opts.connect_timeout)),
                }
            })
            .await?;
        Ok(client.clone())
    }

    /// Runs one request with the request timeout.
    pub(crate) async fn run<T, F>(&self, f: impl FnOnce(Client) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let client = self.client().await?;
        let t = self.opts.request_timeout;
        match tokio::time::timeout(t, f(client)).await {
            Ok(res) => res.map_err(Error::from),
            Err(_) => Err(Error::Timeout(t)),
        }
    }
}
