//! Generates the peers' stubs the way their users do: tonic from `idl/echo.proto` (needs
//! `protoc`, which `scripts/test` installs), Volo from `idl/echo.thrift`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=idl/echo.proto");
    println!("cargo:rerun-if-changed=idl/echo.thrift");
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&["idl/echo.proto"], &["idl"])
        .expect("tonic code generation failed (is protoc installed? scripts/test installs it)");
    volo_build::Builder::thrift()
        .add_service("idl/echo.thrift")
        .filename(PathBuf::from("volo_gen.rs"))
        .write()
        .expect("volo code generation failed");
}
