//! Registration with a lease kept alive, and re-registration when the lease is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::PutOptions;
use gannet_core::watch::Backoff;
use gannet_core::{ErrorKind, Registry, RegistryInfo};
use tokio_util::sync::CancellationToken;

use crate::conn::Conn;
use crate::{Error, EtcdOptions, InstanceValue, check_service};

/// Registers servers in etcd under `{prefix}/{service}/{host:port}` with a lease.
///
/// Cheap to clone; clones share the connection and the registrations.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    conn: Conn,
    live: Arc<Mutex<HashMap<String, Live>>>,
}

#[derive(Debug)]
struct Live {
    stop: CancellationToken,
    lease: Arc<AtomicI64>,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Registry, "etcd registry", e)
}

impl EtcdRegistry {
    /// A registry with `options`.
    #[must_use]
    pub fn new(options: EtcdOptions) -> Self {
        Self {
            conn: Conn::new(options),
            live: Arc::default(),
        }
    }

    fn key(&self, info: &RegistryInfo) -> String {
        format!(
            "{}{}",
            self.conn.opts.service_prefix(&info.service_name),
            info.address
        )
    }

    /// Grants a lease and writes the key under it; returns the lease id.
    async fn put(conn: &Conn, key: &str, value: &str) -> Result<i64, Error> {
        let ttl = conn.opts.ttl.as_secs() as i64;
        let lease = conn
            .run(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?
            .id();
        let (k, v) = (key.to_string(), value.to_string());
        conn.run(
            |mut c| async move { c.put(k, v, Some(PutOptions::new().with_lease(lease))).await },
        )
        .await?;
        Ok(lease)
    }
}

/// Keeps `lease` alive until `stop`; when the lease is lost, registers again with a new one.
async fn keep_registered(
    conn: Conn,
    key: String,
    value: String,
    lease: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let id = lease.load(Ordering::Acquire);
        let why = tokio::select! {
            () = stop.cancelled() => return,
            why = keep_alive(&conn, id) => why,
        };
        tracing::warn!(%key, lease = id, %why, "etcd lease lost; registering again");
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff.current()) => {}
            }
            match EtcdRegistry::put(&conn, &key, &value).await {
                Ok(new) => {
                    lease.store(new, Ordering::Release);
                    backoff.reset();
                    tracing::info!(%key, lease = new, "registered in etcd again");
                    break;
                }
                Err(e) => {
                    backoff.advance();
                    tracing::warn!(%key, error = %e, retry_in = ?backoff.current(), "etcd re-registration failed");
                }
            }
        }
    }
}

/// Refreshes `id` every third of the TTL; returns why it stopped being alive.
async fn keep_alive(conn: &Conn, id: i64) -> String {
    let (mut keeper, mut responses) = match conn
        .run(|mut c| async move { c.lease_keep_alive(id).await })
        .await
    {
        Ok(pair) => pair,
        Err(e) => return e.to_string(),
    };
    let every = conn.opts.ttl / 3;
    loop {
        if let Err(e) = keeper.keep_alive().await {
            return e.to_string();
        }
        match tokio::time::timeout(conn.opts.request_timeout, responses.message()).await {
            Ok(Ok(Some(resp))) if resp.ttl() > 0 => {}
            Ok(Ok(Some(_))) => return "the lease expired or was revoked".into(),
            Ok(Ok(None)) => return "the keep-alive stream ended".into(),
            Ok(Err(e)) => return e.to_string(),
            Err(_) => {
                return format!(
                    "no keep-alive answer within {:?}",
                    conn.opts.request_timeout
                );
            }
        }
        tokio::time::sleep(every).await;
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn register(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        check_service(&info.service_name).map_err(to_core)?;
        let key = self.key(info);
        let value = serde_json::to_string(&InstanceValue {
            network: "tcp".into(),
            address: info.address.to_string(),
            weight: info.weight,
            tags: info.tags.clone(),
        })
        .map_err(|e| {
            gannet_core::Error::with_source(ErrorKind::Registry, "encoding the etcd value", e)
        })?;
        let id = Self::put(&self.conn, &key, &value).await.map_err(to_core)?;
        let lease = Arc::new(AtomicI64::new(id));
        let stop = CancellationToken::new();
        let previous = self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key.clone(),
            Live {
                stop: stop.clone(),
                lease: lease.clone(),
            },
        );
        if let Some(p) = previous {
            p.stop.cancel();
        }
        tracing::info!(%key, lease = id, "registered in etcd");
        tokio::spawn(keep_registered(self.conn.clone(), key, value, lease, stop));
        Ok(())
    }

    async fn deregister(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        check_service(&info.service_name).map_err(to_core)?;
        let key = self.key(info);
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        if let Some(live) = &live {
            live.stop.cancel();
        }
        let k = key.clone();
        self.conn
            .run(|mut c| async move { c.delete(k, None).await })
            .await
            .map_err(to_core)?;
        if let Some(live) = live {
            let id = live.lease.load(Ordering::Acquire);
            if let Err(e) = self
                .conn
                .run(|mut c| async move { c.lease_revoke(id).await })
                .await
            {
                tracing::debug!(%key, error = %e, "revoking the lease failed (the key is deleted)");
            }
        }
        tracing::info!(%key, "deregistered from etcd");
        Ok(())
    }
}
