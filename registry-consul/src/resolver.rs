//! Resolution through the health API (passing instances only), and push through blocking
//! queries.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use gannet_core::ErrorKind;
use gannet_core::discovery::{DEFAULT_WEIGHT, Instance, Resolver, WatchSender, spawn_watch};
use gannet_core::watch::Backoff;

use crate::api::{Api, HealthEntry};
use crate::{ConsulOptions, Error, TAG_SEPARATOR, check_service};

/// Finds the passing instances of a service in Consul, and watches them.
#[derive(Debug, Clone)]
pub struct ConsulResolver {
    api: Api,
    name: String,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Discovery, "consul resolver", e)
}

/// The instance an entry describes, by its service ID; entries Gannet cannot call (written
/// by other tools) are skipped and logged.
fn instance_of(service: &str, entry: HealthEntry) -> Option<(String, Instance)> {
    let Some(svc) = entry.service else {
        tracing::warn!(%service, "skipping a consul health entry without a service");
        return None;
    };
    // An instance registered without an address runs at its node's (Consul's own rule).
    let host = if svc.address.is_empty() {
        entry.node.map(|n| n.address).unwrap_or_default()
    } else {
        svc.address
    };
    let Ok(ip) = host.parse::<IpAddr>() else {
        tracing::warn!(%service, id = %svc.id, address = %host, "skipping a consul instance whose address is not an IP address");
        return None;
    };
    let Some(port) = u16::try_from(svc.port).ok().filter(|p| *p != 0) else {
        tracing::warn!(%service, id = %svc.id, port = svc.port, "skipping a consul instance with an invalid port");
        return None;
    };
    let weight = svc.weights.map_or(DEFAULT_WEIGHT, |w| {
        u32::try_from(w.passing.max(0)).unwrap_or(u32::MAX)
    });
    let mut instance = Instance::new(SocketAddr::new(ip, port)).with_weight(weight);
    for tag in svc.tags.unwrap_or_default() {
        // Tags of other tools without a separator carry no key: not Gannet's to read.
        if let Some((k, v)) = tag.split_once(TAG_SEPARATOR) {
            instance.tags.insert(k.to_string(), v.to_string());
        }
    }
    Some((svc.id, instance))
}

impl ConsulResolver {
    /// A resolver with `options`.
    #[must_use]
    pub fn new(options: ConsulOptions) -> Self {
        let mut name = format!("consul:{}", options.endpoint);
        if let Some(dc) = &options.datacenter {
            name.push_str("?dc=");
            name.push_str(dc);
        }
        Self {
            api: Api::new(options),
            name,
        }
    }

    /// The passing instances of `service` by service ID, and the index of the answer; with
    /// `index`, once they changed past it (or the blocking query's wait ran out).
    async fn list(
        &self,
        service: &str,
        index: Option<u64>,
    ) -> Result<(BTreeMap<String, Instance>, u64), Error> {
        check_service(service)?;
        let (entries, index) = self.api.health(service, index).await?;
        let map = entries
            .into_iter()
            .filter_map(|e| instance_of(service, e))
            .collect();
        Ok((map, index))
    }

    /// Sends a snapshot whenever the instances change, until the receiver is gone.
    async fn follow(self: Arc<Self>, target: String, tx: WatchSender) {
        let mut index: Option<u64> = None;
        let mut last: Option<Vec<Instance>> = None;
        let mut backoff = Backoff::default();
        loop {
            let read = tokio::select! {
                () = tx.closed() => return,
                r = self.list(&target, index) => r,
            };
            match read {
                Ok((map, new)) => {
                    backoff.reset();
                    // An index that went backwards (a restarted Consul) starts over with a
                    // plain read; Consul's indexes start at 1.
                    index = match index {
                        Some(old) if new < old => None,
                        _ => Some(new.max(1)),
                    };
                    let snapshot: Vec<Instance> = map.into_values().collect();
                    if last.as_ref() != Some(&snapshot) {
                        last = Some(snapshot.clone());
                        if tx.send(Ok(snapshot)).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %target, error = %e, retry_in = ?backoff.current(), "consul watch broken; reading again");
                    // Read afresh: a restarted agent may never reach the old index.
                    index = None;
                    if !backoff.report(&tx, to_core(e)).await {
                        return;
                    }
                }
            }
        }
    }
}

#[async_trait]
impl Resolver for ConsulResolver {
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(&self, target: &str) -> gannet_core::Result<Vec<Instance>> {
        let (map, _) = self.list(target, None).await.map_err(to_core)?;
        Ok(map.into_values().collect())
    }

    fn watch(
        self: Arc<Self>,
        target: String,
    ) -> BoxStream<'static, gannet_core::Result<Vec<Instance>>> {
        spawn_watch(|tx| self.follow(target, tx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(json: &str) -> Vec<HealthEntry> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn entries_become_instances_with_weights_and_tags() {
        let e = entries(
            r#"[{"Node":{"Address":"10.0.0.1"},
                 "Service":{"ID":"echo:10.0.0.2:80","Address":"10.0.0.2","Port":80,
                            "Tags":["zone:a","version:v1:rc","plain"],
                            "Weights":{"Passing":37,"Warning":1}}}]"#,
        );
        let (id, i) = instance_of("echo", e.into_iter().next().unwrap()).unwrap();
        assert_eq!(id, "echo:10.0.0.2:80");
        assert_eq!(i.address, "10.0.0.2:80".parse().unwrap());
        assert_eq!(i.weight, 37);
        assert_eq!(i.tags.len(), 2);
        assert_eq!(i.tags["zone"], "a");
        assert_eq!(i.tags["version"], "v1:rc");
    }

    #[test]
    fn an_instance_without_an_address_runs_at_its_node() {
        let e = entries(r#"[{"Node":{"Address":"10.0.0.1"},"Service":{"ID":"x","Port":81}}]"#);
        let (_, i) = instance_of("echo", e.into_iter().next().unwrap()).unwrap();
        assert_eq!(i.address, "10.0.0.1:81".parse().unwrap());
        assert_eq!(i.weight, DEFAULT_WEIGHT);
    }

    #[test]
    fn entries_gannet_cannot_call_are_skipped() {
        let e = entries(
            r#"[{"Service":{"ID":"host","Address":"db.internal","Port":80}},
                {"Service":{"ID":"port","Address":"10.0.0.2","Port":70000}},
                {"Service":{"ID":"zero","Address":"10.0.0.2","Port":0}},
                {"Node":{"Address":"10.0.0.1"}},
                {"Service":{"ID":"ok","Address":"::1","Port":9}}]"#,
        );
        let ok: Vec<_> = e
            .into_iter()
            .filter_map(|e| instance_of("echo", e))
            .collect();
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].1.address, "[::1]:9".parse().unwrap());
    }
}
