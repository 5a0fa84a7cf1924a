//! The generated client and service trait, end to end: a real server on loopback, discovered
//! through the in-memory registry.

use gannet::discovery::MemoryRegistry;
use gannet::{Client, ErrorKind, RunningServer, Server};
use gannet_example_greeter::greeter::greeter_client::GreeterClient;
use gannet_example_greeter::greeter::greeter_server::GreeterServer;
use gannet_example_greeter::greeter::{CountRequest, HelloReply, HelloRequest};
use gannet_example_greeter::{Greetings, NO_NAME};

async fn start() -> (RunningServer, GreeterClient) {
    let registry = MemoryRegistry::new();
    let server = Server::builder("greeter")
        .bind("127.0.0.1:0".parse().unwrap())
        .registry(registry.clone())
        .service(GreeterServer::new(Greetings::default()))
        .start()
        .await
        .expect("the server starts");
    let client = Client::builder("greeter")
        .resolver(registry.resolver())
        .build()
        .expect("the client builds");
    (server, GreeterClient::new(client))
}

fn hello(name: &str) -> HelloRequest {
    HelloRequest { name: name.into() }
}

#[tokio::test]
async fn generated_client_calls_each_method_of_the_generated_service() {
    let (server, greeter) = start().await;
    let reply = greeter.say_hello(&hello("ana")).await.unwrap();
    assert_eq!(reply.message, "Hello, ana!");
    greeter.say_hello(&hello("bo")).await.unwrap();
    let count = greeter.count(&CountRequest {}).await.unwrap();
    assert_eq!(count.greetings, 2, "Count sees both SayHello calls");
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_variant_carries_metainfo_and_sets_the_method() {
    let (server, greeter) = start().await;
    // A context made for another method: the generated call sets its own.
    let mut cx = greeter.client().context("Count");
    cx.meta.set_persistent("lang", "de");
    let reply = greeter.say_hello_with(&mut cx, &hello("cy")).await.unwrap();
    assert_eq!(reply.message, "Hallo, cy!");
    assert_eq!(cx.method(), "SayHello");
    assert_eq!(cx.rpc_info.callee.address, Some(server.local_addr()));
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn application_errors_arrive_typed_and_the_connection_stays_usable() {
    let (server, greeter) = start().await;
    let err = greeter.say_hello(&hello("")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Remote);
    assert_eq!(err.remote_code(), Some(NO_NAME));
    assert_eq!(err.message(), "name must not be empty");
    let reply: HelloReply = greeter.say_hello(&hello("di")).await.unwrap();
    assert_eq!(reply.message, "Hello, di!");
    server.shutdown().await.unwrap();
}

#[test]
fn service_constants_name_the_proto_service_and_its_methods() {
    assert_eq!(GreeterClient::SERVICE, "greeter.Greeter");
    assert_eq!(GreeterClient::METHODS, ["SayHello", "Count"]);
    use gannet_example_greeter::edge::nothing_client::NothingClient;
    assert_eq!(NothingClient::SERVICE, "edge.Nothing");
    assert!(NothingClient::METHODS.is_empty());
}

#[tokio::test]
async fn a_service_without_methods_adds_nothing_to_a_server() {
    use gannet_example_greeter::edge::nothing_server::{Nothing, NothingServer};
    struct Empty;
    impl Nothing for Empty {}
    // Only the empty service: the server has no handler, which it refuses to start with.
    let err = Server::builder("nothing")
        .bind("127.0.0.1:0".parse().unwrap())
        .service(NothingServer::new(Empty))
        .start()
        .await
        .unwrap_err();
    assert!(err.message().contains("no handler"), "{err}");
}

/// `edge.Lang`: its methods are named `Type`, `Self`, `Match` and `Now` (well-known types).
struct Lang;

impl gannet_example_greeter::edge::lang_server::Lang for Lang {
    async fn r#type(&self, req: HelloRequest) -> gannet::Result<HelloReply> {
        Ok(HelloReply {
            message: format!("type {}", req.name),
        })
    }
    async fn self_(&self, req: HelloRequest) -> gannet::Result<HelloReply> {
        Ok(HelloReply {
            message: format!("self {}", req.name),
        })
    }
    async fn r#match(
        &self,
        req: gannet_example_greeter::edge::LangClient,
    ) -> gannet::Result<gannet_example_greeter::edge::LangClient> {
        Ok(req)
    }
    async fn now(&self, _req: ()) -> gannet::Result<gannet_example_greeter::edge::Tick> {
        Ok(gannet_example_greeter::edge::Tick {
            at: Some(gannet::prost_types::Timestamp {
                seconds: 1_800_000_000,
                nanos: 7,
            }),
        })
    }
}

#[tokio::test]
async fn keyword_method_names_and_types_of_another_package_work_end_to_end() {
    use gannet_example_greeter::edge::{LangClient, lang_client, lang_server};
    let registry = MemoryRegistry::new();
    // Two generated services on one server.
    let server = Server::builder("polyglot")
        .bind("127.0.0.1:0".parse().unwrap())
        .registry(registry.clone())
        .service(GreeterServer::new(Greetings::default()))
        .service(lang_server::LangServer::new(Lang))
        .start()
        .await
        .unwrap();
    let client = Client::builder("polyglot")
        .resolver(registry.resolver())
        .build()
        .unwrap();
    let lang = lang_client::LangClient::new(client.clone());
    assert_eq!(lang.r#type(&hello("t")).await.unwrap().message, "type t");
    assert_eq!(lang.self_(&hello("s")).await.unwrap().message, "self s");
    let mut cx = client.context("");
    let m = lang
        .match_with(&mut cx, &LangClient { name: "m".into() })
        .await
        .unwrap();
    assert_eq!(m.name, "m");
    assert_eq!(cx.method(), "Match");
    let tick = lang.now(&()).await.unwrap();
    assert_eq!(
        tick.at,
        Some(gannet::prost_types::Timestamp {
            seconds: 1_800_000_000,
            nanos: 7
        })
    );
    let greeter = GreeterClient::new(client);
    assert_eq!(
        greeter.say_hello(&hello("g")).await.unwrap().message,
        "Hello, g!"
    );
    assert_eq!(
        lang_client::LangClient::METHODS,
        ["Type", "Self", "Match", "Now"]
    );
    server.shutdown().await.unwrap();
}
