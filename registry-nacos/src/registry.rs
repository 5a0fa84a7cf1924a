//! Ephemeral registration, checked while it lives and made again when Nacos lost it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gannet_core::{ErrorKind, Registry, RegistryInfo};
use tokio_util::sync::CancellationToken;

use crate::naming::{is_at, run, to_nacos};
use crate::{Error, NacosOptions, check_service};

/// Registers servers in Nacos as ephemeral instances.
///
/// Cheap to clone; clones share the naming client and the registrations.
#[derive(Debug, Clone)]
pub struct NacosRegistry {
    opts: NacosOptions,
    /// The check of each registered (service, address).
    live: Arc<Mutex<HashMap<(String, SocketAddr), Check>>>,
}

/// The task checking that one registration is still there.
#[derive(Debug)]
struct Check {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Registry, "nacos registry", e)
}

impl NacosRegistry {
    /// A registry with `options`.
    #[must_use]
    pub fn new(options: NacosOptions) -> Self {
        Self {
            opts: options,
            live: Arc::default(),
        }
    }

    async fn register_once(opts: &NacosOptions, info: &RegistryInfo) -> Result<(), Error> {
        let naming = opts.naming.get(opts).await?;
        run(
            &format!("registering {} at {}", info.service_name, info.address),
            opts.request_timeout,
            naming.register_instance(
                info.service_name.clone(),
                Some(opts.group.clone()),
                to_nacos(info, &opts.cluster),
            ),
        )
        .await
    }

    /// Whether Nacos lists the instance of `info`.
    async fn listed(opts: &NacosOptions, info: &RegistryInfo) -> Result<bool, Error> {
        let naming = opts.naming.get(opts).await?;
        let list = run(
            &format!("listing {}", info.service_name),
            opts.request_timeout,
            naming.get_all_instances(
                info.service_name.clone(),
                Some(opts.group.clone()),
                vec![opts.cluster.clone()],
                false,
            ),
        )
        .await?;
        Ok(list.iter().any(|i| is_at(i, info.address)))
    }
}

/// Every `check_every` until `stop`: if Nacos no longer lists the instance (removed by an
/// operator or another tool; `nacos-sdk` itself registers again after a reconnect), registers
/// it again.
async fn keep_listed(opts: NacosOptions, info: RegistryInfo, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(opts.check_every) => {}
        }
        let listed = tokio::select! {
            () = stop.cancelled() => return,
            r = NacosRegistry::listed(&opts, &info) => r,
        };
        match listed {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(service = %info.service_name, address = %info.address, "nacos no longer lists the instance; registering again");
                let again = tokio::select! {
                    () = stop.cancelled() => return,
                    r = NacosRegistry::register_once(&opts, &info) => r,
                };
                match again {
                    Ok(()) => {
                        tracing::info!(service = %info.service_name, address = %info.address, "registered in nacos again");
                    }
                    Err(e) => {
                        tracing::warn!(service = %info.service_name, error = %e, "nacos re-registration failed; trying at the next check");
                    }
                }
            }
            // Unreachable: nacos-sdk reconnects and registers again by itself.
            Err(e) => {
                tracing::debug!(service = %info.service_name, error = %e, "nacos registration check failed");
            }
        }
    }
}

#[async_trait]
impl Registry for NacosRegistry {
    async fn register(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        check_service(&info.service_name).map_err(to_core)?;
        Self::register_once(&self.opts, info)
            .await
            .map_err(to_core)?;
        tracing::info!(service = %info.service_name, address = %info.address, group = %self.opts.group, "registered in nacos");
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_listed(self.opts.clone(), info.clone(), stop.clone()));
        let previous = self.live.lock().unwrap_or_else(|p| p.into_inner()).insert(
            (info.service_name.clone(), info.address),
            Check { stop, task },
        );
        if let Some(p) = previous {
            p.stop.cancel();
        }
        Ok(())
    }

    async fn deregister(&self, info: &RegistryInfo) -> gannet_core::Result<()> {
        check_service(&info.service_name).map_err(to_core)?;
        let live = self
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(info.service_name.clone(), info.address));
        if let Some(c) = live {
            // Wait for the check to stop, so that a registration it had in flight cannot
            // land after the deregistration below.
            c.stop.cancel();
            let _ = c.task.await;
        }
        let naming = self.opts.naming.get(&self.opts).await.map_err(to_core)?;
        run(
            &format!("deregistering {} at {}", info.service_name, info.address),
            self.opts.request_timeout,
            naming.deregister_instance(
                info.service_name.clone(),
                Some(self.opts.group.clone()),
                to_nacos(info, &self.opts.cluster),
            ),
        )
        .await
        .map_err(to_core)?;
        tracing::info!(service = %info.service_name, address = %info.address, "deregistered from nacos");
        Ok(())
    }
}
