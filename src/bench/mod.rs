//! `pollchat bench`: a load generator for any line-based chat server.
//!
//! One mio loop opens N receivers, K stalled clients and one sender, then
//! the sender writes probe lines, each carrying a unique token, and the
//! receivers time their arrival. It measures pollchat, ncat `--chat`, the
//! tutorial servers, anything that relays lines; with `--tls`, any of them
//! behind TLS (every connection speaks it; handshakes belong to the connect
//! phase, never to the measured latency); with `--ws URL`, WebSocket chat
//! servers (one text frame is one line), over TLS for `wss://`; with
//! `--addr` repeated, a cluster: receivers spread over its nodes and the
//! sender on the first, so the latency is the fan-out across nodes; with
//! `--workers`, over several processes (a million receivers), each probe
//! timed by the send time it carries.
//!
//! - `token.rs`: the probe line and how a delivery is recognised.
//! - `tracker.rs`: sans-IO accounting (latency histograms, lost/dup/reorder).
//! - `worker.rs`: one process's share of the receivers, and the merge.
//! - `fleet.rs`: `--workers`: the worker processes and their pipe protocol.
//! - `swarm.rs`: the event loop that connects, sends and reads.
//! - `ws.rs`: one connection's WebSocket, the upgrade and then the frames
//!   (feature `web`; `ws_lean.rs` without it, where `--ws` is refused).
//! - `procfs.rs`: the server's RSS and CPU time, for `--server-pid`.
//! - `report.rs`: the result, as a table or JSON.
//! - `args.rs`: the command-line flags.
//!
//! None of this is reachable from `serve`: it is a subcommand of the same
//! binary, not part of the server's paths.

pub mod args;
pub mod fleet;
mod procfs;
pub mod report;
pub mod swarm;
pub mod token;
pub mod tracker;
pub mod worker;
#[cfg(feature = "web")]
mod ws;
#[cfg(not(feature = "web"))]
#[path = "ws_lean.rs"]
mod ws;
#[cfg(feature = "web")]
mod ws_frames;

use std::ffi::OsString;
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use args::BenchArgs;
pub use report::Report;
pub use swarm::{LoadPlan, Nodes, Shutdown, Sources, Swarm, SwarmPlan, TlsPlan, WsPlan};
pub use tracker::Tracker;

use fleet::Fleet;
use report::{NodeShare, Percentiles, ServerMemory};
use worker::{WorkerShare, histogram_counts};

/// What the lean build (no feature `web`) says to `--ws`.
const WS_NOT_BUILT: &str = "built without web support (rebuild with the default features)";

/// After connecting, wait until the server has said nothing for this long
/// (join notices, welcome lines) before measuring.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
/// ... but never longer than this.
const SETTLE_MAX: Duration = Duration::from_secs(20);
/// The idle span over which the server's CPU use is measured.
const IDLE_SPAN: Duration = Duration::from_secs(1);
/// How long a stalled client may take to see the end of its connection
/// once we finally read it.
const STALL_GRACE: Duration = Duration::from_secs(3);
/// Server memory is sampled at most this often during the load.
const RSS_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// `--then-stop`: how long the server may take to tell and close everyone.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(15);

