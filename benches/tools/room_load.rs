//! The client side of `benches/join_storm.sh` (issue 14): many plain TCP
//! connections to a pollchat server on 127.0.0.1, in one mio loop, reading
//! everything the server sends and counting its lines. Not part of the
//! server; an example target built only by the script.
//!
//! - `storm`: open N connections as fast as the server welcomes them (at
//!   most `--window` opened but not yet welcomed, so the listen backlog
//!   never overflows into 1 s SYN retransmits), and stop once every client
//!   has its `* Welcome` line and the server has then been quiet for
//!   `--settle-ms`. Reports the wall time from the first connect to the
//!   last welcome, to the last byte, the server's CPU seconds
//!   (utime + stime of /proc/PID/stat, in clock ticks) over the storm, the
//!   notice lines received (lines starting with `* ` other than the welcome)
//!   and the server's RSS after.
//! - `memory`: open N connections as above, read the server's RSS, then
//!   client i sends `/join #room{i}` (RSS again once each has had a reply
//!   and the server is quiet: the empty rooms), then `--lines` lines of
//!   `--line-bytes` bytes and `/who`, and once every client has the `/who`
//!   reply (a `* ` line containing `--who-match`) and the server has been
//!   quiet for `--settle-ms`, the RSS again: the growth per room since
//!   "connected" against the bound `--lines` × `--max-line` (and split
//!   into empty room and history). Client 0's `/join` goes first, alone: a
//!   server without rooms answers `! unknown command`, and then the lines
//!   are not sent (in one room they would fan out to everyone) and the
//!   report says so (`--force` sends them anyway, for a small N).
//!
//! One JSON object on stdout; a human summary on stderr. Exit status 0 when
//! the run completed, 1 when it timed out or clients failed (the JSON still
//! says what happened), 2 for bad usage or set-up errors.
//!
//! Run: `room_load storm --port 9009 -n 5000 --server-pid PID`

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde_json::json;

/// Bytes of each line kept for classifying it; the rest is counted only.
const PREFIX: usize = 96;
/// Longest single wait for events, so deadlines are checked regularly.
const MAX_WAIT: Duration = Duration::from_millis(20);

#[derive(Parser)]
#[command(about = "Join-storm and room-memory load for pollchat (loopback only)")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Connect N clients at once; count the notices until all are welcomed.
    Storm(Common),
    /// N clients, one room each, full history: the server's RSS growth.
    Memory(MemoryArgs),
}

