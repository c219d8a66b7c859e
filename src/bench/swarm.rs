//! The load generator's event loop: every bench connection in one
//! `mio::Poll`, on one thread, so the bench never needs more cores than the
//! server it measures.
//!
//! Connections are numbered in the order they open, and the number is the
//! mio token: receivers first (`0..N`), then the stalled clients, then the
//! one sender. Each goes to one of the plan's [`Nodes`]: a single server,
//! or (`--addr` repeated) several nodes of one cluster, receivers and
//! stalled clients dealt round-robin and the sender on the first node, so
//! a probe's latency is its fan-out across the cluster. Receivers and the
//! sender read everything the server sends (join notices, welcome lines)
//! at all times; only receivers' complete lines go to the [`Tracker`].
//! Stalled clients connect, say their login line, and are never read until
//! the end, when we check whether the server cut them off.
//!
//! With `--tls` every connection (sender, receivers, stalled clients) is a
//! TLS [`Link`]. Its handshake is part of connecting: a connection counts as
//! open, and its connect time is taken, when TCP *and* the handshake are
//! done, and the load starts only after all of them. So handshakes never
//! show up as fan-out latency. A stalled client reads until its handshake
//! is done (the server would otherwise cut it off for that), then stops.
//! The configuration is made once and shared; each connection holds only
//! its session.
//!
//! With `--ws` every connection is a WebSocket client ([`WsConn`]) on top
//! of that link, plain or TLS: after TCP (and TLS) it sends the HTTP
//! upgrade and reads the 101, still in the connect phase, and a stalled
//! client reads until then too. Then each text frame in is one line, and
//! each line we queue (login, probes) leaves as one text frame.
//!
//! With `--workers` one swarm is a part of the run: a worker's swarm has
//! receivers only (numbered from its part's first), the coordinator's the
//! sender and the stalled clients. With `--source`, each connection binds
//! a loopback source address first, as [`Sources`] deals them, because one
//! address has only some 28,000 ephemeral ports.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::BenchError;
use super::token::write_probe;
use super::tracker::Tracker;
use super::ws::WsConn;
use crate::client::link::Link;
use crate::client::tls::{self, ClientTls};

/// At most this many connects in flight at once, so a slow accepter gets a
/// steady trickle instead of a SYN flood.
const MAX_CONNECTING: usize = 128;
/// A line longer than this without a newline is dropped: no chat line is
/// that long, and the bench's memory stays bounded.
const MAX_PARTIAL_LINE: usize = 64 * 1024;
/// The sender stops producing probes while this much is still unwritten
/// (the server is not keeping up; `--window` or TCP push back).
const SENDER_BACKLOG: usize = 64 * 1024;
/// A probe not at every receiver after this long is presumed lost as far as
/// `--window` is concerned (it still counts if it arrives later).
const GIVE_UP_AFTER: Duration = Duration::from_secs(1);
/// Longest single wait for events, so deadlines are checked regularly.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// The servers a swarm connects to: one, or several nodes of one chat
/// cluster sharing a room (`--addr` repeated). Never empty.
///
/// Who goes where: the sender on the first node, so every probe enters the
/// cluster there; receivers round-robin over all of them in order
/// (receiver `i` on node `i % n`), and stalled clients likewise by their
/// own number. A probe is then fully delivered only once it has crossed to
/// every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nodes(Vec<SocketAddr>);

impl Nodes {
    /// A single server: everyone connects to `addr`.
    pub fn one(addr: SocketAddr) -> Self {
        Self(vec![addr])
    }

    /// Several nodes, in the order given; `None` when there are none.
    pub fn new(addrs: Vec<SocketAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Self(addrs))
    }

    /// Every node, the sender's first.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.0
    }

    /// The node the sender is on.
    pub fn first(&self) -> SocketAddr {
        self.0[0]
    }

    /// Which node (an index into [`addrs`](Self::addrs)) receiver `i` is
    /// on; stalled client `i` too, as they are dealt the same way.
    pub fn node_of(&self, i: usize) -> usize {
        i % self.0.len()
    }

    /// How many of `count` clients dealt round-robin (receivers, or stalled
    /// clients) land on `node`: every node gets `count / n`, and the first
    /// `count % n` nodes one more.
    pub fn dealt_to(&self, node: usize, count: usize) -> usize {
        let n = self.0.len();
        count / n + usize::from(node < count % n)
    }

    /// The address connection `role` opens; receivers are numbered from
    /// `first` (a worker's part of the run).
    fn addr_of(&self, role: Role, first: usize) -> SocketAddr {
        match role {
            Role::Receiver(i) => self.0[self.node_of(first + i)],
            Role::Stalled(i) => self.0[self.node_of(i)],
            Role::Sender => self.first(),
        }
    }
}

