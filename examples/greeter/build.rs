//! Generates the greeter's messages, client and service trait from `proto/greeter.proto`, and
//! the edge cases of `proto/edge.proto` the tests compile and call.

fn main() -> Result<(), gannet_build::Error> {
    gannet_build::compile_protos(&["proto/greeter.proto", "proto/edge.proto"], &["proto"])
}
