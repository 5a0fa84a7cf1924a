//! Code generation from `.proto` files written to a temporary folder (parsed in-process by
//! `protox`: no `protoc`). The generated code compiling and serving calls is tested by the
//! `gannet-example-greeter` crate.

use std::path::Path;

use gannet_build::Error;

fn generate(dir: &Path, name: &str, proto: &str) -> Result<String, Error> {
    generate_with(dir, name, proto, gannet_build::configure())
}

fn generate_with(
    dir: &Path,
    name: &str,
    proto: &str,
    builder: gannet_build::Builder,
) -> Result<String, Error> {
    std::fs::write(dir.join(name), proto).unwrap();
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    builder
        .out_dir(&out)
        .rerun_if_changed(false)
        .compile(&[dir.join(name)], &[dir])?;
    let mut text = String::new();
    for f in std::fs::read_dir(&out).unwrap() {
        let f = f.unwrap();
        text += &format!("// FILE {}\n", f.file_name().to_string_lossy());
        text += &std::fs::read_to_string(f.path()).unwrap();
    }
    Ok(text)
}

const SHOP: &str = r#"
syntax = "proto3";
package shop.v1;
service Orders {
  rpc PlaceOrder (Order) returns (Receipt);
  rpc GetOrder (Receipt) returns (Order);
}
message Order { string item = 1; uint32 count = 2; }
message Receipt { uint64 id = 1; }
"#;

#[test]
fn a_service_gets_a_client_a_trait_and_a_server_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let code = generate(dir.path(), "shop.proto", SHOP).unwrap();
    assert!(
        code.contains("// FILE shop.v1.rs"),
        "one file per package:\n{code}"
    );
    for item in [
        "pub mod orders_client {",
        "pub struct OrdersClient",
        "pub mod orders_server {",
        "req: &super::Order",
        "-> ::gannet::Result<super::Receipt>",
        "pub const SERVICE: &'static str = \"shop.v1.Orders\"",
        "&[\"PlaceOrder\", \"GetOrder\"]",
        "pub async fn place_order(",
        "pub async fn place_order_with(",
        "self.client.call(\"PlaceOrder\", req)",
        "cx.rpc_info.method = \"GetOrder\".into()",
        "pub trait Orders: Send + Sync + 'static",
        "fn get_order(",
        "pub struct OrdersServer<S>",
        "impl<S: Orders> ::gannet::server::Handlers for OrdersServer<S>",
        ".handler(",
        "\"PlaceOrder\"",
        "pub struct Order",
        "::gannet::prost::Message",
    ] {
        assert!(code.contains(item), "missing {item:?} in:\n{code}");
    }
}

#[test]
fn runtime_path_names_the_core_crate_instead_of_the_facade() {
    let dir = tempfile::tempdir().unwrap();
    let code = generate_with(
        dir.path(),
        "shop.proto",
        SHOP,
        gannet_build::configure().runtime_path("::gannet_core"),
    )
    .unwrap();
    assert!(code.contains("client: ::gannet_core::Client"), "{code}");
    assert!(
        code.contains("prost_path = \"::gannet_core::prost\""),
        "{code}"
    );
    assert!(!code.contains("::gannet::"), "no facade path left:\n{code}");
}

#[test]
fn bytes_fields_can_share_the_received_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let proto = "syntax = \"proto3\"; package blob; message Blob { bytes data = 1; }";
    let plain = generate(dir.path(), "blob.proto", proto).unwrap();
    assert!(plain.contains("::prost::alloc::vec::Vec<u8>"), "{plain}");
    let dir = tempfile::tempdir().unwrap();
    let shared = generate_with(
        dir.path(),
        "blob.proto",
        proto,
        gannet_build::configure().bytes(&["."]),
    )
    .unwrap();
    assert!(shared.contains("::prost::bytes::Bytes"), "{shared}");
}

#[test]
fn a_streaming_method_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let proto = r#"
syntax = "proto3";
package feed;
service Feed { rpc Watch (Req) returns (stream Req); }
message Req {}
"#;
    let err = generate(dir.path(), "feed.proto", proto).unwrap_err();
    match &err {
        Error::Streaming { service, method } => {
            assert_eq!(service, "feed.Feed");
            assert_eq!(method, "Watch");
        }
        other => panic!("expected a streaming error, got {other:?}"),
    }
    assert!(err.to_string().contains("unary"), "{err}");
}