/// The local addresses connections bind to (`--source`): none (the kernel
/// picks), or several loopback ones, because each address has only the
/// ephemeral port range (some 28,000 ports) to connect from: a port bound
/// before `connect()` is that address's for every destination, so each
/// address carries about 28,000 connections in all.
///
/// Receiver `i` is on node `i % n`; it takes source `(i / n) % s`, so every
/// node sees every source address in turn, and no (source, node) pair
/// holds more than `ceil(N / (n * s))` of the N receivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sources(Vec<IpAddr>);

impl Sources {
    pub fn new(addrs: Vec<IpAddr>) -> Self {
        Self(addrs)
    }

    /// The address receiver `i` binds, with `nodes` nodes; `None` when the
    /// kernel picks.
    pub fn for_receiver(&self, i: usize, nodes: usize) -> Option<IpAddr> {
        let s = self.0.len();
        (s > 0).then(|| self.0[(i / nodes.max(1)) % s])
    }

    /// `A` or `A-B`: one address, or every IPv4 address from A to B (at
    /// most 65,536), as `--source` takes them.
    pub fn parse_range(text: &str) -> Result<Vec<IpAddr>, String> {
        let parse = |t: &str| {
            t.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{t:?} is not an IP address"))
        };
        let Some((from, to)) = text.split_once('-') else {
            return Ok(vec![parse(text)?]);
        };
        match (parse(from)?, parse(to)?) {
            (IpAddr::V4(from), IpAddr::V4(to)) if u32::from(from) <= u32::from(to) => {
                let (from, to) = (u32::from(from), u32::from(to));
                if to - from >= 65_536 {
                    return Err(format!("{text:?}: more than 65,536 addresses"));
                }
                Ok((from..=to)
                    .map(|a| IpAddr::V4(std::net::Ipv4Addr::from(a)))
                    .collect())
            }
            _ => Err(format!(
                "{text:?}: a range is two IPv4 addresses, the lower first"
            )),
        }
    }
}

/// A non-blocking connect to `addr` from `source` (port picked by the
/// kernel at bind), or from wherever the kernel picks.
fn connect_from(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let Some(source) = source else {
        return TcpStream::connect(addr);
    };
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let fd = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddr::new(source, 0))?;
    match rustix::net::connect(&fd, &addr) {
        Ok(()) | Err(rustix::io::Errno::INPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(TcpStream::from_std(std::net::TcpStream::from(fd)))
}

/// Who the server is talking to, and what the bench is trying to open.
#[derive(Debug, Clone)]
pub struct SwarmPlan {
    /// The server under test, or the cluster's nodes.
    pub nodes: Nodes,
    pub receivers: usize,
    /// The run-wide number of this swarm's first receiver: 0, or where a
    /// worker's part starts (its node dealing and `{i}` go on from there).
    pub first: usize,
    pub stalled: usize,
    /// Open the sender (false in a worker: the coordinator sends).
    pub sender: bool,
    /// Where receivers connect from (`--source`).
    pub sources: Sources,
    /// First line each connection sends; `{i}` becomes its number.
    pub login: Option<String>,
    /// Connections opened per second.
    pub connect_rate: u32,
    /// The whole connect phase must finish within this.
    pub connect_timeout: Duration,
    /// Speak TLS on every connection (`--tls`, or a `wss://` URL); `None`
    /// for plain TCP.
    pub tls: Option<TlsPlan>,
    /// Speak WebSocket on every connection (`--ws`), over TLS if `tls`.
    pub ws: Option<WsPlan>,
}

impl SwarmPlan {
    /// `receivers` and one sender on `nodes`, in one process, plain TCP,
    /// no login, nobody stalled; the connect pace and bound as given.
    pub fn plain(
        nodes: Nodes,
        receivers: usize,
        connect_rate: u32,
        connect_timeout: Duration,
    ) -> Self {
        Self {
            nodes,
            receivers,
            first: 0,
            stalled: 0,
            sender: true,
            sources: Sources::default(),
            login: None,
            connect_rate,
            connect_timeout,
            tls: None,
            ws: None,
        }
    }
}

/// How the bench speaks WebSocket (`--ws URL`).
#[derive(Debug, Clone)]
pub struct WsPlan {
    /// The URL as given, for the report.
    pub url: String,
    /// The `Host:` header: the URL's host and port.
    pub host: String,
    /// The request target: the URL's path (and query), `/` at least.
    pub path: String,
}

/// How the bench speaks TLS.
#[derive(Debug, Clone)]
pub struct TlsPlan {
    /// Made once (roots, `--ca` or `--insecure`), shared by every session.
    pub config: ClientTls,
    /// The name the server's certificate must carry (and the SNI sent).
    pub server_name: String,
}

/// What the sender does once everyone is connected.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Probes per second; 0 = as fast as `window` and TCP allow.
    pub rate: f64,
    /// Most probes not yet at every receiver; 0 = no cap.
    pub window: usize,
    /// Bytes per probe line, without its `\n`.
    pub payload: usize,
    /// Stop after this many probes.
    pub messages: Option<u64>,
    /// Stop sending after this long, whatever was sent.
    pub duration: Duration,
    /// After the last send, wait at most this long for deliveries.
    pub drain: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Index into the tracker's receivers.
    Receiver(usize),
    /// The how-manyth stalled client (from 0).
    Stalled(usize),
    Sender,
}

