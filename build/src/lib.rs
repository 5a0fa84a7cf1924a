//! # gannet-build
//!
//! Code generation for [Gannet](https://github.com/gannet-rs/gannet), the way Kitex's tool and
//! `tonic-build` do it: from `.proto` files, in a build script, it writes the Protobuf messages
//! (through `prost-build`) and, for each service, a typed client and a trait to implement on the
//! server. The `.proto` files are parsed in Rust (`protox`): no `protoc` to install.
//!
//! For a service
//!
//! ```proto
//! package greeter;
//! service Greeter {
//!   rpc SayHello (HelloRequest) returns (HelloReply);
//! }
//! ```
//!
//! it writes, in `$OUT_DIR/greeter.rs`, the messages and two modules (as `tonic-build` does,
//! so that messages named like the generated items, `GreeterClient` say, do not collide):
//!
//! - `greeter_client::GreeterClient`: wraps a [`gannet::Client`](https://docs.rs/gannet) and has
//!   one method per RPC, `say_hello(&self, &HelloRequest) -> Result<HelloReply>`, plus
//!   `say_hello_with` taking a prepared `Context` (metainfo, a per-call timeout, a hash key);
//! - `greeter_server::Greeter`: the trait a server implements, one `async` method per RPC;
//! - `greeter_server::GreeterServer<S>`: adds every method of an implementation to a server
//!   builder, `Server::builder("greeter").service(GreeterServer::new(MyGreeter))`.
//!
//! Methods travel on the wire under their Protobuf names (`SayHello`), as in Kitex.
//! Gannet's calls are unary: a streaming method is refused with [`Error::Streaming`].
//!
//! ## Use
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! gannet = "0.1"
//!
//! [build-dependencies]
//! gannet-build = "0.1"
//! ```
//!
//! `build.rs`:
//!
//! ```no_run
//! fn main() -> Result<(), gannet_build::Error> {
//!     gannet_build::compile_protos(&["proto/greeter.proto"], &["proto"])
//! }
//! ```
//!
//! and in the crate, `gannet::include_proto!("greeter");` where the code should go (a
//! module of its own is usual). The generated code names the runtime as `::gannet` (Prost as
//! `::gannet::prost`, the well-known types as `::gannet::prost_types`), so depending on
//! `gannet` alone is enough; a crate that uses `gannet-core`
//! directly sets [`Builder::runtime_path`] to `::gannet_core`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use prost_build::{Method, Service, ServiceGenerator};

/// What can go wrong while generating code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A `.proto` file could not be read or parsed; the message names the file and the place.
    #[error("reading the .proto files failed: {0}")]
    Parse(Box<dyn std::error::Error + Send + Sync>),
    /// A method streams requests or responses; Gannet's calls are unary.
    #[error(
        "method {method} of service {service} is streaming; Gannet calls are unary (one request, one reply)"
    )]
    Streaming {
        /// The service's full Protobuf name.
        service: String,
        /// The method's Protobuf name.
        method: String,
    },
    /// Writing the generated code failed (for example, `OUT_DIR` is not set outside a build
    /// script and no [`Builder::out_dir`] was given).
    #[error("writing the generated code failed: {0}")]
    Generate(#[from] std::io::Error),
}

/// Generates code for `protos`, looking for imports in `includes`, into `$OUT_DIR` with the
/// default settings of [`configure`].
///
/// # Errors
/// See [`Builder::compile`].
pub fn compile_protos(
    protos: &[impl AsRef<Path>],
    includes: &[impl AsRef<Path>],
) -> Result<(), Error> {
    configure().compile(protos, includes)
}

/// A code generator with default settings, to adjust before [`Builder::compile`].
#[must_use]
pub fn configure() -> Builder {
    Builder {
        runtime: "::gannet".to_owned(),
        out_dir: None,
        rerun_if_changed: true,
        prost: Vec::new(),
    }
}

type ProstTweak = Box<dyn FnOnce(&mut prost_build::Config)>;

