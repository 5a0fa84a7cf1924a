//! An echo server and client with fixed addresses, a retry policy and a middleware.
//!
//! Run with `cargo run -p gannet-core --example echo`.

use gannet_core::service::layer_fn;
use gannet_core::{Client, Server};

/// Request and reply of `Echo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Echo {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

#[tokio::main]
async fn main() -> gannet_core::Result<()> {
    let server = Server::builder("echo")
        .bind("127.0.0.1:0".parse().expect("valid address"))
        .handler("Echo", |req: Echo| async move { Ok(req) })
        .start()
        .await?;

    let client = Client::builder("echo")
        .address(server.local_addr())
        .layer(layer_fn(|cx, req, next| {
            Box::pin(async move {
                let method = cx.method().to_string();
                let res = gannet_core::Service::call(next, cx, req).await;
                println!("middleware: {method} -> ok={}", res.is_ok());
                res
            })
        }))
        .build()?;
    client
        .policies()
        .retry
        .set_json(r#"{"*": {"enable": true, "type": 0, "failure_policy": {"stop_policy": {"max_retry_times": 2}}}}"#)?;

    let reply: Echo = client
        .call(
            "Echo",
            &Echo {
                text: "hello".into(),
            },
        )
        .await?;
    println!("reply: {}", reply.text);
    server.shutdown().await
}