struct Conn {
    /// The socket, with its TLS session in front under `--tls`.
    link: Link,
    /// The server (or node) it connects to, for a failed connect's error.
    addr: SocketAddr,
    /// Under `--ws`, the WebSocket over `link`; `None` for lines.
    ws: Option<Box<WsConn>>,
    role: Role,
    /// When `connect()` was called, for the connect-time histogram.
    started: Instant,
    /// The TCP connect has completed.
    tcp_up: bool,
    /// Ready to chat: TCP is up and, over TLS, the handshake is done.
    connected: bool,
    /// Why the TLS handshake failed, if it did (reported as the run's error).
    failure: Option<String>,
    /// The server closed or reset it.
    closed: bool,
    /// A complete line arrived while no tracker was reading (connecting,
    /// settling), or since [`Swarm::stop_server`] began.
    heard: bool,
    /// Bytes after the last newline: the beginning of a line still arriving.
    partial: Vec<u8>,
    /// Lines the socket has not taken yet (the login line, probes), each
    /// with its `\n`; under `--ws` each leaves as a text frame, without it.
    out: Vec<u8>,
}

impl Conn {
    /// A handshake (TLS, or the WebSocket upgrade) is still under way: our
    /// lines wait, and even a stalled client reads.
    fn handshaking(&self) -> bool {
        self.link.is_handshaking() || self.ws.as_ref().is_some_and(|ws| ws.is_upgrading())
    }
}

/// What `--then-stop` saw: the receivers at the server's shutdown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Shutdown {
    pub receivers: usize,
    /// Receivers that got a line (the goodbye) after the signal.
    pub told: usize,
    /// Receivers whose connection the server ended.
    pub closed: usize,
    /// Signal → the last of those ends.
    pub seconds: f64,
}

/// Every bench connection, connected.
pub struct Swarm {
    poll: Poll,
    events: Events,
    conns: Vec<Conn>,
    /// The name a certificate must carry, for explaining a failed handshake.
    server_name: String,
    /// One shared read buffer.
    scratch: Vec<u8>,
    /// Tokens of the last poll's events (kept to reuse its allocation).
    ready: Vec<usize>,
    /// Stalled clients are read only once the verdict phase starts.
    read_stalled: bool,
    /// Connections that have become ready to chat, counted as they do.
    connected: usize,
    /// `connect()` → established, per connection, in nanoseconds.
    pub connect_latency: Histogram<u64>,
    /// The whole connect phase.
    pub connect_phase: Duration,
}

