//! Registration with a TTL check kept passing, and registration again when the agent forgot it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use gannet_core::watch::Backoff;
use gannet_core::{ErrorKind, Registry, RegistryInfo};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, Registration, TtlCheck, Weights};
use crate::{ConsulOptions, Error, TAG_SEPARATOR, check_service};

/// Registers servers with a Consul agent, each with a TTL check it keeps passing.
///
/// Cheap to clone; clones share the HTTP client and the registrations.
#[derive(Debug, Clone)]
pub struct ConsulRegistry {
    api: Api,
    /// The heartbeat of each registered service ID.
    live: Arc<Mutex<HashMap<String, Heartbeat>>>,
}

/// The task keeping one registration's check passing.
#[derive(Debug)]
struct Heartbeat {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Registry, "consul registry", e)
}

impl ConsulRegistry {
    /// A registry with `options`.
    #[must_use]
    pub fn new(options: ConsulOptions) -> Self {
        Self {
            api: Api::new(options),
            live: Arc::default(),
        }
    }

    /// The service ID of `info`: kitex-contrib's `{service}:{host}:{port}`.
    fn id(info: &RegistryInfo) -> String {
        format!(
            "{}:{}:{}",
            info.service_name,
            info.address.ip(),
            info.address.port()
        )
    }

    /// What to register for `info`, or why Consul cannot hold it.
    fn registration(&self, info: &RegistryInfo) -> Result<Registration, Error> {
        check_service(&info.service_name)?;
        if info.weight == 0 {
            // Consul's weights start at 1; a weight of 0 would silently take traffic.
            return Err(Error::Invalid(
                "Consul cannot hold a weight of 0 (its weights start at 1)".into(),
            ));
        }
        let mut tags = Vec::with_capacity(info.tags.len());
        for (k, v) in &info.tags {
            if k.is_empty() || k.contains(TAG_SEPARATOR) {
                return Err(Error::Invalid(format!(
                    "tag key {k:?}: Consul tags are `key{TAG_SEPARATOR}value`, so a key must be non-empty and without {TAG_SEPARATOR:?}"
                )));
            }
            tags.push(format!("{k}{TAG_SEPARATOR}{v}"));
        }
        tags.sort();
        let id = Self::id(info);
        let weight = i64::from(info.weight);
        Ok(Registration {
            check: TtlCheck::of(&id, &self.api.opts),
            id,
            name: info.service_name.clone(),
            address: info.address.ip().to_string(),
            port: info.address.port(),
            tags,
            weights: Weights {
                passing: weight,
                warning: weight,
            },
        })
    }
}

/// Marks the check passing every third of the TTL until `stop`; when that fails (the agent
/// restarted, the service was deregistered behind our back or reaped), registers again.
async fn keep_passing(api: Api, reg: Registration, stop: CancellationToken) {
    let every = api.opts.ttl / 3;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let passed = tokio::select! {
            () = stop.cancelled() => return,
            r = api.pass(&reg.id) => r,
        };
        let Err(why) = passed else {
            continue;
        };
        tracing::warn!(id = %reg.id, %why, "consul check not passed; registering again");
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            let registered = tokio::select! {
                () = stop.cancelled() => return,
                r = api.register(&reg) => r,
            };
            match registered {
                Ok(()) => {
                    tracing::info!(id = %reg.id, "registered in consul again");
                    break;
                }
                Err(e) => {
                    tracing::warn!(id = %reg.id, error = %e, retry_in = ?backoff.current(), "consul re-registration failed");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(backoff.advance()) => {}
            }
        }
    }
}

#[async_trait]
impl Registry for ConsulRegistry {
    async fn register(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        let reg = self.registration(info).map_err(to_core)?;
        self.api.register(&reg).await.map_err(to_core)?;
        tracing::info!(id = %reg.id, ttl = ?self.api.opts.ttl, "registered in consul");
        let id = reg.id.clone();
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_passing(self.api.clone(), reg, stop.clone()));
        let previous = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Heartbeat { stop, task });
        if let Some(p) = previous {
            p.stop.cancel();
        }
        Ok(())
    }

    async fn deregister(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        check_service(&info.service_name).map_err(to_core)?;
        let id = Self::id(info);
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(h) = live {
            // Wait for the heartbeat to stop, so that a registration it had in flight cannot
            // land after the deregistration below.
            h.stop.cancel();
            let _ = h.task.await;
        }
        match self.api.deregister(&id).await {
            Ok(()) => {}
            // Gone already (the agent restarted, or it was reaped): what was asked holds.
            Err(Error::Status { status: 404, .. }) => {
                tracing::debug!(%id, "consul did not know the service any more");
            }
            Err(e) => return Err(to_core(e)),
        }
        tracing::info!(%id, "deregistered from consul");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RegistryInfo {
        RegistryInfo::new("echo", "10.0.0.7:8888".parse().unwrap())
    }

    #[test]
    fn registrations_use_kitex_contribs_id_tags_and_weights() {
        let r = ConsulRegistry::new(ConsulOptions::new());
        let mut i = info();
        i.weight = 25;
        i.tags.insert("zone".into(), "a".into());
        i.tags.insert("version".into(), "v1:rc".into());
        let reg = r.registration(&i).unwrap();
        assert_eq!(reg.id, "echo:10.0.0.7:8888");
        assert_eq!((reg.address.as_str(), reg.port), ("10.0.0.7", 8888));
        assert_eq!(reg.tags, ["version:v1:rc", "zone:a"]);
        assert_eq!(
            reg.weights,
            Weights {
                passing: 25,
                warning: 25
            }
        );
    }

    #[test]
    fn what_consul_cannot_hold_is_refused() {
        let r = ConsulRegistry::new(ConsulOptions::new());
        let mut zero = info();
        zero.weight = 0;
        assert!(matches!(r.registration(&zero), Err(Error::Invalid(_))));
        let mut colon = info();
        colon.tags.insert("a:b".into(), "c".into());
        assert!(matches!(r.registration(&colon), Err(Error::Invalid(_))));
        let nameless = RegistryInfo::new("", "10.0.0.7:1".parse().unwrap());
        assert!(matches!(r.registration(&nameless), Err(Error::Invalid(_))));
    }
}
