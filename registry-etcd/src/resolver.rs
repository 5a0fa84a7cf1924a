//! Resolution by prefix listing, and push through a prefix watch.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{EventType, GetOptions, WatchOptions};
use futures::stream::BoxStream;
use gannet_core::ErrorKind;
use gannet_core::discovery::{Instance, Resolver, WatchSender, spawn_watch};
use gannet_core::watch::Backoff;

use crate::conn::Conn;
use crate::{Error, EtcdOptions, InstanceValue, check_service};

/// Finds instances in etcd under `{prefix}/{service}/`, and watches them.
#[derive(Debug, Clone)]
pub struct EtcdResolver {
    conn: Conn,
    name: String,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Discovery, "etcd resolver", e)
}

/// Parses one stored value; malformed values (written by someone else) are skipped and logged.
fn parse(key: &[u8], value: &[u8]) -> Option<Instance> {
    match InstanceValue::parse(value) {
        Ok(i) => Some(i),
        Err(why) => {
            tracing::warn!(key = %String::from_utf8_lossy(key), %why, "skipping a malformed etcd registry value");
            None
        }
    }
}

impl EtcdResolver {
    /// A resolver with `options`.
    #[must_use]
    pub fn new(options: EtcdOptions) -> Self {
        let name = format!(
            "etcd:{}/{}",
            options.endpoints_or_default().join(","),
            options.prefix
        );
        Self {
            conn: Conn::new(options),
            name,
        }
    }

    /// Lists the service: its instances by key, and the revision of the listing.
    async fn list(&self, service: &str) -> Result<(BTreeMap<Vec<u8>, Instance>, i64), Error> {
        check_service(service)?;
        let prefix = self.conn.opts.service_prefix(service);
        let resp = self
            .conn
            .run(|mut c| async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await })
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let map = resp
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key().to_vec(), parse(kv.key(), kv.value())?)))
            .collect();
        Ok((map, revision))
    }

    /// Lists, then follows the watch until it breaks; sends every new snapshot. Returns when
    /// the receiver is gone, or with why the watch broke.
    async fn follow(&self, service: &str, tx: &WatchSender) -> Result<(), Error> {
        let (mut map, revision) = self.list(service).await?;
        if tx.send(Ok(map.values().cloned().collect())).await.is_err() {
            return Ok(());
        }
        let prefix = self.conn.opts.service_prefix(service);
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut events = self
            .conn
            .run(|mut c| async move { c.watch(prefix, Some(opts)).await })
            .await?;
        loop {
            let msg = tokio::select! {
                () = tx.closed() => return Ok(()),
                msg = events.message() => msg?,
            };
            let Some(resp) = msg else {
                return Err(Error::Invalid("the watch stream ended".into()));
            };
            if resp.canceled() || resp.compact_revision() > 0 {
                // Compacted past our revision, or cancelled: list again.
                tracing::info!(%service, compact = resp.compact_revision(), "etcd watch restarted");
                return Err(Error::Invalid(format!(
                    "watch cancelled: {}",
                    resp.cancel_reason()
                )));
            }
            let mut changed = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                match ev.event_type() {
                    EventType::Put => match parse(kv.key(), kv.value()) {
                        Some(i) => {
                            changed |= map.insert(kv.key().to_vec(), i.clone()).as_ref() != Some(&i)
                        }
                        None => changed |= map.remove(kv.key()).is_some(),
                    },
                    EventType::Delete => changed |= map.remove(kv.key()).is_some(),
                }
            }
            if changed && tx.send(Ok(map.values().cloned().collect())).await.is_err() {
                return Ok(());
            }
        }
    }
}

#[async_trait]
impl Resolver for EtcdResolver {
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(&self, target: &str) -> gannet_core::Result<Vec<Instance>> {
        let (map, _) = self.list(target).await.map_err(to_core)?;
        Ok(map.into_values().collect())
    }

    fn watch(
        self: Arc<Self>,
        target: String,
    ) -> BoxStream<'static, gannet_core::Result<Vec<Instance>>> {
        spawn_watch(|tx| async move {
            let mut backoff = Backoff::default();
            loop {
                match self.follow(&target, &tx).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(service = %target, error = %e, retry_in = ?backoff.current(), "etcd watch broken; listing again");
                        if !backoff.report(&tx, to_core(e)).await {
                            return;
                        }
                    }
                }
            }
        })
    }
}
