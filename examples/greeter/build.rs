//! Generates the greeter's messages, client and service trait from `proto/greeter.proto`.

fn main() -> Result<(), gannet_build::Error> {
    gannet_build::compile_protos(&["proto/greeter.proto"], &["proto"])
}
