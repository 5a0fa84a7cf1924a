//! Config from files: the value of key `a/b/c` is the content of `{dir}/a/b/c.json`.
//!
//! Changes are seen through file-system notifications (`notify`: inotify on Linux), with a
//! re-read every two seconds as a safety net (for example when the directory is created after
//! the watch starts). A missing file is a deleted key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::BoxStream;
use notify::Watcher as _;

use crate::watch::{Changes, spawn_watch};
use crate::{ConfigError, ConfigEvent, ConfigSource};

/// How often a watch re-reads its file even without a notification.
const RESCAN: Duration = Duration::from_secs(2);
/// How long a watch waits after a notification for more writes to settle.
const SETTLE: Duration = Duration::from_millis(20);

/// Config values as JSON files in a directory tree.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use gannet_config_center::{ClientConfig, file::FileSource};
/// // /etc/gannet/frontend/echo/rpc_timeout.json holds {"*": {"rpc_timeout_ms": 300}}
/// let config = ClientConfig::new(FileSource::new("/etc/gannet"), "frontend", "echo").await;
/// # let _ = config; Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct FileSource {
    dir: PathBuf,
    name: String,
}

impl FileSource {
    /// Reads keys from files under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let name = format!("file:{}", dir.display());
        Self { dir, name }
    }

    /// The file that holds `key`.
    #[must_use]
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}.json"))
    }
}

async fn read(name: &str, path: &Path) -> Result<ConfigEvent, ConfigError> {
    match tokio::fs::read_to_string(path).await {
        Ok(v) => Ok(ConfigEvent::Value(v)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ConfigEvent::Deleted),
        Err(e) => Err(ConfigError::new(
            name,
            format!("reading {}: {e}", path.display()),
        )),
    }
}

#[async_trait::async_trait]
impl ConfigSource for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    async fn get(&self, key: &str) -> Result<Option<String>, ConfigError> {
        Ok(match read(&self.name, &self.path_of(key)).await? {
            ConfigEvent::Value(v) => Some(v),
            ConfigEvent::Deleted => None,
        })
    }

    fn watch(&self, key: &str) -> BoxStream<'static, Result<ConfigEvent, ConfigError>> {
        let path = self.path_of(key);
        let dir = self.dir.clone();
        let name = self.name.clone();
        spawn_watch(|tx| async move {
            let (ntx, mut nrx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let mut watcher = match notify::recommended_watcher(
                move |_res: notify::Result<notify::Event>| {
                    let _ = ntx.send(());
                },
            ) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(error = %e, "file notifications unavailable; re-reading every 2 s");
                    None
                }
            };
            let mut watching = false;
            let mut changes = Changes::default();
            let mut rescan = tokio::time::interval(RESCAN);
            loop {
                if !watching {
                    if let Some(w) = watcher.as_mut() {
                        watching = w.watch(&dir, notify::RecursiveMode::Recursive).is_ok();
                    }
                }
                if let Some(item) = changes.observe(read(&name, &path).await) {
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    n = nrx.recv() => {
                        if n.is_none() {
                            watcher = None;
                        }
                        tokio::time::sleep(SETTLE).await;
                        while nrx.try_recv().is_ok() {}
                    }
                    _ = rescan.tick() => {}
                    () = tx.closed() => return,
                }
            }
        })
    }
}