impl Swarm {
    /// Open every connection at a steady pace, reading all the while.
    /// `progress(done, total)` is called as connections complete.
    pub fn connect(
        plan: &SwarmPlan,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Swarm, BenchError> {
        let total = plan.receivers + plan.stalled + usize::from(plan.sender);
        let mut swarm = Swarm {
            poll: Poll::new().map_err(BenchError::Setup)?,
            events: Events::with_capacity(1024),
            conns: Vec::with_capacity(total),
            server_name: plan
                .tls
                .as_ref()
                .map_or_else(String::new, |t| t.server_name.clone()),
            scratch: vec![0; 64 * 1024],
            ready: Vec::new(),
            read_stalled: false,
            connected: 0,
            connect_latency: Histogram::new_with_bounds(1, 600_000_000_000, 3)
                .expect("static histogram bounds are valid"),
            connect_phase: Duration::ZERO,
        };
        let start = Instant::now();
        let deadline = start + plan.connect_timeout;
        let pace = Duration::from_secs(1) / plan.connect_rate.max(1);
        let mut next_at = start;
        let mut done = 0;
        while done < total {
            let now = Instant::now();
            if now >= deadline {
                return Err(BenchError::ConnectTimeout {
                    connected: done,
                    wanted: total,
                });
            }
            let in_flight = swarm.conns.len() - done;
            while swarm.conns.len() < total && in_flight < MAX_CONNECTING && next_at <= now {
                swarm.open(plan, total)?;
                next_at += pace;
                if swarm.conns.len() - done >= MAX_CONNECTING {
                    break;
                }
            }
            let wait = if swarm.conns.len() < total {
                next_at.saturating_duration_since(Instant::now())
            } else {
                MAX_WAIT
            };
            swarm.pump(wait.min(MAX_WAIT), None)?;
            // Only this pump's connections can have changed: no pass over
            // all of them (which made connecting 20,000 quadratic).
            if let Some(closed) = swarm
                .ready
                .iter()
                .copied()
                .find(|&i| swarm.conns.get(i).is_some_and(|c| c.closed))
            {
                if let Some(reason) = swarm.conns[closed].failure.take() {
                    return Err(BenchError::Handshake {
                        connection: closed,
                        reason,
                    });
                }
                return Err(BenchError::ClosedEarly {
                    connection: closed,
                    opened: swarm.conns.len(),
                });
            }
            if swarm.connected != done {
                done = swarm.connected;
                progress(done, total);
            }
        }
        swarm.connect_phase = start.elapsed();
        Ok(swarm)
    }

    /// Start one non-blocking connect.
    fn open(&mut self, plan: &SwarmPlan, total: usize) -> Result<(), BenchError> {
        let index = self.conns.len();
        let role = if index < plan.receivers {
            Role::Receiver(index)
        } else if index + 1 < total || !plan.sender {
            Role::Stalled(index - plan.receivers)
        } else {
            Role::Sender
        };
        let addr = plan.nodes.addr_of(role, plan.first);
        let from = match role {
            Role::Receiver(i) => plan
                .sources
                .for_receiver(plan.first + i, plan.nodes.addrs().len()),
            _ => None,
        };
        let stream =
            connect_from(addr, from).map_err(|source| BenchError::Connect { addr, source })?;
        let mut link = match &plan.tls {
            Some(tls) => {
                let session = tls
                    .config
                    .session(&tls.server_name)
                    .map_err(BenchError::TlsName)?;
                Link::tls(stream, session)
            }
            None => Link::plain(stream),
        };
        let ws = match &plan.ws {
            Some(ws) => Some(WsConn::start(ws)?),
            None => None,
        };
        // Both, once, for good: edge-triggered, so an always-writable socket
        // costs no wake-ups, and a writable edge is what tells us that a
        // connect completed, or that a full socket (or TLS session) has room.
        self.poll
            .registry()
            .register(
                link.sock_mut(),
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(BenchError::Setup)?;
        let mut out = Vec::new();
        if let Some(login) = &plan.login {
            let number = plan.first + index;
            out.extend_from_slice(login.replace("{i}", &number.to_string()).as_bytes());
            out.push(b'\n');
        }
        self.conns.push(Conn {
            link,
            addr,
            ws,
            role,
            started: Instant::now(),
            tcp_up: false,
            connected: false,
            failure: None,
            closed: false,
            heard: false,
            partial: Vec::new(),
            out,
        });
        Ok(())
    }

    /// Read and discard until nothing has arrived for `quiet` (at most
    /// `max`), so join notices do not leak into the measurement.
    pub fn settle(&mut self, quiet: Duration, max: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let mut last_data = start;
        loop {
            let now = Instant::now();
            if now.duration_since(last_data) >= quiet || now.duration_since(start) >= max {
                return Ok(());
            }
            let wait = quiet.saturating_sub(now.duration_since(last_data));
            if self.pump(wait.min(MAX_WAIT), None)? > 0 {
                last_data = Instant::now();
            }
        }
    }

    /// Keep reading (and discarding) for `span`.
    pub fn idle(&mut self, span: Duration) -> Result<(), BenchError> {
        let end = Instant::now() + span;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if left.is_zero() {
                break;
            }
            self.pump(left.min(MAX_WAIT), None)?;
        }
        Ok(())
    }

    /// Run the load: produce probes as `plan` allows, then wait for the
    /// stragglers. `every_tick` runs after each wait (memory sampling).
    pub fn run_load(
        &mut self,
        plan: &LoadPlan,
        tracker: &mut Tracker,
        every_tick: &mut dyn FnMut(),
    ) -> Result<(), BenchError> {
        let start = Instant::now();
        let send_until = start + plan.duration;
        let pace = (plan.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / plan.rate));
        let mut next_at = start;
        let mut sent: u64 = 0;
        let mut drain_until: Option<Instant> = None;
        let mut probe = Vec::new();
        loop {
            let now = Instant::now();
            let more = plan.messages.is_none_or(|m| sent < m)
                && now < send_until
                && !self.sender().closed
                && tracker.next_seq().is_some();
            if !more && drain_until.is_none() {
                drain_until = Some(now + plan.drain);
            }
            if let Some(until) = drain_until
                && (tracker.outstanding() == 0 || now >= until)
            {
                return Ok(());
            }
            if more {
                // Produce every probe that is due and allowed.
                while plan.messages.is_none_or(|m| sent < m)
                    && pace.is_none_or(|_| next_at <= Instant::now())
                    && (plan.window == 0
                        || tracker.in_flight(Instant::now(), GIVE_UP_AFTER) < plan.window)
                    && self.sender().out.len() < SENDER_BACKLOG
                    && let Some(seq) = tracker.next_seq()
                {
                    probe.clear();
                    let now = Instant::now();
                    write_probe(&mut probe, seq, tracker.stamp(now), plan.payload);
                    tracker.on_sent(now);
                    self.sender_mut().out.extend_from_slice(&probe);
                    sent += 1;
                    if let Some(pace) = pace {
                        next_at += pace;
                    }
                }
                let sender = self.conns.len() - 1;
                self.flush(sender);
            }
            let wait = match (more, pace) {
                (true, Some(_)) => next_at.saturating_duration_since(Instant::now()),
                _ => MAX_WAIT,
            };
            self.pump(wait.min(MAX_WAIT), Some(tracker))?;
            every_tick();
        }
    }