/// Why a bench run could not be carried out (as opposed to what it found).
#[derive(Debug)]
pub enum BenchError {
    /// The bench's own event loop failed.
    Setup(io::Error),
    /// A connection to the server failed.
    Connect { addr: SocketAddr, source: io::Error },
    /// Not every connection was established in time.
    ConnectTimeout { connected: usize, wanted: usize },
    /// The server closed a connection before the load started.
    ClosedEarly { connection: usize, opened: usize },
    /// `--tls`, `--ca` or `--insecure` cannot be used (a bad CA file, a
    /// lean build).
    Tls(crate::client::tls::TlsSetupError),
    /// `--server-name` (or `--host`) is not a name TLS can check.
    TlsName(String),
    /// A TLS handshake or WebSocket upgrade failed: the reason, in words
    /// (an untrusted certificate, a port that does not speak TLS, a 404).
    Handshake { connection: usize, reason: String },
    /// A flag that goes with another was given without it.
    Flags(&'static str),
    /// `--ws` cannot be used: a URL that is not `ws://` or `wss://`, a host
    /// that does not resolve, flags that do not go with it, a lean build.
    Ws(String),
    /// A `--workers` process failed (`part` is which, when it is known).
    Worker { part: Option<usize>, reason: String },
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Setup(e) => write!(f, "bench event loop failed: {e}"),
            BenchError::Connect { addr, source } => write!(f, "cannot connect to {addr}: {source}"),
            BenchError::ConnectTimeout { connected, wanted } => write!(
                f,
                "only {connected} of {wanted} connections established before the connect timeout"
            ),
            BenchError::ClosedEarly { connection, opened } => write!(
                f,
                "the server closed connection #{connection} (of {opened} opened) before the load started"
            ),
            BenchError::Tls(e) => e.fmt(f),
            BenchError::TlsName(e) => write!(f, "--tls: {e}"),
            BenchError::Handshake { connection, reason } => {
                write!(f, "connection #{connection}: {reason}")
            }
            BenchError::Flags(e) => f.write_str(e),
            BenchError::Ws(e) => write!(f, "--ws: {e}"),
            BenchError::Worker {
                part: Some(part),
                reason,
            } => write!(f, "bench worker {part}: {reason}"),
            BenchError::Worker { part: None, reason } => write!(f, "bench workers: {reason}"),
        }
    }
}

impl std::error::Error for BenchError {}

/// One bench run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub swarm: SwarmPlan,
    pub load: LoadPlan,
    /// Read this process's memory and CPU from `/proc`.
    pub server_pid: Option<u32>,
    /// Processes holding the receivers: 1 (this one), or that many
    /// workers while this one sends.
    pub workers: usize,
    /// The run's receivers, all workers together.
    pub all_receivers: usize,
    /// In a worker: which part of the receivers it holds.
    pub part: Option<usize>,
    /// The command that starts a worker (`--worker-part K` is added).
    pub relaunch: Vec<OsString>,
    /// `--then-stop`: SIGTERM this process after the load, and watch.
    pub then_stop: Option<u32>,
}