/// Settings of one code generation run; made by [`configure`].
pub struct Builder {
    runtime: String,
    out_dir: Option<PathBuf>,
    rerun_if_changed: bool,
    prost: Vec<ProstTweak>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("runtime", &self.runtime)
            .field("out_dir", &self.out_dir)
            .field("rerun_if_changed", &self.rerun_if_changed)
            .field("prost_tweaks", &self.prost.len())
            .finish()
    }
}

impl Builder {
    /// The path the generated code uses for the Gannet runtime (default `::gannet`, the facade
    /// crate; `::gannet_core` for a crate that depends on the core directly). Prost is named as
    /// `{path}::prost`.
    #[must_use]
    pub fn runtime_path(mut self, path: impl Into<String>) -> Self {
        self.runtime = path.into();
        self
    }

    /// Where to write the generated files (default: `$OUT_DIR`, set by Cargo for build scripts).
    #[must_use]
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// Whether to print `cargo:rerun-if-changed` for the `.proto` files and include folders
    /// (default true; turn it off outside a build script).
    #[must_use]
    pub fn rerun_if_changed(mut self, yes: bool) -> Self {
        self.rerun_if_changed = yes;
        self
    }

    /// Generates `bytes::Bytes` instead of `Vec<u8>` for the `bytes` fields matching `paths`
    /// (`"."` for every one): decoding then shares the received buffer instead of copying.
    #[must_use]
    pub fn bytes(self, paths: &[&str]) -> Self {
        let paths: Vec<String> = paths.iter().map(|p| (*p).to_owned()).collect();
        self.prost_config(move |c| {
            c.bytes(paths);
        })
    }

    /// Adjusts the underlying `prost_build::Config` (type attributes, extern paths, …). Called
    /// after Gannet's own settings, so it can override them.
    #[must_use]
    pub fn prost_config(mut self, tweak: impl FnOnce(&mut prost_build::Config) + 'static) -> Self {
        self.prost.push(Box::new(tweak));
        self
    }

    /// Parses `protos` (looking for imports in `includes`) and writes one `.rs` file per
    /// Protobuf package: its messages, and a client, a trait and a server adapter per service.
    ///
    /// # Errors
    /// [`Error::Parse`] if a file cannot be read or parsed, [`Error::Streaming`] for a
    /// streaming method, [`Error::Generate`] if the output cannot be written.
    pub fn compile(
        self,
        protos: &[impl AsRef<Path>],
        includes: &[impl AsRef<Path>],
    ) -> Result<(), Error> {
        if self.rerun_if_changed {
            for p in protos {
                println!("cargo:rerun-if-changed={}", p.as_ref().display());
            }
            for i in includes {
                println!("cargo:rerun-if-changed={}", i.as_ref().display());
            }
        }
        let fds =
            protox::compile(protos, includes).map_err(|e| Error::Parse(describe(&e).into()))?;
        for file in &fds.file {
            for service in &file.service {
                for method in &service.method {
                    if method.client_streaming() || method.server_streaming() {
                        return Err(Error::Streaming {
                            service: full_name(file.package(), service.name()),
                            method: method.name().to_owned(),
                        });
                    }
                }
            }
        }
        let mut config = prost_build::Config::new();
        config.prost_path(format!("{}::prost", self.runtime));
        config.prost_types_path(format!("{}::prost_types", self.runtime));
        config.service_generator(Box::new(Generator {
            runtime: self.runtime,
        }));
        if let Some(dir) = self.out_dir {
            config.out_dir(dir);
        }
        for tweak in self.prost {
            tweak(&mut config);
        }
        config.compile_fds(fds)?;
        Ok(())
    }
}

/// A parse error as `file:line:column: message` where `protox` knows the place.
fn describe(e: &protox::Error) -> String {
    use miette::Diagnostic as _;
    let place = e.file().map(|file| {
        let at = e
            .labels()
            .and_then(|mut labels| labels.next())
            .zip(e.source_code())
            .and_then(|(label, src)| src.read_span(label.inner(), 0, 0).ok())
            .map(|span| format!(":{}:{}", span.line() + 1, span.column() + 1))
            .unwrap_or_default();
        format!("{file}{at}: ")
    });
    format!("{}{e}", place.unwrap_or_default())
}

