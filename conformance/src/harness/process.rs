//! A local server process: started with a command line, stopped by process id, restartable.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{HarnessError, Result};

/// A child process that can be stopped and started again with the same command line, and is
/// killed when dropped.
#[derive(Debug)]
pub(crate) struct LocalProcess {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl LocalProcess {
    pub(crate) fn new(
        program: PathBuf,
        args: Vec<String>,
        envs: Vec<(String, String)>,
        log: PathBuf,
    ) -> Self {
        Self {
            program,
            args,
            envs,
            log,
            child: Mutex::new(None),
        }
    }

    /// Starts the process, its output appended to the log file.
    pub(crate) fn spawn(&self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                HarnessError(format!("starting {} failed: {e}", self.program.display()))
            })?;
        tracing::debug!(program = %self.program.display(), pid = ?child.id(), "test server started");
        *self.child.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
        Ok(())
    }

    /// Kills the process (by its id) and waits for it to exit.
    pub(crate) async fn kill(&self) {
        let child = self.child.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(mut child) = child {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }

    /// Kills the process and starts it again with the same command line.
    pub(crate) async fn restart(&self) -> Result<()> {
        self.kill().await;
        self.spawn()
    }

    /// The last lines of the log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Whether the process has exited.
    pub(crate) fn exited(&self) -> bool {
        let mut guard = self.child.lock().unwrap_or_else(|p| p.into_inner());
        match guard.as_mut() {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => true,
        }
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.start_kill();
        }
    }
}
