//! Pieces every source's watch shares: the task-to-stream plumbing, backoff between failed
//! attempts, and turning successive reads into changes.

use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::{ConfigError, ConfigEvent};

/// What a watch task sends.
pub(crate) type Item = Result<ConfigEvent, ConfigError>;
/// Where a watch task sends.
pub(crate) type Tx = mpsc::Sender<Item>;

/// Spawns `task` with a sender and returns the stream of what it sends. The task should end
/// when the sender reports the stream was dropped (`tx.closed()`, or a failed send).
pub(crate) fn spawn_watch<F, Fut>(task: F) -> BoxStream<'static, Item>
where
    F: FnOnce(Tx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    gannet_core::watch::spawn_stream(8, task)
}

/// After a failed read of `key`: logs it, reports it on `tx` and waits out `backoff`; `false`
/// when the stream is gone.
#[cfg(any(feature = "etcd", feature = "consul"))]
pub(crate) async fn report_failure(
    backoff: &mut gannet_core::watch::Backoff,
    tx: &Tx,
    key: &str,
    err: ConfigError,
) -> bool {
    tracing::debug!(%key, error = %err, retry_in = ?backoff.current(), "config watch failed");
    backoff.report(tx, err).await
}

/// Turns successive reads of a key into what a watch yields: a state when it differs from the
/// last one yielded (or follows errors), and the first error of a run of errors.
#[derive(Default)]
pub(crate) struct Changes {
    last: Option<ConfigEvent>,
    failing: bool,
}

impl Changes {
    pub(crate) fn observe(&mut self, read: Item) -> Option<Item> {
        let yield_it = match (&read, &self.last) {
            (Ok(s), Some(l)) => s != l || self.failing,
            (Ok(_), None) => true,
            (Err(_), _) => !self.failing,
        };
        self.failing = read.is_err();
        if let Ok(s) = &read {
            self.last = Some(s.clone());
        }
        yield_it.then_some(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_yield_new_states_and_the_first_error_of_a_run() {
        let v = |s: &str| Ok(ConfigEvent::Value(s.into()));
        let e = || Err(ConfigError::new("t", "down"));
        let mut c = Changes::default();
        assert!(c.observe(v("a")).is_some(), "the first state");
        assert!(c.observe(v("a")).is_none(), "unchanged");
        assert!(c.observe(e()).is_some(), "the first error");
        assert!(c.observe(e()).is_none(), "errors in a row once");
        assert!(c.observe(v("a")).is_some(), "the state again after errors");
        assert!(c.observe(Ok(ConfigEvent::Deleted)).is_some());
        assert!(c.observe(Ok(ConfigEvent::Deleted)).is_none());
    }
}