    /// Send one probe and wait until every receiver has it; the fan-out
    /// time, or `None` if `timeout` passed first.
    pub fn probe_round(
        &mut self,
        tracker: &mut Tracker,
        payload: usize,
        timeout: Duration,
    ) -> Result<Option<Duration>, BenchError> {
        let Some(seq) = tracker.next_seq() else {
            return Ok(None);
        };
        let mut probe = Vec::new();
        let start = Instant::now();
        write_probe(&mut probe, seq, tracker.stamp(start), payload);
        tracker.on_sent(start);
        self.sender_mut().out.extend_from_slice(&probe);
        let sender = self.conns.len() - 1;
        self.flush(sender);
        while tracker.outstanding() > 0 {
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(None);
            }
            self.pump(left.min(MAX_WAIT), Some(tracker))?;
        }
        Ok(Some(start.elapsed()))
    }

    /// Wait up to `wait` for lines and give the receivers' to `tracker`
    /// (a worker's loop, between looks at its stdin).
    pub fn listen(&mut self, tracker: &mut Tracker, wait: Duration) -> Result<(), BenchError> {
        self.pump(wait.min(MAX_WAIT), Some(tracker)).map(|_| ())
    }

    /// Send SIGTERM to the server `pid` and read until every receiver's
    /// connection has ended, or `within` passed: how many were told (a line
    /// arrived after the signal), how many were closed, and how long the
    /// last one took.
    pub fn stop_server(&mut self, pid: u32, within: Duration) -> Result<Shutdown, BenchError> {
        let receivers: Vec<usize> = (0..self.conns.len())
            .filter(|&i| matches!(self.conns[i].role, Role::Receiver(_)))
            .collect();
        for &i in &receivers {
            self.conns[i].heard = false;
        }
        let pid = i32::try_from(pid)
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .ok_or(BenchError::Flags("--then-stop: not a process id"))?;
        let start = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .map_err(|e| BenchError::Setup(e.into()))?;
        let end = start + within;
        let mut last_closed = Duration::ZERO;
        // Those the server had closed before the signal do not count, and
        // only the connections each pump reported can have closed.
        let was_open = receivers.iter().filter(|&&i| !self.conns[i].closed).count();
        let mut counted: Vec<bool> = self.conns.iter().map(|c| c.closed).collect();
        let mut open = was_open;
        while open > 0 {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pump(left.min(MAX_WAIT), None)?;
            for &i in &self.ready {
                let receiver = matches!(self.conns.get(i).map(|c| c.role), Some(Role::Receiver(_)));
                if receiver && self.conns[i].closed && !counted[i] {
                    counted[i] = true;
                    open -= 1;
                    last_closed = start.elapsed();
                }
            }
        }
        Ok(Shutdown {
            receivers: receivers.len(),
            told: receivers.iter().filter(|&&i| self.conns[i].heard).count(),
            closed: was_open - open,
            seconds: last_closed.as_secs_f64(),
        })
    }

    /// Receivers that have had a line from the server (their welcome, at
    /// least) while no tracker was reading: connecting and settling.
    pub fn receivers_heard(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.role, Role::Receiver(_)) && c.heard)
            .count()
    }

    /// Receivers the server closed or reset.
    pub fn receivers_closed(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| matches!(c.role, Role::Receiver(_)) && c.closed)
            .count()
    }

    /// Read the stalled clients at last, until each one ends (the server
    /// cut it off) or `grace` passes (it is still connected).
    pub fn stalled_verdict(&mut self, grace: Duration) -> Result<Vec<bool>, BenchError> {
        self.read_stalled = true;
        let stalled: Vec<usize> = (0..self.conns.len())
            .filter(|&i| matches!(self.conns[i].role, Role::Stalled(_)))
            .collect();
        // Their readiness edges were ignored so far: read each once now.
        for &i in &stalled {
            self.read(i, None);
        }
        let end = Instant::now() + grace;
        while stalled.iter().any(|&i| !self.conns[i].closed) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            self.pump(left.min(MAX_WAIT), None)?;
        }
        Ok(stalled.iter().map(|&i| self.conns[i].closed).collect())
    }

    fn sender(&self) -> &Conn {
        self.conns.last().expect("a swarm always has its sender")
    }

    fn sender_mut(&mut self) -> &mut Conn {
        self.conns
            .last_mut()
            .expect("a swarm always has its sender")
    }

    /// Wait up to `wait` for events and handle them. Returns the number of
    /// bytes read. Lines from receivers go to `tracker` if there is one.
    fn pump(
        &mut self,
        wait: Duration,
        mut tracker: Option<&mut Tracker>,
    ) -> Result<usize, BenchError> {
        match self.poll.poll(&mut self.events, Some(wait)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(BenchError::Setup(e)),
        }
        let mut ready = std::mem::take(&mut self.ready);
        ready.clear();
        ready.extend(self.events.iter().map(|e| e.token().0));
        let mut bytes = 0;
        for &i in &ready {
            let Some(conn) = self.conns.get_mut(i) else {
                continue;
            };
            if conn.closed {
                continue;
            }
            if !conn.tcp_up && !check_connected(conn)? {
                continue;
            }
            if !conn.out.is_empty()
                || conn.link.wants_write()
                || conn.ws.as_ref().is_some_and(|ws| ws.wants_flush())
            {
                self.flush(i);
            }
            // Over TLS, reading is also what moves the handshake on.
            bytes += self.read(i, tracker.as_deref_mut());
            if !self.conns[i].connected {
                // A handshake that just ended lets the next message out:
                // TLS's last flight, the WebSocket upgrade request.
                self.flush(i);
                self.check_ready(i);
            }
        }
        self.ready = ready;
        Ok(bytes)
    }

    /// Connection `i` is up once TCP is and its handshakes (TLS, the
    /// WebSocket upgrade) are done: take its connect time, and send its
    /// login line.
    fn check_ready(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if !conn.tcp_up || conn.closed || conn.handshaking() {
            return;
        }
        conn.connected = true;
        self.connected += 1;
        let took = conn.started.elapsed().as_nanos();
        self.connect_latency
            .saturating_record(u64::try_from(took).unwrap_or(u64::MAX));
        if !conn.out.is_empty() {
            self.flush(i);
        }
    }

    /// Write what is queued for connection `i` until the socket is full.
    /// Over TLS, records that did not fit last time go first, and our lines
    /// wait until the handshake is done; under `--ws`, the upgrade request
    /// or frames tungstenite holds go first, and lines wait for the 101.
    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        if !conn.tcp_up || conn.closed {
            return;
        }
        if conn.link.wants_write() && conn.link.flush().is_err() {
            conn.closed = true;
            return;
        }
        if conn.link.is_handshaking() {
            return;
        }
        if let Some(ws) = conn.ws.as_deref_mut() {
            conn.closed = !flush_frames(ws, &mut conn.link, &mut conn.out);
            return;
        }
        let mut written = 0;
        while written < conn.out.len() {
            match conn.link.write(&conn.out[written..]) {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    conn.closed = true;
                    break;
                }
            }
        }
        conn.out.drain(..written);
    }

    /// Read connection `i` until `WouldBlock`, feeding complete lines to the
    /// tracker (receivers only). Returns the bytes of plaintext read (under
    /// `--ws`, of message payload once open).
    fn read(&mut self, i: usize, mut tracker: Option<&mut Tracker>) -> usize {
        let conn = &mut self.conns[i];
        let mut total = 0;
        loop {
            // A stalled client reads nothing, except its handshakes.
            let tls_handshaking = conn.link.is_handshaking();
            let handshaking = conn.handshaking();
            let stalled = matches!(conn.role, Role::Stalled(_));
            if conn.closed || (stalled && !self.read_stalled && !handshaking) {
                return total;
            }
            if let Some(ws) = conn.ws.as_deref_mut()
                && !handshaking
            {
                // One clock read per batch, at its first message, as line
                // mode reads it once per read: a batch drains the socket in
                // microseconds, and a clock read per message was 7% of the
                // bench's CPU at saturation.
                let mut at = None;
                let batch = match (conn.role, tracker.as_deref_mut()) {
                    (Role::Receiver(r), Some(t)) => {
                        ws.read_lines(&mut conn.link, &mut self.scratch, |line| {
                            t.on_lines(r, line, *at.get_or_insert_with(Instant::now));
                        })
                    }
                    _ => ws.read_lines(&mut conn.link, &mut self.scratch, |_| {}),
                };
                conn.closed |= batch.closed;
                return total + batch.bytes;
            }
            match conn.link.read(&mut self.scratch) {
                Ok(0) => {
                    if handshaking {
                        let what = if tls_handshaking { "TLS" } else { "WebSocket" };
                        conn.failure = Some(format!(
                            "the server closed the connection during the {what} handshake"
                        ));
                    }
                    conn.closed = true;
                    return total;
                }
                Ok(n) => {
                    total += n;
                    let at = Instant::now();
                    let chunk = &self.scratch[..n];
                    if let Some(ws) = conn.ws.as_deref_mut() {
                        // Still upgrading: this is the response head (and
                        // perhaps the first frames after it).
                        if let Err(reason) = ws.receive_head(chunk) {
                            conn.failure = Some(reason);
                            conn.closed = true;
                            return total;
                        }
                        continue;
                    }
                    let mut heard = false;
                    match (conn.role, tracker.as_deref_mut()) {
                        (Role::Receiver(r), Some(t)) => {
                            split_lines(&mut conn.partial, chunk, |line| t.on_lines(r, line, at));
                        }
                        _ => split_lines(&mut conn.partial, chunk, |_| heard = true),
                    }
                    conn.heard |= heard;
                }
                // Also the TLS pipe pausing after many records that held
                // no plaintext: go on, the socket is not drained yet.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return total,
                Err(e) => {
                    if tls_handshaking {
                        conn.failure = Some(tls::explain(&e, &self.server_name));
                    } else if handshaking {
                        conn.failure = Some(format!("WebSocket handshake failed: {e}"));
                    }
                    conn.closed = true;
                    return total;
                }
            }
        }
    }
}

