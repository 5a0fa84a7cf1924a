//! # gannet-config-center
//!
//! Live governance config for [Gannet](https://github.com/gannet-rs/gannet): timeouts,
//! retries, circuit breakers, degradation and server limits read from a config source and
//! swapped into a client's or server's policies while calls run — what kitex-contrib's
//! config-etcd and config-file give Kitex users, with the same keys and JSON.
//!
//! - A [`ConfigSource`] gets a key and watches it. Sources: files in a directory
//!   ([`file::FileSource`], feature `file`, default), etcd ([`etcd::EtcdSource`], feature
//!   `etcd`), Consul KV ([`consul::ConsulSource`], feature `consul`) and Nacos
//!   ([`nacos::NacosSource`], feature `nacos`).
//! - [`ClientConfig`] and [`ServerConfig`] are suites: built once (they read the current
//!   config), applied to a builder in one line, then they keep the policies current.
//!
//! Keys (under the source's prefix): client side `{client}/{server}/{category}` with
//! categories `rpc_timeout`, `retry`, `circuit_break`, `degradation`; server side
//! `{server}/{category}` with `limit`. Values are kitex-contrib's JSON (see
//! `gannet_core::policy`). A value that does not parse or validate keeps the policy in force,
//! is logged and counted (`gannet.config.rejected`); a deleted key restores the default; while
//! the source is unreachable the policies stay and watching resumes when it returns.
//!
//! ```no_run
//! use gannet_config_center::{ClientConfig, file::FileSource};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let source = FileSource::new("/etc/gannet/config");
//! let config = ClientConfig::new(source, "frontend", "echo").await;
//! let client = gannet_core::Client::builder("echo")
//!     .caller("frontend")
//!     .address("127.0.0.1:8888".parse()?)
//!     .suite(config)
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "consul")]
pub mod consul;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "nacos")]
pub mod nacos;
mod suite;
#[cfg(any(
    feature = "file",
    feature = "etcd",
    feature = "consul",
    feature = "nacos"
))]
mod watch;

use futures::stream::BoxStream;

pub use suite::{Category, ClientConfig, ConfigStatus, ServerConfig};

/// A change to a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigEvent {
    /// The key holds this value (new, or changed).
    Value(String),
    /// The key does not exist (deleted, or never written).
    Deleted,
}

/// A config source failed to answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("config source {source_name}: {message}")]
pub struct ConfigError {
    /// The source's name ([`ConfigSource::name`]).
    pub source_name: String,
    /// What went wrong.
    pub message: String,
}

impl ConfigError {
    /// An error of `source_name`.
    pub fn new(source_name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            source_name: source_name.into(),
            message: message.into(),
        }
    }
}

/// Where config values live: a key/value store that can be watched.
///
/// Implementations exist for files and etcd; write one for any other store and the suites work
/// with it unchanged.
#[async_trait::async_trait]
pub trait ConfigSource: Send + Sync + 'static {
    /// A name for logs and metrics, such as `etcd:http://127.0.0.1:2379`.
    fn name(&self) -> &str;

    /// The key's current value, `None` if it does not exist.
    ///
    /// # Errors
    /// If the source cannot be reached or read.
    async fn get(&self, key: &str) -> Result<Option<String>, ConfigError>;

    /// Watches `key`: the stream yields the key's current state first, then every change.
    /// While the source is unreachable it yields errors (and keeps trying); when the source
    /// returns it yields the state again if it changed meanwhile. It ends only when dropped.
    fn watch(&self, key: &str) -> BoxStream<'static, Result<ConfigEvent, ConfigError>>;

    /// The key of a client-side `category` (kitex-contrib layout: `{client}/{server}/{category}`).
    fn client_key(&self, client: &str, server: &str, category: Category) -> String {
        format!("{client}/{server}/{}", category.as_str())
    }

    /// The key of a server-side `category` (`{server}/{category}`).
    fn server_key(&self, server: &str, category: Category) -> String {
        format!("{server}/{}", category.as_str())
    }
}