#[derive(Args, Clone)]
struct Common {
    /// The server's port on 127.0.0.1.
    #[arg(long)]
    port: u16,
    /// Clients to connect.
    #[arg(short = 'n', long, default_value_t = 5000)]
    clients: usize,
    /// The server's process id (CPU and RSS from /proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Most connections opened but not yet welcomed.
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Stop once the server has said nothing for this long (after every
    /// client's welcome, or reply).
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Give up after this many seconds in all.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

#[derive(Args)]
struct MemoryArgs {
    #[command(flatten)]
    common: Common,
    /// History lines each client sends into its room.
    #[arg(long, default_value_t = 20)]
    lines: usize,
    /// Bytes per history line, without its newline.
    #[arg(long, default_value_t = 2000)]
    line_bytes: usize,
    /// The server's --max-line, for the bound (lines × max-line per room).
    #[arg(long, default_value_t = 2048)]
    max_line: usize,
    /// Room names are this prefix and the client's number.
    #[arg(long, default_value = "#room")]
    room_prefix: String,
    /// The `/who` reply is the `* ` line containing this.
    #[arg(long, default_value = " here")]
    who_match: String,
    /// Send the lines even when the server refuses `/join` (one room: every
    /// line fans out to all the others; keep N small).
    #[arg(long)]
    force: bool,
}

struct Client {
    stream: TcpStream,
    connected: bool,
    welcomed: bool,
    /// The server closed it (EOF or reset), or the connect failed.
    closed: bool,
    /// The line being read: its first PREFIX bytes.
    prefix: Vec<u8>,
    lines: u64,
    /// `* ` lines other than the welcome.
    notices: u64,
    /// `! ` lines.
    errors: u64,
    /// `* ` lines containing the marker (memory mode's `/who` reply).
    marks: u64,
    out: Vec<u8>,
    out_pos: usize,
}

struct Swarm {
    poll: Poll,
    events: Events,
    addr: SocketAddr,
    clients: Vec<Client>,
    buf: Vec<u8>,
    welcomed: usize,
    /// Closed by the server or never connected.
    lost: usize,
    lost_before_welcome: usize,
    last_rx: Instant,
    last_welcome: Option<Instant>,
    bytes: u64,
    marker: Vec<u8>,
    /// Lines (their prefixes) of this client are kept in `captured`.
    capture: Option<usize>,
    captured: Vec<String>,
    first_error: Option<String>,
}

impl Swarm {
    fn new(port: u16, marker: &str) -> io::Result<Swarm> {
        Ok(Swarm {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            clients: Vec::new(),
            buf: vec![0; 64 * 1024],
            welcomed: 0,
            lost: 0,
            lost_before_welcome: 0,
            last_rx: Instant::now(),
            last_welcome: None,
            bytes: 0,
            marker: marker.as_bytes().to_vec(),
            capture: None,
            captured: Vec::new(),
            first_error: None,
        })
    }

    fn open(&mut self) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.addr)?;
        let index = self.clients.len();
        self.poll.registry().register(
            &mut stream,
            Token(index),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.clients.push(Client {
            stream,
            connected: false,
            welcomed: false,
            closed: false,
            prefix: Vec::with_capacity(PREFIX),
            lines: 0,
            notices: 0,
            errors: 0,
            marks: 0,
            out: Vec::new(),
            out_pos: 0,
        });
        Ok(())
    }

    /// Opened, still open, and not welcomed yet.
    fn pending(&self) -> usize {
        self.clients.len() - self.welcomed - self.lost_before_welcome
    }

    /// Open connections until `n` (at most `window` awaiting their welcome)
    /// and read until every one is welcomed and the server has been quiet
    /// for `settle`, or `deadline`. True if it got there.
    fn connect_all(
        &mut self,
        n: usize,
        window: usize,
        settle: Duration,
        deadline: Instant,
    ) -> io::Result<bool> {
        loop {
            while self.clients.len() < n && self.pending() < window {
                self.open()?;
            }
            let done = self.clients.len() == n && self.welcomed + self.lost_before_welcome == n;
            if done && self.last_rx.elapsed() >= settle {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.pump(MAX_WAIT)?;
        }
    }

    /// Read until `ready` holds and the server has been quiet for `settle`.
    fn wait_until(
        &mut self,
        settle: Duration,
        deadline: Instant,
        ready: impl Fn(&Swarm) -> bool,
    ) -> io::Result<bool> {
        loop {
            if ready(self) && self.last_rx.elapsed() >= settle {
                return Ok(true);
            }
            if Instant::now() >= deadline {
                return Ok(false);
            }
            self.pump(MAX_WAIT)?;
        }
    }

    fn pump(&mut self, wait: Duration) -> io::Result<()> {
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        let tokens: Vec<(usize, bool, bool)> = self
            .events
            .iter()
            .map(|e| {
                (
                    e.token().0,
                    e.is_readable() || e.is_read_closed(),
                    e.is_writable(),
                )
            })
            .collect();
        for (i, readable, writable) in tokens {
            if self.clients[i].closed {
                continue;
            }
            if !self.clients[i].connected {
                let c = &mut self.clients[i];
                let failed = match c.stream.take_error() {
                    Ok(Some(e)) | Err(e) => Some(e),
                    Ok(None) => match c.stream.peer_addr() {
                        Ok(_) => None,
                        Err(e) if e.kind() == io::ErrorKind::NotConnected => continue,
                        Err(e) => Some(e),
                    },
                };
                if let Some(e) = failed {
                    self.note_error(format!("connect: {e}"));
                    self.close(i);
                    continue;
                }
                self.clients[i].connected = true;
            }
            if writable {
                self.flush(i);
            }
            if readable {
                self.read(i);
            }
        }
        Ok(())
    }

    fn note_error(&mut self, what: String) {
        if self.first_error.is_none() {
            self.first_error = Some(what);
        }
    }

    fn close(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.closed {
            return;
        }
        c.closed = true;
        let _ = self.poll.registry().deregister(&mut c.stream);
        self.lost += 1;
        if !c.welcomed {
            self.lost_before_welcome += 1;
        }
    }

    /// Queue `data` on client i and write what its socket takes now.
    fn send(&mut self, i: usize, data: &[u8]) {
        self.clients[i].out.extend_from_slice(data);
        self.flush(i);
    }

    fn flush(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if !c.connected || c.closed {
            return;
        }
        while c.out_pos < c.out.len() {
            match c.stream.write(&c.out[c.out_pos..]) {
                Ok(0) => break,
                Ok(n) => c.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.note_error(format!("write: {e}"));
                    self.close(i);
                    return;
                }
            }
        }
        c.out.clear();
        c.out_pos = 0;
    }

    fn unwritten(&self) -> usize {
        self.clients
            .iter()
            .filter(|c| !c.closed)
            .map(|c| c.out.len() - c.out_pos)
            .sum()
    }

    fn read(&mut self, i: usize) {
        loop {
            let n = match self.clients[i].stream.read(&mut self.buf) {
                Ok(0) => {
                    self.close(i);
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.note_error(format!("read: {e}"));
                    self.close(i);
                    return;
                }
            };
            let now = Instant::now();
            self.last_rx = now;
            self.bytes += n as u64;
            let mut start = 0;
            while start < n {
                let chunk = &self.buf[start..n];
                let (part, ended) = match memchr::memchr(b'\n', chunk) {
                    Some(at) => (&chunk[..at], true),
                    None => (chunk, false),
                };
                let c = &mut self.clients[i];
                let room = PREFIX.saturating_sub(c.prefix.len());
                c.prefix.extend_from_slice(&part[..part.len().min(room)]);
                start += part.len() + usize::from(ended);
                if ended {
                    self.line(i, now);
                }
            }
        }
    }

    /// Client i has a complete line (its prefix in `prefix`).
    fn line(&mut self, i: usize, now: Instant) {
        let c = &mut self.clients[i];
        let line = std::mem::take(&mut c.prefix);
        c.lines += 1;
        if line.starts_with(b"* Welcome") && !c.welcomed {
            c.welcomed = true;
            self.welcomed += 1;
            self.last_welcome = Some(now);
        } else if line.starts_with(b"* ") {
            c.notices += 1;
            if !self.marker.is_empty() && memchr::memmem::find(&line, &self.marker).is_some() {
                c.marks += 1;
            }
        } else if line.starts_with(b"! ") {
            c.errors += 1;
            if self.first_error.is_none() {
                self.first_error = Some(format!(
                    "client {i} got: {}",
                    String::from_utf8_lossy(&line)
                ));
            }
        }
        if self.capture == Some(i) {
            self.captured
                .push(String::from_utf8_lossy(&line).trim_end().to_string());
        }
        let c = &mut self.clients[i];
        c.prefix = line;
        c.prefix.clear();
    }
}

/// utime + stime of the process, in clock ticks.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| (d.as_secs_f64() * 1e4).round() / 1e4)
}