/// Under `--ws`: send what the WebSocket holds (the upgrade request, or
/// frames that did not fit), then, once it is open and the socket took all
/// that, each complete line of `out` as one text frame, until one does not
/// fit (it stays in tungstenite's buffer; the rest stays in `out`, the one
/// bound on what waits). False when the connection failed.
fn flush_frames(ws: &mut WsConn, link: &mut Link, out: &mut Vec<u8>) -> bool {
    match ws.flush(link) {
        Ok(true) => {}
        Ok(false) => return true,
        Err(_) => return false,
    }
    if ws.is_upgrading() {
        return true;
    }
    let mut taken = 0;
    while let Some(nl) = memchr::memchr(b'\n', &out[taken..]) {
        let sent = ws.send_line(link, &out[taken..taken + nl]);
        taken += nl + 1;
        match sent {
            Ok(true) => {}
            Ok(false) => break,
            Err(_) => return false,
        }
    }
    out.drain(..taken);
    true
}

/// A connect in progress got an event: did it succeed? Errors end the run
/// (the server is not there); "not yet" returns false.
fn check_connected(conn: &mut Conn) -> Result<bool, BenchError> {
    let stream = conn.link.sock();
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => {
            return Err(BenchError::Connect {
                addr: conn.addr,
                source: e,
            });
        }
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => {
            if conn.role == Role::Sender {
                // Probes leave at once; their timestamps are taken just before.
                let _ = stream.set_nodelay(true);
            }
            conn.tcp_up = true;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(BenchError::Setup(e)),
    }
}

