//! Resolution by listing healthy instances, and push through a subscription (with a periodic
//! read in case a push was lost).

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use gannet_core::ErrorKind;
use gannet_core::discovery::{Instance, Resolver, WatchSender, spawn_watch};
use gannet_core::watch::Backoff;
use nacos_sdk::api::naming::{NamingChangeEvent, NamingEventListener, ServiceInstance};
use tokio::sync::mpsc;

use crate::naming::{from_nacos, run};
use crate::{Error, NacosOptions, check_service};

/// Finds the healthy instances of a service in Nacos, and watches them.
#[derive(Debug, Clone)]
pub struct NacosResolver {
    opts: NacosOptions,
    name: String,
}

fn to_core(e: Error) -> gannet_core::Error {
    gannet_core::Error::with_source(ErrorKind::Discovery, "nacos resolver", e)
}

/// Forwards `nacos-sdk`'s pushes to a watch task.
struct Pushes(mpsc::UnboundedSender<Vec<ServiceInstance>>);

impl NamingEventListener for Pushes {
    fn event(&self, event: Arc<NamingChangeEvent>) {
        if let Some(list) = &event.instances {
            let _ = self.0.send(list.clone());
        }
    }
}

impl NacosResolver {
    /// A resolver with `options`.
    #[must_use]
    pub fn new(options: NacosOptions) -> Self {
        let name = format!(
            "nacos:{}/{}/{}/{}",
            options.addr, options.namespace, options.group, options.cluster
        );
        Self {
            opts: options,
            name,
        }
    }

    /// The callable instances among `list`, in a stable order.
    fn snapshot(&self, service: &str, list: &[ServiceInstance]) -> Vec<Instance> {
        let mut out: Vec<Instance> = list
            .iter()
            .filter(|i| {
                i.cluster_name
                    .as_deref()
                    .is_none_or(|c| c == self.opts.cluster)
            })
            .filter_map(|i| from_nacos(service, i))
            .collect();
        out.sort_by_key(|i| i.address);
        out
    }

    async fn list(&self, service: &str) -> Result<Vec<Instance>, Error> {
        check_service(service)?;
        let naming = self.opts.naming.get(&self.opts).await?;
        let list = run(
            &format!("listing {service}"),
            self.opts.request_timeout,
            naming.get_all_instances(
                service.to_string(),
                Some(self.opts.group.clone()),
                vec![self.opts.cluster.clone()],
                false,
            ),
        )
        .await?;
        Ok(self.snapshot(service, &list))
    }

    /// Subscribes to `service`'s pushes into `listener`.
    async fn subscribe(&self, service: &str, listener: Arc<Pushes>) -> Result<(), Error> {
        let naming = self.opts.naming.get(&self.opts).await?;
        run(
            &format!("subscribing to {service}"),
            self.opts.request_timeout,
            naming.subscribe(
                service.to_string(),
                Some(self.opts.group.clone()),
                vec![self.opts.cluster.clone()],
                listener,
            ),
        )
        .await
    }

    /// Sends a snapshot whenever the instances change, until the receiver is gone.
    async fn follow(self: Arc<Self>, target: String, tx: WatchSender) {
        let (push_tx, mut pushes) = mpsc::unbounded_channel();
        let listener = Arc::new(Pushes(push_tx));
        let mut subscribed = false;
        let mut last: Option<Vec<Instance>> = None;
        let mut backoff = Backoff::default();
        // The first read now; later ones every `check_every`, or sooner while failing.
        let mut next_read = tokio::time::Instant::now();
        loop {
            if !subscribed && check_service(&target).is_ok() {
                match self.subscribe(&target, listener.clone()).await {
                    Ok(()) => subscribed = true,
                    Err(e) => {
                        tracing::debug!(service = %target, error = %e, "nacos subscription failed; reading periodically meanwhile");
                    }
                }
            }
            let snapshot = tokio::select! {
                () = tx.closed() => break,
                Some(list) = pushes.recv() => Ok(self.snapshot(&target, &list)),
                () = tokio::time::sleep_until(next_read) => self.list(&target).await,
            };
            match snapshot {
                Ok(snapshot) => {
                    backoff.reset();
                    next_read = tokio::time::Instant::now() + self.opts.check_every;
                    if last.as_ref() != Some(&snapshot) {
                        last = Some(snapshot.clone());
                        if tx.send(Ok(snapshot)).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(service = %target, error = %e, retry_in = ?backoff.current(), "nacos read failed");
                    next_read = tokio::time::Instant::now() + backoff.advance();
                    if tx.send(Err(to_core(e))).await.is_err() {
                        break;
                    }
                }
            }
        }
        if subscribed {
            if let Ok(naming) = self.opts.naming.get(&self.opts).await {
                let listener: Arc<dyn NamingEventListener> = listener;
                let _ = run(
                    &format!("unsubscribing from {target}"),
                    self.opts.request_timeout,
                    naming.unsubscribe(
                        target.clone(),
                        Some(self.opts.group.clone()),
                        vec![self.opts.cluster.clone()],
                        listener,
                    ),
                )
                .await;
            }
        }
    }
}

#[async_trait]
impl Resolver for NacosResolver {
    fn name(&self) -> &str {
        &self.name
    }

    async fn resolve(&self, target: &str) -> gannet_core::Result<Vec<Instance>> {
        self.list(target).await.map_err(to_core)
    }

    fn watch(
        self: Arc<Self>,
        target: String,
    ) -> BoxStream<'static, gannet_core::Result<Vec<Instance>>> {
        spawn_watch(|tx| self.follow(target, tx))
    }
}
