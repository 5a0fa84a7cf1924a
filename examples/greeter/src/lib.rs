//! A greeter service written from `proto/greeter.proto` with code `gannet-build` generates:
//! the messages, a typed [`GreeterClient`](greeter::greeter_client::GreeterClient), the
//! [`Greeter`](greeter::greeter_server::Greeter) trait and
//! [`GreeterServer`](greeter::greeter_server::GreeterServer).
//!
//! `cargo run -p gannet-example-greeter` starts a server and calls it through the embedded
//! registry.

use std::sync::atomic::{AtomicU64, Ordering};

use gannet::{Error, MetaInfo, Result};

/// The code generated from `proto/greeter.proto` (package `greeter`).
#[allow(missing_docs)]
pub mod greeter {
    gannet::include_proto!("greeter");
}

/// The code generated from `proto/edge.proto` (package `edge`): keyword method names, types of
/// another package, a message named like a generated item. Compiled here, called by the tests.
#[allow(missing_docs)]
pub mod edge {
    gannet::include_proto!("edge");
}

use greeter::{CountReply, CountRequest, HelloReply, HelloRequest};

/// The application error code for a request without a name.
pub const NO_NAME: u32 = 4001;

/// A [`Greeter`](greeter::greeter_server::Greeter) that counts its greetings.
#[derive(Debug, Default)]
pub struct Greetings {
    given: AtomicU64,
}

impl greeter::greeter_server::Greeter for Greetings {
    async fn say_hello(&self, req: HelloRequest) -> Result<HelloReply> {
        if req.name.is_empty() {
            return Err(Error::application(NO_NAME, "name must not be empty"));
        }
        let lang = MetaInfo::current().and_then(|m| m.get_persistent("lang").map(str::to_owned));
        let hello = match lang.as_deref() {
            Some("fr") => "Bonjour",
            Some("de") => "Hallo",
            _ => "Hello",
        };
        self.given.fetch_add(1, Ordering::Relaxed);
        Ok(HelloReply {
            message: format!("{hello}, {}!", req.name),
        })
    }

    async fn count(&self, _req: CountRequest) -> Result<CountReply> {
        Ok(CountReply {
            greetings: self.given.load(Ordering::Relaxed),
        })
    }
}