fn full_name(package: &str, name: &str) -> String {
    if package.is_empty() {
        name.to_owned()
    } else {
        format!("{package}.{name}")
    }
}

/// Names the generated client uses for its own methods; an RPC whose Rust name is one of them
/// would not compile, so it gets a `compile_error!` saying why.
const CLIENT_OWN: [&str; 2] = ["new", "client"];

/// Writes, for each service, a `<service>_client` module (the client) and a `<service>_server`
/// module (the trait and its server adapter). Modules, as `tonic-build` does it, so that a
/// message named like a generated item (`GreeterClient`) does not collide with it.
struct Generator {
    runtime: String,
}

/// One service's names, and the paths of its types as seen from its generated modules.
struct Names<'a> {
    /// The runtime crate's path (`::gannet`).
    r: &'a str,
    /// The service's full Protobuf name.
    full: String,
    service: &'a Service,
}

impl Names<'_> {
    /// A message type's path from inside the service's modules: prost gives it relative to the
    /// package's module, one level up, unless it is absolute (`::gannet::prost_types::…`,
    /// `crate::…`) or a Rust type of its own (`()` for `google.protobuf.Empty`).
    fn ty(path: &str) -> String {
        if path.starts_with("::") || path.starts_with("crate::") || path.starts_with('(') {
            path.to_owned()
        } else {
            format!("super::{path}")
        }
    }
}

impl ServiceGenerator for Generator {
    fn generate(&mut self, service: Service, buf: &mut String) {
        let names = Names {
            r: &self.runtime,
            full: full_name(&service.package, &service.proto_name),
            service: &service,
        };
        let module = heck::ToSnakeCase::to_snake_case(service.name.as_str());
        let _ = writeln!(
            buf,
            "/// The client of the `{}` service (generated by gannet-build).\npub mod {module}_client {{",
            names.full
        );
        write_client(buf, &names);
        buf.push_str("}\n");
        let _ = writeln!(
            buf,
            "/// The `{}` service's trait, to implement on a server, and its server adapter \
             (generated by gannet-build).\npub mod {module}_server {{",
            names.full
        );
        write_server(buf, &names);
        buf.push_str("}\n");
    }
}

/// The name of a method's variant taking a context: `say_hello_with`; for a method whose name
/// prost made a raw identifier or suffixed with `_` (`r#type`, `self_`), `type_with`, `self_with`.
fn with_name(method: &str) -> String {
    let base = method.strip_prefix("r#").unwrap_or(method);
    format!("{}_with", base.trim_end_matches('_'))
}

/// The `.proto` comments of the service (`method: None`) or of a method, as doc comments.
fn doc_lines(buf: &mut String, indent: u8, method: Option<&Method>, service: &Service) {
    let comments = method.map_or(&service.comments, |m| &m.comments);
    comments.append_with_indent(indent, buf);
    if !comments.leading.is_empty() {
        for _ in 0..indent {
            buf.push_str("    ");
        }
        buf.push_str("///\n");
    }
}

