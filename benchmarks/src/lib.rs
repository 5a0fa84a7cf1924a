//! The echo benchmark: Gannet side by side with tonic, Volo and a raw-TCP ceiling.
//!
//! [`systems`] starts each system's echo server and client, [`runner`] drives a load and
//! measures latency with `hdrhistogram`, [`raw`] is the raw-TCP ceiling, and [`report`] writes
//! the tables and plots. The `gannet-benchmarks` binary runs every system in one run, each
//! server and client in its own process and tokio runtime.

pub mod raw;
pub mod report;
pub mod runner;
pub mod sysstat;
pub mod systems;

/// tonic's stubs, generated from `idl/echo.proto`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("echo");
}

/// Volo's stubs, generated from `idl/echo.thrift`.
#[allow(missing_docs, unsafe_code, clippy::all)]
pub mod thrift {
    include!(concat!(env!("OUT_DIR"), "/volo_gen.rs"));
}

/// The error type of the benchmark harness.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs `requests` echo calls through `system` in this process (server and client on two
/// runtimes of their own), for the smoke test that keeps the benchmark from rotting.
///
/// # Errors
/// If the system fails to serve, connect, or answer every call correctly.
pub fn smoke(system: systems::System, requests: u64) -> Result<runner::LoadResult, BoxError> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let (addr, handle) = server_rt.block_on(systems::start_server(system))?;
    let result = client_rt.block_on(async {
        let caller = systems::Caller::connect(system, addr).await?;
        let cfg = runner::LoadConfig {
            payload: 1024,
            concurrency: 8,
            warmup: std::time::Duration::from_millis(50),
            duration: std::time::Duration::from_secs(20),
            max_requests: requests,
        };
        Ok::<_, BoxError>(runner::run(caller, cfg, || {}).await)
    })?;
    server_rt.block_on(handle.stop());
    if result.requests < requests || result.errors > 0 {
        return Err(format!(
            "{}: {} of {requests} requests, {} errors (first: {:?})",
            system.name(),
            result.requests,
            result.errors,
            result.first_error
        )
        .into());
    }
    Ok(result)
}