#[test]
fn a_syntax_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = generate(dir.path(), "broken.proto", "syntax = \"proto3\"; message {").unwrap_err();
    assert!(matches!(err, Error::Parse(_)), "{err:?}");
    // File, line and column of the unexpected `{`.
    assert!(err.to_string().contains("broken.proto:1:28: "), "{err}");
}

#[test]
fn a_missing_file_is_a_parse_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = gannet_build::configure()
        .out_dir(dir.path())
        .rerun_if_changed(false)
        .compile(&[dir.path().join("absent.proto")], &[dir.path()])
        .unwrap_err();
    assert!(matches!(err, Error::Parse(_)), "{err:?}");
    assert!(err.to_string().contains("absent.proto"), "{err}");
}

#[test]
fn a_method_named_like_a_client_helper_fails_the_build_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let proto = r#"
syntax = "proto3";
package clash;
service Factory { rpc New (Req) returns (Req); }
message Req {}
"#;
    let code = generate(dir.path(), "clash.proto", proto).unwrap();
    assert!(
        code.contains("compile_error!") && code.contains("method New of service clash.Factory"),
        "{code}"
    );
}

#[test]
fn keyword_method_names_get_plain_with_variants() {
    let dir = tempfile::tempdir().unwrap();
    let proto = r#"
syntax = "proto3";
package kw;
service Lang { rpc Type (M) returns (M); rpc Self (M) returns (M); }
message M {}
"#;
    let code = generate(dir.path(), "kw.proto", proto).unwrap();
    for item in [
        "pub async fn r#type(",
        "pub async fn type_with(",
        "pub async fn self_(",
        "pub async fn self_with(",
    ] {
        assert!(code.contains(item), "missing {item:?} in:\n{code}");
    }
}

#[test]
fn well_known_types_come_through_the_runtime_crate() {
    let dir = tempfile::tempdir().unwrap();
    let proto = r#"
syntax = "proto3";
package wk;
import "google/protobuf/empty.proto";
import "google/protobuf/timestamp.proto";
service Clock { rpc Now (google.protobuf.Empty) returns (Tick); }
message Tick { google.protobuf.Timestamp at = 1; }
"#;
    // This generated `super::()` once, which prost-build's formatter panicked on.
    let code = generate(dir.path(), "wk.proto", proto).unwrap();
    for item in [
        "::gannet::prost_types::Timestamp",
        "pub async fn now(&self, req: &()) -> ::gannet::Result<super::Tick>",
        "move |req: ()|",
    ] {
        assert!(code.contains(item), "missing {item:?} in:\n{code}");
    }
}

#[test]
fn a_file_without_package_names_its_service_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let proto = "syntax = \"proto3\"; service Ping { rpc Ping (P) returns (P); } message P {}";
    let code = generate(dir.path(), "ping.proto", proto).unwrap();
    assert!(code.contains("// FILE _.rs"), "{code}");
    assert!(code.contains("SERVICE: &'static str = \"Ping\""), "{code}");
}

#[test]
fn messages_named_like_the_generated_items_do_not_collide() {
    let dir = tempfile::tempdir().unwrap();
    // A domain with "clients" and "servers": the generated items live in their own modules.
    let proto = r#"
syntax = "proto3";
package fleet;
service Fleet { rpc Add (FleetServer) returns (FleetClient); }
message FleetServer { string host = 1; }
message FleetClient { string name = 1; }
"#;
    let code = generate(dir.path(), "fleet.proto", proto).unwrap();
    assert!(code.contains("pub struct FleetServer {"), "{code}");
    assert!(code.contains("pub mod fleet_client {"), "{code}");
    assert!(code.contains("pub mod fleet_server {"), "{code}");
    assert!(code.contains("req: &super::FleetServer"), "{code}");
    assert!(
        code.contains("::gannet::Result<super::FleetClient>"),
        "{code}"
    );
}

#[test]
fn types_of_another_package_are_reached_from_the_service_modules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("common.proto"),
        "syntax = \"proto3\"; package common; message Id { uint64 value = 1; }",
    )
    .unwrap();
    let proto = r#"
syntax = "proto3";
package users;
import "common.proto";
service Users { rpc Get (common.Id) returns (common.Id); }
"#;
    let code = generate(dir.path(), "users.proto", proto).unwrap();
    assert!(code.contains("// FILE common.rs"), "{code}");
    assert!(code.contains("req: &super::super::common::Id"), "{code}");
}
