//! The one error type of the call path.
//!
//! Every failure of the network, of a peer, of discovery or of a policy becomes an [`Error`]
//! value whose [`ErrorKind`] says what happened and whether a retry may help
//! ([`Error::is_retryable`]). Bad input from the network is an error value, never a panic.

use std::fmt;
use std::sync::Arc;

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The result type of Gannet's call path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Status codes carried by remote errors on the wire.
///
/// Codes below 1000 are the framework's own; application errors use any other value.
pub mod code {
    /// The server has no handler for the requested service method.
    pub const UNKNOWN_METHOD: u32 = 1;
    /// The request could not be decoded by the server.
    pub const BAD_REQUEST: u32 = 2;
    /// The server's rate limiter rejected the request.
    pub const RATE_LIMITED: u32 = 3;
    /// The server is shutting down and did not take the request.
    pub const SHUTTING_DOWN: u32 = 4;
    /// The handler panicked or failed in an unexpected way.
    pub const INTERNAL: u32 = 5;
    /// The default code of an application error raised by a handler.
    pub const APPLICATION: u32 = 1000;
}

/// What went wrong; see [`Error::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Reading or writing an established connection failed, or the peer closed it mid-call.
    Transport,
    /// A connection to the instance could not be established.
    Connect,
    /// The call (or one attempt of it) ran out of time.
    Timeout,
    /// A payload could not be encoded or decoded.
    Codec,
    /// A frame broke the protocol: bad magic, bad header, oversize or truncated.
    Protocol,
    /// The remote side answered with an error status (see [`Error::remote_code`]).
    Remote,
    /// Discovery found no instance to call.
    NoInstance,
    /// A circuit breaker is open for the method or the instance.
    CircuitOpen,
    /// A rate limiter rejected the call.
    RateLimited,
    /// The client's degradation policy dropped the call.
    Degraded,
    /// A resolver failed.
    Discovery,
    /// A registry failed.
    Registry,
    /// A configuration value was invalid.
    Config,
    /// The client or server has been shut down.
    Shutdown,
}

impl ErrorKind {
    /// A short stable name, suitable as a metric label.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Codec => "codec",
            Self::Protocol => "protocol",
            Self::Remote => "remote",
            Self::NoInstance => "no_instance",
            Self::CircuitOpen => "circuit_open",
            Self::RateLimited => "rate_limited",
            Self::Degraded => "degraded",
            Self::Discovery => "discovery",
            Self::Registry => "registry",
            Self::Config => "config",
            Self::Shutdown => "shutdown",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every Gannet call.
///
/// Cheap to clone (one `Arc`), so tracers, retries and the caller can all keep it.
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    message: String,
    code: u32,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind` with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                code: 0,
                source: None,
            }),
        }
    }

    /// A new error of `kind` with a message and the error that caused it.
    pub fn with_source(
        kind: ErrorKind,
        message: impl Into<String>,
        source: impl Into<BoxError>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                message: message.into(),
                code: 0,
                source: Some(source.into()),
            }),
        }
    }

    /// An error the remote side answered with, carrying its status `code`.
    pub fn remote(code: u32, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind: ErrorKind::Remote,
                message: message.into(),
                code,
                source: None,
            }),
        }
    }

    /// An application error for a handler to return; travels to the caller as a
    /// [`ErrorKind::Remote`] error with `code` and `message`.
    ///
    /// ```
    /// let err = gannet_core::Error::application(4004, "user not found");
    /// assert_eq!(err.remote_code(), Some(4004));
    /// ```
    pub fn application(code: u32, message: impl Into<String>) -> Self {
        Self::remote(code, message)
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The human-readable message.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// The status code of a remote error, `None` for local errors.
    #[must_use]
    pub fn remote_code(&self) -> Option<u32> {
        (self.inner.kind == ErrorKind::Remote).then_some(self.inner.code)
    }

    /// Whether the call timed out.
    #[must_use]
    pub fn is_timeout(&self) -> bool {
        self.inner.kind == ErrorKind::Timeout
    }

    /// Whether connecting to the instance failed.
    #[must_use]
    pub fn is_connect(&self) -> bool {
        self.inner.kind == ErrorKind::Connect
    }

    /// Whether the remote side answered with an error status.
    #[must_use]
    pub fn is_remote(&self) -> bool {
        self.inner.kind == ErrorKind::Remote
    }

    /// Whether trying the call again (possibly on another instance) may succeed.
    ///
    /// Connect failures, transport failures, timeouts, open instance breakers and remote
    /// rate limiting or shutdown are retryable; codec, protocol and application errors are not.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        match self.inner.kind {
            ErrorKind::Connect
            | ErrorKind::Transport
            | ErrorKind::Timeout
            | ErrorKind::CircuitOpen
            | ErrorKind::RateLimited => true,
            ErrorKind::Remote => {
                matches!(self.inner.code, code::RATE_LIMITED | code::SHUTTING_DOWN)
            }
            _ => false,
        }
    }

    /// Whether this error says the server or the network is unhealthy (as opposed to the
    /// application refusing the request). Circuit breakers count only these.
    #[must_use]
    pub fn is_system_failure(&self) -> bool {
        match self.inner.kind {
            ErrorKind::Connect | ErrorKind::Transport | ErrorKind::Timeout => true,
            ErrorKind::Remote => matches!(
                self.inner.code,
                code::RATE_LIMITED | code::SHUTTING_DOWN | code::INTERNAL
            ),
            ErrorKind::Protocol => true,
            _ => false,
        }
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }

    pub(crate) fn transport(message: impl Into<String>, source: std::io::Error) -> Self {
        Self::with_source(ErrorKind::Transport, message, source)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind);
        if self.inner.kind == ErrorKind::Remote {
            d.field("code", &self.inner.code);
        }
        d.field("message", &self.inner.message);
        if let Some(source) = &self.inner.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.inner.kind == ErrorKind::Remote {
            write!(
                f,
                "remote error {}: {}",
                self.inner.code, self.inner.message
            )?;
        } else {
            write!(f, "{} error: {}", self.inner.kind, self.inner.message)?;
        }
        if let Some(source) = &self.inner.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|s| &**s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(Error::new(ErrorKind::Timeout, "t").is_retryable());
        assert!(Error::new(ErrorKind::Connect, "c").is_retryable());
        assert!(!Error::new(ErrorKind::Codec, "c").is_retryable());
        assert!(!Error::application(7, "no").is_retryable());
        assert!(Error::remote(code::RATE_LIMITED, "busy").is_retryable());
    }

    #[test]
    fn display_includes_code_and_source() {
        let e = Error::remote(code::UNKNOWN_METHOD, "unknown method Foo");
        assert_eq!(e.to_string(), "remote error 1: unknown method Foo");
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
        let e = Error::transport("read failed", io);
        assert!(e.to_string().contains("read failed: reset"));
        assert!(std::error::Error::source(&e).is_some());
    }
}