/// Connect, settle, measure idle cost, run the load, judge stalled clients.
/// With `--workers`, the workers connect first and this process sends.
pub fn run(config: &BenchConfig) -> Result<Report, BenchError> {
    // Every connection is a file: take the open files the system allows.
    let _ = crate::config::raise_fd_limit();
    let pid = config.server_pid;
    let rss = || pid.and_then(procfs::rss_bytes);
    let rss_before = rss();

    // The server's CPU for the join storm: from before the first connect
    // (the workers', then this process's) until everyone has settled.
    let join_cpu = Cpu::start(pid);
    let mut fleet = match config.workers {
        1 => None,
        _ => Some(Fleet::start(config)?),
    };
    let workers_connect = fleet.as_ref().map_or(Duration::ZERO, |f| f.connect_phase);
    let mut swarm = connect_with_progress(&config.swarm)?;
    swarm.settle(SETTLE_QUIET, SETTLE_MAX)?;
    let join_cpu_seconds = join_cpu.seconds();
    let rss_connected = rss();
    let bench_rss = procfs::rss_bytes(std::process::id()).unwrap_or(0)
        + fleet.as_ref().map_or(0, Fleet::rss_bytes);

    let cpu = Cpu::start(pid);
    let machine = procfs::machine_cpu();
    swarm.idle(IDLE_SPAN)?;
    let idle_cpu_percent = cpu.percent(IDLE_SPAN).0;
    let machine_idle_cpu_percent = procfs::machine_busy_percent(machine);

    let mut tracker = Tracker::new(config.swarm.receivers);
    let mut rss_peak = rss_connected.unwrap_or(0);
    let load_start = Instant::now();
    let load_start_unix = unix_ms();
    let mut last_sample = load_start;
    let cpu = Cpu::start(pid);
    // Workers time the deliveries; here only the sending is left to do.
    let load = match fleet {
        Some(_) => LoadPlan {
            drain: Duration::ZERO,
            ..config.load.clone()
        },
        None => config.load.clone(),
    };
    swarm.run_load(&load, &mut tracker, &mut || {
        if last_sample.elapsed() >= RSS_SAMPLE_EVERY {
            last_sample = Instant::now();
            rss_peak = rss_peak.max(rss().unwrap_or(0));
        }
    })?;
    if let Some(fleet) = fleet.as_mut() {
        // The sender keeps reading (the server would judge it stalled)
        // and flushing while the workers count.
        let sent = tracker.tally().sent;
        fleet.wait_done(sent, config.load.drain, &mut || {
            swarm.idle(Duration::from_millis(50))
        })?;
    }
    let load_span = load_start.elapsed();
    let load_window_unix_ms = (load_start_unix, unix_ms());
    let (server_load_cpu, bench_cpu) = cpu.percent(load_span);
    let rss_final = rss();
    let stalled_disconnected = swarm.stalled_verdict(STALL_GRACE)?;
    let sent = tracker.tally().sent;
    // Before `--then-stop`, so the receivers it closes are not counted as
    // disconnected during the run.
    let mut shares = vec![share_of(&config.swarm, &swarm, &tracker)];
    let shutdown = match config.then_stop {
        Some(pid) => Some(swarm.stop_server(pid, SHUTDOWN_WAIT)?),
        None => None,
    };
    if let Some(fleet) = fleet.take() {
        shares.extend(fleet.collect()?);
    }
    let merged = worker::merge(&shares, sent);

    let opened = config.all_receivers + config.swarm.stalled + 1;
    let memory = match (rss_before, rss_connected, rss_final) {
        (Some(before), Some(connected), Some(last)) => Some(ServerMemory {
            rss_before_connect: before,
            rss_connected: connected,
            bytes_per_connection: connected.saturating_sub(before) as f64 / opened as f64,
            idle_cpu_percent,
            load_cpu_percent: server_load_cpu,
            rss_peak: rss_peak.max(last),
            rss_final: last,
            join_cpu_seconds,
        }),
        _ => None,
    };
    // In one process the span ends at the last delivery; across workers,
    // with the load.
    let active = match config.workers {
        1 => tracker.tally().active,
        _ => load_span,
    }
    .as_secs_f64();
    let nodes = node_shares(config, &merged.lost_by_node);
    Ok(Report {
        server: nodes
            .iter()
            .map(|node| node.addr.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        nodes,
        receivers: merged.receivers,
        stalled: config.swarm.stalled,
        rate: config.load.rate,
        window: config.load.window,
        payload: config.load.payload.max(token::TOKEN_LEN),
        tls: config.swarm.tls.is_some(),
        websocket: config.swarm.ws.is_some(),
        bench_cpu_percent: bench_cpu,
        connect_seconds: (workers_connect + swarm.connect_phase).as_secs_f64(),
        connect_us: Percentiles::from_nanos(&merged.connect),
        sent,
        deliveries: merged.deliveries,
        deliveries_per_second: if active > 0.0 {
            merged.deliveries as f64 / active
        } else {
            0.0
        },
        lost: merged.lost,
        duplicated: merged.duplicated,
        reordered: merged.reordered,
        strays: merged.strays,
        receivers_disconnected: merged.receivers_disconnected,
        per_delivery_us: Percentiles::from_nanos(&merged.per_delivery),
        fanout_us: Percentiles::from_nanos(&merged.fanout),
        stalled_disconnected,
        memory,
        workers: config.workers,
        bench_rss_bytes: bench_rss,
        machine_idle_cpu_percent,
        shutdown,
        load_window_unix_ms,
    })
}

/// What one process's receivers saw, as a worker hands it in.
pub(crate) fn share_of(plan: &SwarmPlan, swarm: &Swarm, tracker: &Tracker) -> WorkerShare {
    let nodes = &plan.nodes;
    let mut lost_by_node = vec![0; nodes.addrs().len()];
    for receiver in 0..plan.receivers {
        lost_by_node[nodes.node_of(plan.first + receiver)] += tracker.lost_by(receiver);
    }
    WorkerShare {
        connect: histogram_counts(&swarm.connect_latency),
        lost_by_node,
        receivers_disconnected: swarm.receivers_closed(),
        ..tracker.share()
    }
}

/// Who was on each server, and what its receivers missed.
fn node_shares(config: &BenchConfig, lost_by_node: &[u64]) -> Vec<NodeShare> {
    let plan = &config.swarm;
    let nodes = &plan.nodes;
    nodes
        .addrs()
        .iter()
        .enumerate()
        .map(|(node, addr)| NodeShare {
            // Under --ws there is one node, named by its URL.
            addr: plan
                .ws
                .as_ref()
                .map_or_else(|| addr.to_string(), |ws| ws.url.clone()),
            senders: usize::from(node == 0),
            receivers: nodes.dealt_to(node, config.all_receivers),
            stalled: nodes.dealt_to(node, plan.stalled),
            lost: lost_by_node.get(node).copied().unwrap_or(0),
        })
        .collect()
}

/// CPU time of the server (if known) and of the bench, from a start point.
struct Cpu {
    pid: Option<u32>,
    server: Option<Duration>,
    bench: Option<Duration>,
}

impl Cpu {
    fn start(pid: Option<u32>) -> Self {
        Self {
            pid,
            server: pid.and_then(procfs::cpu_time),
            bench: procfs::cpu_time(std::process::id()),
        }
    }

    /// The server's CPU seconds since `start` (0 when unknown).
    fn seconds(&self) -> f64 {
        match (self.server, self.pid.and_then(procfs::cpu_time)) {
            (Some(before), Some(now)) => now.saturating_sub(before).as_secs_f64(),
            _ => 0.0,
        }
    }

    /// (server, bench) CPU use since `start`, in percent of one core.
    fn percent(&self, span: Duration) -> (f64, f64) {
        let share = |before: Option<Duration>, pid: Option<u32>| match (before, pid) {
            (Some(before), Some(pid)) if !span.is_zero() => procfs::cpu_time(pid)
                .map_or(0.0, |now| {
                    100.0 * now.saturating_sub(before).as_secs_f64() / span.as_secs_f64()
                }),
            _ => 0.0,
        };
        (
            share(self.server, self.pid),
            share(self.bench, Some(std::process::id())),
        )
    }
}

/// Milliseconds since the Unix epoch, to line the run up with samples
/// taken outside it (`benches/scale.sh`).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Connect, with a progress line on stderr when it is a terminal (a long
/// connect phase otherwise looks like a hang). A `\r`-rewritten counter,
/// redrawn at most once per percent: a progress-bar crate cost the whole
/// binary 90 KB and a second shared library (libm) resident in every server.
fn connect_with_progress(plan: &SwarmPlan) -> Result<Swarm, BenchError> {
    let total = plan.receivers + plan.stalled + 1;
    if !io::stderr().is_terminal() {
        return Swarm::connect(plan, &mut |_, _| {});
    }
    let mut shown = 0;
    let swarm = Swarm::connect(plan, &mut |done, total| {
        let percent = done * 100 / total.max(1);
        if percent != shown || done == total {
            shown = percent;
            eprint!("\rconnecting {done}/{total} ({percent}%)");
        }
    });
    eprint!(
        "\r{:width$}\r",
        "",
        width = 32 + 2 * total.to_string().len()
    );
    swarm
}