fn write_client(buf: &mut String, n: &Names<'_>) {
    let (r, full, service) = (n.r, &n.full, n.service);
    let name = &service.name;
    for m in &service.methods {
        let clash = CLIENT_OWN.contains(&m.name.as_str())
            || service.methods.iter().any(|o| o.name == with_name(&m.name));
        if clash {
            let _ = writeln!(
                buf,
                "::core::compile_error!(\"gannet-build: method {} of service {full} becomes `{}`, \
                 which the generated client already uses; rename the method\");",
                m.proto_name, m.name
            );
        }
    }
    let methods: Vec<String> = service
        .methods
        .iter()
        .map(|m| format!("{:?}", m.proto_name))
        .collect();
    let _ = write!(
        buf,
        r#"
/// A client of the `{full}` service (generated by gannet-build).
///
/// Wraps a [`{r}::Client`] built for the service's discovery name; cheap to clone.
#[derive(Debug, Clone)]
pub struct {name}Client {{
    client: {r}::Client,
}}

impl {name}Client {{
    /// The service's full Protobuf name.
    pub const SERVICE: &'static str = "{full}";
    /// The service's methods, by the names they travel under.
    pub const METHODS: &'static [&'static str] = &[{methods}];

    /// Wraps `client`.
    #[must_use]
    pub fn new(client: {r}::Client) -> Self {{
        Self {{ client }}
    }}

    /// The wrapped client: its policies, connections and untyped calls.
    #[must_use]
    pub fn client(&self) -> &{r}::Client {{
        &self.client
    }}
"#,
        methods = methods.join(", ")
    );
    for m in &service.methods {
        let (f, wire, f_with) = (&m.name, &m.proto_name, with_name(&m.name));
        let (input, output) = (Names::ty(&m.input_type), Names::ty(&m.output_type));
        buf.push('\n');
        doc_lines(buf, 1, Some(m), service);
        let _ = write!(
            buf,
            r#"    /// Calls `{wire}`.
    ///
    /// # Errors
    /// Any [`{r}::Error`]; its kind says what failed.
    pub async fn {f}(&self, req: &{input}) -> {r}::Result<{output}> {{
        self.client.call("{wire}", req).await
    }}

    /// Calls `{wire}` with a prepared context (metainfo, a per-call timeout, a hash key); its
    /// method is set to `{wire}`. Afterwards the context holds what happened (the instance
    /// called, the attempts).
    ///
    /// # Errors
    /// Any [`{r}::Error`]; its kind says what failed.
    pub async fn {f_with}(&self, cx: &mut {r}::Context, req: &{input}) -> {r}::Result<{output}> {{
        cx.rpc_info.method = "{wire}".into();
        self.client.call_with(cx, req).await
    }}
"#
        );
    }
    buf.push_str("}\n");
}

fn write_server(buf: &mut String, n: &Names<'_>) {
    let (r, full, service) = (n.r, &n.full, n.service);
    let name = &service.name;
    doc_lines(buf, 0, None, service);
    let _ = write!(
        buf,
        r#"/// The `{full}` service, to implement on a server (generated by gannet-build); serve an
/// implementation with [`{name}Server`]. Inside a method, [`{r}::MetaInfo::current`] gives the
/// caller's metainfo.
pub trait {name}: Send + Sync + 'static {{
"#
    );
    for m in &service.methods {
        let (f, wire) = (&m.name, &m.proto_name);
        let (input, output) = (Names::ty(&m.input_type), Names::ty(&m.output_type));
        doc_lines(buf, 1, Some(m), service);
        let _ = write!(
            buf,
            r#"    /// Serves `{wire}`. An error is sent back to the caller as a typed error.
    fn {f}(&self, req: {input}) -> impl ::core::future::Future<Output = {r}::Result<{output}>> + Send;
"#
        );
    }
    let _ = write!(
        buf,
        r#"}}

/// Serves a [`{name}`] implementation: every method of `{full}`, added to a server with
/// [`ServerBuilder::service`]({r}::ServerBuilder::service).
#[derive(Debug, Clone)]
pub struct {name}Server<S> {{
    service: S,
}}

impl<S: {name}> {name}Server<S> {{
    /// Serves `service`.
    pub fn new(service: S) -> Self {{
        Self {{ service }}
    }}
}}

impl<S: {name}> {r}::server::Handlers for {name}Server<S> {{
    fn add_to(self, builder: {r}::ServerBuilder) -> {r}::ServerBuilder {{
"#
    );
    if service.methods.is_empty() {
        buf.push_str("        let _ = self.service;\n        builder\n");
    } else {
        buf.push_str("        let service = ::std::sync::Arc::new(self.service);\n");
        buf.push_str("        builder");
        for m in &service.methods {
            let (f, wire, input) = (&m.name, &m.proto_name, Names::ty(&m.input_type));
            let _ = write!(
                buf,
                r#"
            .handler("{wire}", {{
                let service = service.clone();
                move |req: {input}| {{
                    let service = service.clone();
                    async move {{ service.{f}(req).await }}
                }}
            }})"#
            );
        }
        buf.push('\n');
    }
    buf.push_str("    }\n}\n");
}