fn cpu_s(before: Option<u64>, after: Option<u64>, tck: u64) -> Option<f64> {
    Some(after?.saturating_sub(before?) as f64 / tck.max(1) as f64)
}

fn storm(args: &Common) -> io::Result<bool> {
    let pid = args.server_pid.map(|p| p.to_string());
    let server_cpu = || pid.as_deref().and_then(cpu_ticks);
    let mut swarm = Swarm::new(args.port, "")?;
    let settle = Duration::from_millis(args.settle_ms);
    let cpu0 = server_cpu();
    let self0 = cpu_ticks("self");
    let t0 = Instant::now();
    swarm.last_rx = t0;
    let deadline = t0 + Duration::from_secs(args.timeout);
    let completed = swarm.connect_all(args.clients, args.window, settle, deadline)?;
    let cpu1 = server_cpu();
    let self1 = cpu_ticks("self");
    let rss = args.server_pid.and_then(rss_kib);
    let notices: Vec<u64> = swarm.clients.iter().map(|c| c.notices).collect();
    let total: u64 = notices.iter().sum();
    let ok = completed && swarm.welcomed == args.clients && swarm.lost == 0;
    let report = json!({
        "mode": "storm",
        "clients": args.clients,
        "completed": completed,
        "welcomed": swarm.welcomed,
        "lost": swarm.lost,
        "lost_before_welcome": swarm.lost_before_welcome,
        "wall_to_last_welcome_s": secs(swarm.last_welcome.map(|t| t - t0)),
        "wall_to_last_byte_s": secs(Some(swarm.last_rx.saturating_duration_since(t0))),
        "server_cpu_s": cpu_s(cpu0, cpu1, args.clk_tck),
        "tool_cpu_s": cpu_s(self0, self1, args.clk_tck),
        "server_rss_kib": rss,
        "notices": total,
        "notices_min": notices.iter().min(),
        "notices_max": notices.iter().max(),
        "lines": swarm.clients.iter().map(|c| c.lines).sum::<u64>(),
        "error_lines": swarm.clients.iter().map(|c| c.errors).sum::<u64>(),
        "bytes": swarm.bytes,
        "first_error": swarm.first_error,
    });
    println!("{report}");
    eprintln!(
        "storm: {}/{} welcomed in {} s, {total} notices, server CPU {} s, RSS {} KiB{}",
        swarm.welcomed,
        args.clients,
        report["wall_to_last_welcome_s"],
        report["server_cpu_s"],
        report["server_rss_kib"],
        if ok { "" } else { " (INCOMPLETE)" }
    );
    Ok(ok)
}