/// Hand over what arrived as runs of complete lines (one or more, joined
/// by `\n`, without the last `\n`), carrying an unfinished tail in
/// `partial` to the next read. Runs rather than single lines: a token holds
/// no `\n`, so scanning a run finds exactly the tokens of its lines, with
/// one call per read instead of one per line.
fn split_lines(partial: &mut Vec<u8>, chunk: &[u8], mut on_lines: impl FnMut(&[u8])) {
    let Some(last_nl) = memchr::memrchr(b'\n', chunk) else {
        partial.extend_from_slice(chunk);
        if partial.len() > MAX_PARTIAL_LINE {
            partial.clear();
        }
        return;
    };
    let (head, tail) = (&chunk[..last_nl], &chunk[last_nl + 1..]);
    if partial.is_empty() {
        on_lines(head);
    } else {
        let first_nl = memchr::memchr(b'\n', head);
        partial.extend_from_slice(&head[..first_nl.unwrap_or(head.len())]);
        on_lines(partial);
        partial.clear();
        if let Some(first_nl) = first_nl {
            on_lines(&head[first_nl + 1..]);
        }
    }
    if tail.len() <= MAX_PARTIAL_LINE {
        partial.extend_from_slice(tail);
    }
}

#[cfg(test)]
mod tests {
    use super::{Nodes, Role, Sources, connect_from, split_lines};
    use std::net::{IpAddr, SocketAddr};

