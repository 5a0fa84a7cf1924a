//! `cargo run -p gannet-benchmarks --release -- [options]`: runs every system for every case
//! in one run, each server and client in its own process and runtime, and writes the tables and
//! plots to `benchmarks/results/`. See `benchmarks/README.md`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gannet_benchmarks::report::{self, Case, PairedRatio, Row, RunInfo};
use gannet_benchmarks::runner::{self, AltResult, LoadConfig, LoadResult};
use gannet_benchmarks::systems::{Caller, System, start_server};
use gannet_benchmarks::{BoxError, sysstat};

const USAGE: &str = "\
usage: gannet-benchmarks [options]
  --cases LIST        comma-separated cases (default: all): echo-1k-c100, echo-1k-c1000,
                      echo-16k-c100, ceiling-1k-c100, ecosystem-1k-c100
  --systems LIST      comma-separated systems (default: all): gannet, gannet-ecosystem,
                      gannet-governed, gannet-otel, tonic, volo, raw-tcp
  --duration SECS     measured seconds per system and case (default 5)
  --warmup SECS       unmeasured warm-up seconds (default 1)
  --max-requests N    stop measuring after N replies (default 5000000)
  --rounds N          measure every system N times, interleaved, and report each system's
                      median-QPS round (default 3)
  --threads N         tokio worker threads of each server and each client (default 1)
  --no-pin            do not pin the server to CPU 0 and the client to CPU 1
  --out DIR           where to write results (default benchmarks/results)
  --smoke             a few hundred requests through each system, in process; writes nothing";

struct CaseSpec {
    name: &'static str,
    title: &'static str,
    payload: usize,
    concurrency: usize,
    systems: &'static [System],
    /// Measure the systems in alternating short phases from one client process (for ratios
    /// too close for separate runs on a noisy machine) instead of in separate runs.
    alternate: bool,
}

const PEERS: &[System] = &[System::Gannet, System::Tonic, System::Volo, System::RawTcp];

const CASES: &[CaseSpec] = &[
    CaseSpec {
        name: "echo-1k-c100",
        title: "Echo, 1 KiB payload, 100 concurrent calls",
        payload: 1024,
        concurrency: 100,
        systems: PEERS,
        alternate: false,
    },
    CaseSpec {
        name: "echo-1k-c1000",
        title: "Echo, 1 KiB payload, 1,000 concurrent calls",
        payload: 1024,
        concurrency: 1000,
        systems: PEERS,
        alternate: false,
    },
    CaseSpec {
        name: "echo-16k-c100",
        title: "Echo, 16 KiB payload, 100 concurrent calls",
        payload: 16 * 1024,
        concurrency: 100,
        systems: PEERS,
        alternate: false,
    },
    CaseSpec {
        name: "ceiling-1k-c100",
        title: "Gannet against the raw-TCP ceiling in alternating phases, 1 KiB payload, 100 \
                concurrent calls",
        payload: 1024,
        concurrency: 100,
        systems: &[System::Gannet, System::RawTcp],
        alternate: true,
    },
    CaseSpec {
        name: "ecosystem-1k-c100",
        title: "Ecosystem switched on vs bare client, 1 KiB payload, 100 concurrent calls",
        payload: 1024,
        concurrency: 100,
        systems: &[
            System::Gannet,
            System::GannetEcosystem,
            System::GannetGoverned,
            System::GannetOtel,
        ],
        alternate: true,
    },
];

struct Options {
    cases: Vec<&'static CaseSpec>,
    systems: Vec<System>,
    duration: Duration,
    warmup: Duration,
    max_requests: u64,
    rounds: usize,
    threads: usize,
    pin: bool,
    out: PathBuf,
}

fn runtime(threads: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let res = match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("load") => load(&args[1..]),
        Some("load-alt") => load_alt(&args[1..]),
        Some("idle-conns") => idle_conns(&args[1..]),
        Some("--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ if args.iter().any(|a| a == "--smoke") => smoke(),
        _ => parse(&args).and_then(orchestrate),
    };
    if let Err(e) = res {
        eprintln!("gannet-benchmarks: {e}");
        std::process::exit(1);
    }
}

