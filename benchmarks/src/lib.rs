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

/// A multi-thread tokio runtime with one worker, as each side of a benchmark gets.
fn one_worker_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
}

/// Runs `requests` echo calls through `system` in this process (server and client on two
/// runtimes of their own), for the smoke test that keeps the benchmark from rotting.
///
/// # Errors
/// If the system fails to serve, connect, or answer every call correctly.
pub fn smoke(system: systems::System, requests: u64) -> Result<runner::LoadResult, BoxError> {
    let (server_rt, client_rt) = (one_worker_runtime()?, one_worker_runtime()?);
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

/// Drives `systems` in alternating phases in this process (their servers on one runtime, the
/// client on another), for the smoke test of the alternating mode.
///
/// # Errors
/// If a system fails to serve or connect, a phase counts no reply, or a call fails.
pub fn smoke_alternating(systems: &[systems::System]) -> Result<runner::AltResult, BoxError> {
    let (server_rt, client_rt) = (one_worker_runtime()?, one_worker_runtime()?);
    let mut servers = Vec::new();
    for system in systems {
        servers.push(server_rt.block_on(systems::start_server(*system))?);
    }
    let cfg = runner::AltConfig {
        payload: 1024,
        concurrency: 8,
        warmup: std::time::Duration::ZERO,
        phase: std::time::Duration::from_millis(60),
        lead_in: std::time::Duration::from_millis(10),
        cycles: 3,
    };
    let result = client_rt.block_on(async {
        let mut callers = Vec::new();
        for (system, (addr, _)) in systems.iter().zip(&servers) {
            callers.push(systems::Caller::connect(*system, *addr).await?);
        }
        Ok::<_, BoxError>(runner::run_alternating(&callers, cfg, || {}).await)
    })?;
    for (_, handle) in servers {
        server_rt.block_on(handle.stop());
    }
    for (system, (r, cycles)) in systems
        .iter()
        .zip(result.results.iter().zip(&result.cycles))
    {
        if r.requests == 0 || r.errors > 0 || cycles.len() != cfg.cycles {
            return Err(format!(
                "{} alternating: {} requests, {} errors (first: {:?}), {} cycles",
                system.name(),
                r.requests,
                r.errors,
                r.first_error,
                cycles.len()
            )
            .into());
        }
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::systems::System;

    #[test]
    fn alternating_phases_measure_every_system_in_every_cycle() {
        let r = super::smoke_alternating(&[System::Gannet, System::RawTcp]).unwrap();
        assert_eq!(r.results.len(), 2);
        for (res, cycles) in r.results.iter().zip(&r.cycles) {
            assert!(cycles.iter().all(|q| *q > 0.0), "{cycles:?}");
            // Three measured phases of 50 ms each, give or take the timer.
            assert!(res.seconds > 0.1 && res.seconds < 1.0, "{}", res.seconds);
            assert_eq!(res.errors, 0);
        }
    }
}