    fn addrs(ports: &[u16]) -> Vec<SocketAddr> {
        ports
            .iter()
            .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    #[test]
    fn receivers_are_dealt_round_robin_and_the_sender_goes_first() {
        let nodes = Nodes::new(addrs(&[1, 2, 3])).unwrap();
        let ports = |role: fn(usize) -> Role| -> Vec<u16> {
            (0..7).map(|i| nodes.addr_of(role(i), 0).port()).collect()
        };
        assert_eq!(ports(Role::Receiver), vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(ports(Role::Stalled), vec![1, 2, 3, 1, 2, 3, 1]);
        assert_eq!(nodes.addr_of(Role::Sender, 0).port(), 1);
        assert_eq!(nodes.first().port(), 1);
    }

    #[test]
    fn one_node_takes_everyone() {
        let nodes = Nodes::one(SocketAddr::from(([127, 0, 0, 1], 9)));
        for role in [
            Role::Receiver(0),
            Role::Receiver(5),
            Role::Stalled(2),
            Role::Sender,
        ] {
            assert_eq!(nodes.addr_of(role, 0).port(), 9, "{role:?}");
        }
        assert_eq!(nodes.dealt_to(0, 5), 5);
        assert_eq!(Nodes::new(Vec::new()), None);
    }

    /// A worker's receivers go on with the dealing where its part starts,
    /// so W workers put everyone exactly where one process would have.
    #[test]
    fn a_workers_receivers_are_dealt_from_its_first() {
        let nodes = Nodes::new(addrs(&[1, 2, 3])).unwrap();
        let ports = |first: usize, count: usize| -> Vec<u16> {
            (0..count)
                .map(|i| nodes.addr_of(Role::Receiver(i), first).port())
                .collect()
        };
        let whole = ports(0, 10);
        let parts = [ports(0, 4), ports(4, 3), ports(7, 3)].concat();
        assert_eq!(parts, whole);
        assert_eq!(nodes.addr_of(Role::Stalled(1), 7).port(), 2);
    }

    /// Every node sees every source in turn, and no (source, node) pair
    /// holds more than its even share: each pair is one port range.
    #[test]
    fn sources_are_spread_evenly_over_each_node() {
        let sources = Sources::new(Sources::parse_range("127.0.0.2-127.0.0.5").unwrap());
        let (n, receivers) = (3, 1000usize);
        let mut pairs = std::collections::HashMap::new();
        for i in 0..receivers {
            let source = sources.for_receiver(i, n).unwrap();
            *pairs.entry((source, i % n)).or_insert(0) += 1;
        }
        assert_eq!(pairs.len(), 4 * 3, "every source on every node");
        let most = *pairs.values().max().unwrap();
        assert!(most <= receivers.div_ceil(4 * 3), "{pairs:?}");
        assert_eq!(Sources::default().for_receiver(5, 3), None);
    }

    #[test]
    fn source_ranges_are_parsed_and_bad_ones_refused() {
        let one = Sources::parse_range("127.0.0.9").unwrap();
        assert_eq!(one, vec!["127.0.0.9".parse::<IpAddr>().unwrap()]);
        let range = Sources::parse_range("127.0.0.250-127.0.1.3").unwrap();
        assert_eq!(range.len(), 10);
        assert_eq!(range[9], "127.0.1.3".parse::<IpAddr>().unwrap());
        for bad in [
            "127.0.0.9-127.0.0.1",
            "x",
            "127.0.0.1-::1",
            "10.0.0.0-10.2.0.0",
        ] {
            assert!(Sources::parse_range(bad).is_err(), "{bad}");
        }
    }

    /// A connection from a chosen source really comes from there.
    #[test]
    fn a_connect_from_a_source_binds_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let source: IpAddr = "127.0.0.7".parse().unwrap();
        let _stream = connect_from(listener.local_addr().unwrap(), Some(source)).unwrap();
        let (_, peer) = listener.accept().unwrap();
        assert_eq!(peer.ip(), source);
    }

    #[test]
    fn dealt_to_counts_what_round_robin_assigns() {
        for n in 1..=4 {
            let nodes = Nodes::new(addrs(&[1, 2, 3, 4][..n])).unwrap();
            for count in 0..=9 {
                for node in 0..n {
                    let by_hand = (0..count).filter(|&i| nodes.node_of(i) == node).count();
                    assert_eq!(nodes.dealt_to(node, count), by_hand, "{n} {count} {node}");
                }
            }
        }
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let mut partial = Vec::new();
        let mut got: Vec<String> = Vec::new();
        for chunk in [&b"ab\ncd"[..], b"ef", b"\n\ngh\n", b"ij", b"\nkl\nmn\n"] {
            split_lines(&mut partial, chunk, |run| {
                got.extend(
                    run.split(|&b| b == b'\n')
                        .map(|l| String::from_utf8_lossy(l).into_owned()),
                )
            });
        }
        assert_eq!(got, vec!["ab", "cdef", "", "gh", "ij", "kl", "mn"]);
        assert!(partial.is_empty());
    }
}