fn memory(args: &MemoryArgs) -> io::Result<bool> {
    let c = &args.common;
    let n = c.clients;
    let rss = || c.server_pid.and_then(rss_kib);
    let settle = Duration::from_millis(c.settle_ms);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(c.timeout);
    let rss_start = rss();
    let mut swarm = Swarm::new(c.port, &args.who_match)?;
    swarm.last_rx = t0;
    let connected = swarm.connect_all(n, c.window, settle, deadline)?;
    let rss_connected = rss();
    let mut report = json!({
        "mode": "memory",
        "clients": n,
        "lines_per_room": args.lines,
        "line_bytes": args.line_bytes,
        "max_line": args.max_line,
        "rss_start_kib": rss_start,
        "rss_connected_kib": rss_connected,
    });
    if !connected || swarm.welcomed < n || n == 0 {
        report["completed"] = json!(false);
        report["why"] = json!(format!(
            "only {} of {n} clients welcomed ({} lost)",
            swarm.welcomed, swarm.lost
        ));
        report["first_error"] = json!(swarm.first_error);
        println!("{report}");
        eprintln!("memory: {}", report["why"].as_str().unwrap_or_default());
        return Ok(false);
    }

    // Does the server have rooms? Client 0 asks first, alone.
    swarm.capture = Some(0);
    let join = |i: usize| format!("/join {}{i}\n", args.room_prefix);
    swarm.send(0, join(0).as_bytes());
    let probe_deadline = (Instant::now() + Duration::from_secs(10)).min(deadline);
    swarm.wait_until(Duration::from_millis(300), probe_deadline, |s| {
        !s.captured.is_empty()
    })?;
    swarm.capture = None;
    let refusal = swarm.captured.iter().find(|l| l.starts_with("! ")).cloned();
    report["join_reply"] = json!(swarm.captured);
    report["rooms_supported"] = json!(refusal.is_none() && !swarm.captured.is_empty());
    if let Some(refusal) = &refusal
        && !args.force
    {
        report["completed"] = json!(false);
        report["why"] = json!(format!(
            "the server refused /join ({refusal}): no rooms; lines not sent"
        ));
        println!("{report}");
        eprintln!("memory: {}", report["why"].as_str().unwrap_or_default());
        return Ok(true);
    }

    // Everyone into a room of their own (client 0 is in already), each
    // answered, then quiet: the RSS of N empty rooms.
    for cl in &mut swarm.clients {
        cl.marks = 0;
        cl.errors = 0;
    }
    swarm.first_error = None;
    let seen: Vec<u64> = swarm.clients.iter().map(|c| c.lines).collect();
    for i in 1..n {
        swarm.send(i, join(i).as_bytes());
    }
    let join_deadline = (Instant::now() + Duration::from_secs(30)).min(deadline);
    let joined = swarm.wait_until(settle, join_deadline, |s| {
        s.unwritten() == 0
            && s.clients
                .iter()
                .zip(&seen)
                .skip(1)
                .all(|(c, &lines)| c.closed || c.lines > lines)
    })?;
    let rss_joined = rss();
    report["joins_answered"] = json!(joined);
    report["rss_joined_kib"] = json!(rss_joined);

    // Full history in each room, then /who.
    let mut line = String::with_capacity(args.line_bytes + 1);
    let t_send = Instant::now();
    for i in 0..n {
        let mut out = String::new();
        for k in 0..args.lines {
            line.clear();
            let _ = write!(line, "r{i} l{k} ");
            while line.len() < args.line_bytes {
                line.push('x');
            }
            line.truncate(args.line_bytes);
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str("/who\n");
        swarm.send(i, out.as_bytes());
    }
    let answered = swarm.wait_until(settle, deadline, |s| {
        s.unwritten() == 0 && s.clients.iter().all(|c| c.closed || c.marks > 0)
    })?;
    let rss_filled = rss();
    let replied = swarm.clients.iter().filter(|c| c.marks > 0).count();
    report["completed"] = json!(answered && swarm.lost == 0);
    report["who_replies"] = json!(replied);
    report["lost"] = json!(swarm.lost);
    report["error_lines"] = json!(swarm.clients.iter().map(|c| c.errors).sum::<u64>());
    report["first_error"] = json!(swarm.first_error);
    report["fill_s"] = json!(secs(Some(swarm.last_rx.saturating_duration_since(t_send))));
    report["rss_filled_kib"] = json!(rss_filled);
    let bound = (args.lines * args.max_line) as f64;
    if let (Some(before), Some(after)) = (rss_connected, rss_filled) {
        let per_room = (after as f64 - before as f64) * 1024.0 / n as f64;
        report["per_room_bytes"] = json!(per_room.round());
        report["bound_bytes"] = json!(bound);
        report["per_room_over_bound"] = json!((per_room / bound * 1000.0).round() / 1000.0);
        report["per_room_over_payload"] =
            json!((per_room / (args.lines * args.line_bytes) as f64 * 1000.0).round() / 1000.0);
        if let Some(joined) = rss_joined {
            let history = (after as f64 - joined as f64) * 1024.0 / n as f64;
            report["per_room_history_bytes"] = json!(history.round());
            report["per_room_empty_bytes"] = json!((per_room - history).round());
        }
    }
    println!("{report}");
    eprintln!(
        "memory: {replied}/{n} /who replies, RSS {} -> {} KiB, per room {} bytes (bound {bound})",
        report["rss_connected_kib"], report["rss_filled_kib"], report["per_room_bytes"]
    );
    Ok(answered && swarm.lost == 0)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.mode {
        Mode::Storm(args) => storm(args),
        Mode::Memory(args) => memory(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("room_load: {e}");
            ExitCode::from(2)
        }
    }
}