fn parse(args: &[String]) -> Result<Options, BoxError> {
    let mut o = Options {
        cases: CASES.iter().collect(),
        systems: System::ALL.to_vec(),
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        max_requests: 5_000_000,
        rounds: 3,
        threads: 1,
        pin: true,
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results"),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--cases" => {
                let v = val()?;
                o.cases = v
                    .split(',')
                    .map(|n| {
                        CASES
                            .iter()
                            .find(|c| c.name == n)
                            .ok_or(format!("unknown case {n}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--systems" => {
                let v = val()?;
                o.systems = v
                    .split(',')
                    .map(|n| System::parse(n).ok_or(format!("unknown system {n}")))
                    .collect::<Result<_, _>>()?;
            }
            "--duration" => o.duration = Duration::from_secs_f64(val()?.parse()?),
            "--warmup" => o.warmup = Duration::from_secs_f64(val()?.parse()?),
            "--max-requests" => o.max_requests = val()?.parse()?,
            "--rounds" => o.rounds = val()?.parse::<usize>()?.max(1),
            "--threads" => o.threads = val()?.parse()?,
            "--out" => o.out = PathBuf::from(val()?),
            "--no-pin" => o.pin = false,
            other => return Err(format!("unknown option {other}\n{USAGE}").into()),
        }
    }
    Ok(o)
}

/// `serve SYSTEM THREADS`: starts a server, prints `LISTENING addr`, serves until killed.
fn serve(args: &[String]) -> Result<(), BoxError> {
    let system =
        System::parse(args.first().ok_or("serve needs a system")?).ok_or("unknown system")?;
    let threads = args.get(1).map_or(Ok(1), |t| t.parse())?;
    runtime(threads).block_on(async {
        let (addr, _handle) = start_server(system).await?;
        println!("LISTENING {addr}");
        std::future::pending::<()>().await;
        Ok(())
    })
}

/// `load SYSTEM ADDR PAYLOAD CONCURRENCY WARMUP_MS DURATION_MS MAX THREADS`: prints
/// `MEASURING` when the measured phase starts and `RESULT {json}` at the end.
fn load(args: &[String]) -> Result<(), BoxError> {
    let [
        system,
        addr,
        payload,
        concurrency,
        warmup,
        duration,
        max,
        threads,
    ] = args
    else {
        return Err("load needs 8 arguments".into());
    };
    let system = System::parse(system).ok_or("unknown system")?;
    let addr: SocketAddr = addr.parse()?;
    let cfg = LoadConfig {
        payload: payload.parse()?,
        concurrency: concurrency.parse()?,
        warmup: Duration::from_millis(warmup.parse()?),
        duration: Duration::from_millis(duration.parse()?),
        max_requests: max.parse()?,
    };
    runtime(threads.parse()?).block_on(async {
        let caller = Caller::connect(system, addr).await?;
        let cpu0 = std::cell::Cell::new(0.0);
        let mut result = runner::run(caller, cfg, || {
            cpu0.set(sysstat::cpu_seconds("self").unwrap_or(0.0));
            println!("MEASURING");
        })
        .await;
        result.client_cpu_s = sysstat::cpu_seconds("self").unwrap_or(0.0) - cpu0.get();
        result.client_peak_rss_kib = sysstat::peak_rss_kib("self").unwrap_or(0);
        println!("RESULT {}", serde_json::to_string(&result)?);
        Ok(())
    })
}

/// Each system's QPS per round (or per cycle), `None` for a failed one.
type RoundsQps = Vec<(String, Vec<Option<f64>>)>;

/// The length of one system's phase in an alternating case.
const PHASE: Duration = Duration::from_millis(250);

/// The unmeasured start of a phase of length `phase` (the pipeline filling up).
fn lead_in(phase: Duration) -> Duration {
    (phase / 10).min(Duration::from_millis(25))
}

/// `load-alt PAYLOAD CONCURRENCY WARMUP_MS PHASE_MS CYCLES THREADS SYSTEM=ADDR...`: drives the
/// systems in alternating phases ([`runner::run_alternating`]); prints `MEASURING` when the
/// warm-up is over and `RESULT {json}` at the end.
fn load_alt(args: &[String]) -> Result<(), BoxError> {
    let [
        payload,
        concurrency,
        warmup,
        phase,
        cycles,
        threads,
        targets @ ..,
    ] = args
    else {
        return Err("load-alt needs 6 arguments and at least one SYSTEM=ADDR".into());
    };
    let targets = targets
        .iter()
        .map(|t| {
            let (s, a) = t.split_once('=').ok_or("targets are SYSTEM=ADDR")?;
            let system = System::parse(s).ok_or("unknown system")?;
            Ok::<_, BoxError>((system, a.parse::<SocketAddr>()?))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if targets.is_empty() {
        return Err("load-alt needs at least one SYSTEM=ADDR".into());
    }
    let phase = Duration::from_millis(phase.parse()?);
    let cfg = runner::AltConfig {
        payload: payload.parse()?,
        concurrency: concurrency.parse()?,
        warmup: Duration::from_millis(warmup.parse()?),
        phase,
        lead_in: lead_in(phase),
        cycles: cycles.parse::<usize>()?.max(1),
    };
    runtime(threads.parse()?).block_on(async {
        let mut callers = Vec::with_capacity(targets.len());
        for (system, addr) in targets {
            callers.push(Caller::connect(system, addr).await?);
        }
        let result = runner::run_alternating(&callers, cfg, || println!("MEASURING")).await;
        println!("RESULT {}", serde_json::to_string(&result)?);
        Ok(())
    })
}

/// Runs an alternating case in `o.rounds` sessions, each with fresh processes (every system's
/// server in its own, pinned like the others, and one client process driving them in turn).
/// A session's QPS per system is its total over its phases: the case's rounds are the
/// sessions, so ratios and their intervals take in what differs between separate runs (heap
/// and cache layout, the neighbours' load), not only the noise between phases. Returns each
/// system's median session and its QPS per session.
fn run_alternating_case(o: &Options, spec: &CaseSpec, systems: &[System]) -> (Vec<Row>, RoundsQps) {
    let cycles = (o.duration.as_secs_f64() / PHASE.as_secs_f64())
        .ceil()
        .max(2.0) as usize;
    let mut sessions: Vec<Vec<Row>> = vec![Vec::with_capacity(o.rounds); systems.len()];
    for session in 0..o.rounds {
        eprintln!("  session {}/{}", session + 1, o.rounds);
        for (runs, row) in sessions
            .iter_mut()
            .zip(run_alternating_session(o, spec, systems, cycles))
        {
            runs.push(row);
        }
    }
    summarize_runs(systems, sessions)
}

/// Each system's median run (as its row) and its QPS in every run, from `runs[i]`, system
/// `i`'s runs in order.
fn summarize_runs(systems: &[System], runs: Vec<Vec<Row>>) -> (Vec<Row>, RoundsQps) {
    let rounds = systems
        .iter()
        .zip(&runs)
        .map(|(s, rows)| {
            let qps = rows
                .iter()
                .map(|r| r.result.as_ref().map(|x| x.qps))
                .collect();
            (s.name().to_string(), qps)
        })
        .collect();
    (runs.into_iter().map(median_row).collect(), rounds)
}

/// One session of an alternating case: `cycles` cycles, each giving every system one phase.
fn run_alternating_session(
    o: &Options,
    spec: &CaseSpec,
    systems: &[System],
    cycles: usize,
) -> Vec<Row> {
    let outcome = (|| -> Result<(AltResult, Vec<(f64, u64)>), BoxError> {
        let mut servers = Vec::with_capacity(systems.len());
        for system in systems {
            servers.push(start_server_process(o, *system)?);
        }
        let pids: Vec<String> = servers.iter().map(|(k, _)| k.0.id().to_string()).collect();
        let mut client = Killed(
            command(o, "1")
                .args([
                    "load-alt".to_string(),
                    spec.payload.to_string(),
                    spec.concurrency.to_string(),
                    o.warmup.as_millis().to_string(),
                    PHASE.as_millis().to_string(),
                    cycles.to_string(),
                    o.threads.to_string(),
                ])
                .args(
                    systems
                        .iter()
                        .zip(&servers)
                        .map(|(s, (_, addr))| format!("{}={addr}", s.name())),
                )
                .stdout(Stdio::piped())
                .spawn()?,
        );
        client_result(&mut client, &pids)
    })();
    match outcome {
        Ok((alt, servers)) => systems
            .iter()
            .zip(alt.results)
            .zip(servers)
            .map(|((s, result), (cpu, rss))| Row {
                system: s.name().to_string(),
                result: Some(result),
                server_cpu_s: cpu,
                server_peak_rss_kib: rss,
                failure: None,
            })
            .collect(),
        Err(e) => systems
            .iter()
            .map(|s| Row {
                system: s.name().to_string(),
                result: None,
                server_cpu_s: 0.0,
                server_peak_rss_kib: 0,
                failure: Some(e.to_string()),
            })
            .collect(),
    }
}

/// `idle-conns ADDR N`: opens N Gannet connections to ADDR and prints the resident memory
/// they added, `IDLE {kib_per_connection}`.
fn idle_conns(args: &[String]) -> Result<(), BoxError> {
    let [addr, n] = args else {
        return Err("idle-conns needs 2 arguments".into());
    };
    let addr: SocketAddr = addr.parse()?;
    let n: usize = n.parse()?;
    runtime(1).block_on(async {
        let client = gannet_core::Client::builder("echo")
            .address(addr)
            .connections_per_instance(n)
            .build()?;
        let msg = gannet_benchmarks::systems::EchoMessage::default();
        // One call first so the runtime, timers and buffers exist before the baseline.
        let _: gannet_benchmarks::systems::EchoMessage = client.call("Echo", &msg).await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = sysstat::rss_kib("self").unwrap_or(0);
        for _ in 0..n {
            let _: gannet_benchmarks::systems::EchoMessage = client.call("Echo", &msg).await?;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = sysstat::rss_kib("self").unwrap_or(0);
        let open = client.connection_count();
        println!(
            "IDLE {:.2} {open}",
            after.saturating_sub(before) as f64 / open.max(1) as f64
        );
        Ok(())
    })
}

fn command(o: &Options, cpu: &str) -> Command {
    let exe = std::env::current_exe().expect("own path");
    if o.pin && std::path::Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg(cpu).arg(exe);
        c
    } else {
        Command::new(exe)
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server_process(o: &Options, system: System) -> Result<(Killed, SocketAddr), BoxError> {
    let mut child = command(o, "0")
        .args(["serve", system.name(), &o.threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no server stdout")?;
    let server = Killed(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr = line
        .strip_prefix("LISTENING ")
        .ok_or_else(|| format!("{} server did not start: {line:?}", system.name()))?
        .trim()
        .parse()?;
    Ok((server, addr))
}

/// Reads a load client's output until its `RESULT`: the result, and each server's (by pid)
/// CPU seconds from `MEASURING` to `RESULT` and peak RSS.
fn client_result<T: serde::de::DeserializeOwned>(
    client: &mut Killed,
    pids: &[String],
) -> Result<(T, Vec<(f64, u64)>), BoxError> {
    let stdout = client.0.stdout.take().ok_or("no client stdout")?;
    let cpu = |pid: &String| sysstat::cpu_seconds(pid).unwrap_or(0.0);
    let mut cpu0 = vec![0.0; pids.len()];
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == "MEASURING" {
            cpu0 = pids.iter().map(cpu).collect();
        } else if let Some(json) = line.strip_prefix("RESULT ") {
            let servers = pids
                .iter()
                .zip(&cpu0)
                .map(|(pid, c0)| (cpu(pid) - c0, sysstat::peak_rss_kib(pid).unwrap_or(0)))
                .collect();
            return Ok((serde_json::from_str(json)?, servers));
        }
    }
    Err("the client ended without a result".into())
}

fn run_one(o: &Options, spec: &CaseSpec, system: System) -> Row {
    let mut row = Row {
        system: system.name().to_string(),
        result: None,
        server_cpu_s: 0.0,
        server_peak_rss_kib: 0,
        failure: None,
    };
    let outcome = (|| -> Result<(LoadResult, f64, u64), BoxError> {
        let (server, addr) = start_server_process(o, system)?;
        let pid = server.0.id().to_string();
        let mut client = Killed(
            command(o, "1")
                .args([
                    "load",
                    system.name(),
                    &addr.to_string(),
                    &spec.payload.to_string(),
                    &spec.concurrency.to_string(),
                    &o.warmup.as_millis().to_string(),
                    &o.duration.as_millis().to_string(),
                    &o.max_requests.to_string(),
                    &o.threads.to_string(),
                ])
                .stdout(Stdio::piped())
                .spawn()?,
        );
        let (result, servers) = client_result(&mut client, &[pid])?;
        Ok((result, servers[0].0, servers[0].1))
    })();
    match outcome {
        Ok((result, cpu, rss)) => {
            row.result = Some(result);
            row.server_cpu_s = cpu;
            row.server_peak_rss_kib = rss;
        }
        Err(e) => row.failure = Some(e.to_string()),
    }
    row
}

/// The round with the median QPS (a failed round counts as the lowest); its QPS range over
/// all rounds is noted.
fn median_row(mut rounds: Vec<Row>) -> Row {
    let qps = |r: &Row| r.result.as_ref().map_or(-1.0, |x| x.qps);
    rounds.sort_by(|a, b| qps(a).total_cmp(&qps(b)));
    let (lo, hi) = (qps(&rounds[0]), qps(&rounds[rounds.len() - 1]));
    let mut row = rounds.swap_remove(rounds.len() / 2);
    if let Some(r) = &mut row.result {
        r.qps_range = Some((lo.max(0.0), hi));
    }
    row
}

fn idle_connection_memory(o: &Options) -> Result<(f64, usize), BoxError> {
    let (_server, addr) = start_server_process(o, System::Gannet)?;
    let out = command(o, "1")
        .args(["idle-conns", &addr.to_string(), "1000"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("IDLE "))
        .ok_or("no IDLE line")?;
    let mut parts = line.split_whitespace();
    let kib: f64 = parts.next().ok_or("no value")?.parse()?;
    let open: usize = parts.next().ok_or("no count")?.parse()?;
    Ok((kib, open))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({cpu})")
}

fn utc_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn orchestrate(o: Options) -> Result<(), BoxError> {
    let info = RunInfo {
        date: utc_now(),
        machine: machine(),
        setup: format!(
            "Each server and each client is its own process with a multi-thread tokio runtime of \
             {} worker thread(s){}; every system runs in the same run, one after the other, in {} \
             interleaved rounds (every other round in reverse order); each row is the system's \
             median-QPS round (the QPS column shows the range over all rounds). Warm-up {:?} \
             (not measured), then {:?} measured or {} replies, whichever first. Latency from `hdrhistogram` on the client. \
             Loopback only.",
            o.threads,
            if o.pin {
                ", the server pinned to CPU 0 and the client to CPU 1 (`taskset`)"
            } else {
                ", not pinned"
            },
            o.rounds,
            o.warmup,
            o.duration,
            o.max_requests
        ),
    };
    let mut cases = Vec::new();
    for spec in &o.cases {
        let mut case = Case {
            name: spec.name.to_string(),
            title: spec.title.to_string(),
            rows: Vec::new(),
            rounds: Vec::new(),
            method: None,
        };
        let systems: Vec<System> = spec
            .systems
            .iter()
            .copied()
            .filter(|s| o.systems.contains(s))
            .collect();
        if spec.alternate {
            eprintln!(
                "{}: {} in alternating {:?} phases ...",
                spec.name,
                systems
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
                PHASE
            );
            let (rows, rounds) = run_alternating_case(&o, spec, &systems);
            case.rows = rows;
            case.rounds = rounds;
            case.method = Some(alternating_method(&o));
        } else {
            let (rows, rounds) = run_rounds(&o, spec, &systems);
            case.rows = rows;
            case.rounds = rounds;
        }
        report::write_case(&o.out, &case, &info)?;
        println!("{}", report::table(&case));
        cases.push(case);
    }
    let idle = idle_connection_memory(&o);
    let summary = summary(&cases, &idle, &info);
    std::fs::write(o.out.join("README.md"), &summary)?;
    println!("{summary}");
    Ok(())
}

/// Runs a case in rounds of separate runs, each system in its own server and client processes.
/// Returns each system's median round and its QPS per round.
fn run_rounds(o: &Options, spec: &CaseSpec, systems: &[System]) -> (Vec<Row>, RoundsQps) {
    // Rounds interleave the systems, so a slow spell of the machine hits all of them; every
    // other round runs them in reverse, so a drift within a round favours no one.
    let mut runs: Vec<Vec<Row>> = vec![Vec::new(); systems.len()];
    for round in 1..=o.rounds {
        let mut order: Vec<usize> = (0..systems.len()).collect();
        if round % 2 == 0 {
            order.reverse();
        }
        for i in order {
            let system = &systems[i];
            eprintln!(
                "{} round {round}/{}: {} ...",
                spec.name,
                o.rounds,
                system.name()
            );
            let row = run_one(o, spec, *system);
            match (&row.result, &row.failure) {
                (Some(r), _) => {
                    eprintln!(
                        "  {:.0} QPS, p99 {} µs, {} errors",
                        r.qps, r.p99_us, r.errors
                    )
                }
                (None, f) => eprintln!("  failed: {f:?}"),
            }
            runs[i].push(row);
        }
    }
    summarize_runs(systems, runs)
}

fn alternating_method(o: &Options) -> String {
    format!(
        "{} sessions, each with fresh processes: every system's server is its own process with \
         a multi-thread tokio runtime of {} worker thread(s), and one client process drives them \
         in turn{}: phases of {:?} (the first {:?} of each not measured), every cycle giving each \
         system one phase, every other cycle in reverse order, {:?} of warm-up phases first; so \
         systems are compared a few hundred milliseconds apart rather than seconds, and ratios \
         are taken per session (a session's QPS per system is its total over its phases). Each \
         row is the system's median session (the QPS column shows the range over sessions); \
         client CPU is the client process's over the system's phases; client peak RSS \
         is the one client process's. Latency from `hdrhistogram` on the client. Loopback only.",
        o.rounds,
        o.threads,
        if o.pin {
            ", the servers pinned to CPU 0 and the client to CPU 1 (`taskset`)"
        } else {
            ", not pinned"
        },
        PHASE,
        lead_in(PHASE),
        o.warmup,
    )
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn summary(cases: &[Case], idle: &Result<(f64, usize), BoxError>, info: &RunInfo) -> String {
    use std::fmt::Write;
    let mut s = String::from("# Benchmark results\n\n");
    let _ = writeln!(
        s,
        "Run {} on {}.\n\n{}\n",
        info.date, info.machine, info.setup
    );
    let _ = writeln!(
        s,
        "Reproduce: `cargo run -p gannet-benchmarks --release`.\n\n## Cases\n"
    );
    for c in cases {
        let _ = writeln!(s, "- [{}]({}.md)", c.title, c.name);
    }
    let _ = writeln!(
        s,
        "\n## Targets\n\nRatios between systems are the median over rounds of their QPS in the same \
         round (systems in one round run back to back, so they share the machine's state), with \
         the median's 95% confidence interval in brackets (order statistics; nothing assumed \
         about the noise). The ceiling and ecosystem cases' rounds are separate sessions, each \
         alternating the systems in 250 ms phases. A \
         target is met when the whole interval meets it, missed when none of it does, and \
         \"within noise\" otherwise (saying which side the median is on).\n\n| target | measured | met |\n|---|---|---|"
    );
    let qps = |case: &str, sys: &str| {
        cases
            .iter()
            .find(|c| c.name == case)
            .and_then(|c| c.result(sys))
            .map(|r| r.qps)
    };
    let p99 = |case: &str, sys: &str| {
        cases
            .iter()
            .find(|c| c.name == case)
            .and_then(|c| c.result(sys))
            .map(|r| r.p99_us as f64)
    };
    let line = |s: &mut String,
                target: &str,
                value: Option<f64>,
                fmt: &dyn Fn(f64) -> String,
                ok: &dyn Fn(f64) -> bool| {
        let (m, met) = match value {
            Some(v) => (fmt(v), if ok(v) { "yes" } else { "no" }),
            None => ("not measured".to_string(), "—"),
        };
        let _ = writeln!(s, "| {target} | {m} | {met} |");
    };
    let x = |v: f64| format!("{v:.2}×");
    line(
        &mut s,
        "Gannet QPS ≥ 3× tonic (1 KiB, c=100)",
        ratio(qps("echo-1k-c100", "gannet"), qps("echo-1k-c100", "tonic")),
        &x,
        &|v| v >= 3.0,
    );
    line(
        &mut s,
        "Gannet QPS ≥ 1.2× Volo (1 KiB, c=100)",
        ratio(qps("echo-1k-c100", "gannet"), qps("echo-1k-c100", "volo")),
        &x,
        &|v| v >= 1.2,
    );
    line(
        &mut s,
        "Gannet p99 below tonic's (1 KiB, c=100)",
        ratio(p99("echo-1k-c100", "gannet"), p99("echo-1k-c100", "tonic")),
        &|v| format!("{v:.2}× tonic's p99"),
        &|v| v < 1.0,
    );
    line(
        &mut s,
        "Gannet p99 below Volo's (1 KiB, c=100)",
        ratio(p99("echo-1k-c100", "gannet"), p99("echo-1k-c100", "volo")),
        &|v| format!("{v:.2}× Volo's p99"),
        &|v| v < 1.0,
    );
    let paired = |case: &str, a: &str, b: &str| {
        cases
            .iter()
            .find(|c| c.name == case)
            .and_then(|c| c.paired_ratio(a, b))
    };
    // The alternating case pairs the two within 250 ms; the echo case's rounds run them
    // seconds apart, through the machine's swings.
    let ceiling = paired("ceiling-1k-c100", "gannet", "raw-tcp");
    let echo_ceiling = paired("echo-1k-c100", "gannet", "raw-tcp");
    let how = if ceiling.is_some() {
        "alternating phases"
    } else {
        "separate runs"
    };
    verdict_line(
        &mut s,
        &format!("Gannet ≥ 70% of the raw-TCP ceiling (1 KiB, c=100; {how})"),
        ceiling.or(echo_ceiling),
        |v| v * 100.0,
        "",
        |v| v >= 0.7,
    );
    let eco = paired("ecosystem-1k-c100", "gannet-ecosystem", "gannet");
    verdict_line(
        &mut s,
        "Ecosystem (discovery + balancing + tracer + middleware) costs < 5% QPS",
        eco,
        |v| (1.0 - v) * 100.0,
        " less QPS",
        |v| v > 0.95,
    );
    let governed = paired("ecosystem-1k-c100", "gannet-governed", "gannet").map(|r| r.median);
    let otel = paired("ecosystem-1k-c100", "gannet-otel", "gannet").map(|r| r.median);
    match idle {
        Ok((kib, open)) => line(
            &mut s,
            "< 64 KiB resident memory per idle client connection",
            Some(*kib),
            &|v| format!("{v:.1} KiB ({open} connections)"),
            &|v| v < 64.0,
        ),
        Err(e) => {
            let _ = writeln!(
                s,
                "| < 64 KiB per idle client connection | failed: {e} | — |"
            );
        }
    }
    if ceiling.is_some()
        && let Some(r) = echo_ceiling
    {
        let _ = writeln!(
            s,
            "\nThe echo case's separate runs put Gannet at {:.1}% of the ceiling (95% CI \
             {:.1}–{:.1}%, {} rounds).",
            r.median * 100.0,
            r.low * 100.0,
            r.high * 100.0,
            r.rounds
        );
    }
    if let Some(r) = governed {
        let _ = writeln!(
            s,
            "\nNot a target: the ecosystem plus timeout, failure-retry and circuit-breaker \
             policies (`gannet-governed`) costs {:.1}% QPS against the bare client.",
            (1.0 - r) * 100.0
        );
    }
    if let Some(r) = otel {
        let _ = writeln!(
            s,
            "\nNot a target: the ecosystem plus the OpenTelemetry tracing and metrics suites \
             on both sides (`gannet-otel`) costs {:.1}% QPS against the bare client.",
            (1.0 - r) * 100.0
        );
    }
    s
}

/// One row of the targets table for a paired ratio: the median and its interval shown through
/// `shown` (a percentage), met when `ok` holds for the whole interval.
fn verdict_line(
    s: &mut String,
    target: &str,
    r: Option<PairedRatio>,
    shown: impl Fn(f64) -> f64,
    unit: &str,
    ok: impl Fn(f64) -> bool,
) {
    use std::fmt::Write;
    let Some(r) = r else {
        let _ = writeln!(s, "| {target} | not measured | — |");
        return;
    };
    let (a, b) = (shown(r.low), shown(r.high));
    let met = match (ok(r.low), ok(r.high), ok(r.median)) {
        (true, true, _) => "yes",
        (false, false, _) => "no",
        (_, _, true) => "within noise (the median meets it)",
        (_, _, false) => "within noise (the median misses it)",
    };
    let _ = writeln!(
        s,
        "| {target} | {:.1}%{unit} (95% CI {:.1}–{:.1}%, {} rounds) | {met} |",
        shown(r.median),
        a.min(b),
        a.max(b),
        r.rounds
    );
}

/// A few hundred requests through each system in this process.
fn smoke() -> Result<(), BoxError> {
    for system in System::ALL {
        let r = gannet_benchmarks::smoke(system, 300)?;
        println!(
            "{}: {} requests, {} errors, p99 {} µs",
            system.name(),
            r.requests,
            r.errors,
            r.p99_us
        );
    }
    let alt = gannet_benchmarks::smoke_alternating(&[System::Gannet, System::GannetEcosystem])?;
    println!(
        "alternating gannet/gannet-ecosystem: {} + {} requests in {} cycles",
        alt.results[0].requests,
        alt.results[1].requests,
        alt.cycles[0].len()
    );
    Ok(())
}
