//! The poll engine: one thread, one `mio::Poll`, every socket non-blocking.
//!
//! This is the `select.select()` chat server from the tutorials, done
//! properly. Read it top to bottom: `run()` is the loop, and each step it
//! takes (accept, read, hand lines to the App, queue output, flush, reap)
//! is one small method below it.
//!
//! The rules it lives by (mio's `tcp_server.rs`, plus what that example
//! leaves out):
//! - readiness is edge-triggered, so accept and read until `WouldBlock`
//!   (retrying `Interrupted`), or remember to come back;
//! - events for keys that are gone are ignored ("sporadic events happen");
//! - output is queued during a tick and written once per client at its end:
//!   broadcasts are appended once to the room's fan-out log
//!   (`fanout_log.rs`), and each client's single `writev` gathers what it is
//!   owed straight from there, with its private lines in their place
//!   (`out_queue.rs`);
//! - a client that falls behind costs a cursor, not a copy; it is cut off
//!   only when it falls off the log's capped tail, stalls for
//!   `--stall-timeout`, or is furthest behind when all waiting output passes
//!   `--memory-budget` (`Loop::keep_output_in_bounds`);
//! - WRITABLE interest is registered only while a client has output pending;
//! - clients leave the slab only at the end of a tick, so a key is never
//!   reused while events for its old owner may still be in flight;
//! - every per-client buffer is capped, and freed when it drains.
//!
//! TLS clients (`--tls-port`) keep every rule: a boxed rustls session sits
//! between the socket and the framing (`tls::Pipe`), the handshake runs in
//! the loop before the client joins the room (`Life::Handshaking`, with a
//! deadline), WRITABLE is also wanted while the session holds ciphertext,
//! and the broadcast log is encrypted per client as it is written.
//!
//! Browsers (`--web-port`) keep them too: their connection first sends one
//! request head (read in the loop, with the same deadline as a handshake),
//! which either gets the page and is closed, or upgrades to a WebSocket
//! that joins the room. A WebSocket sits above the TLS session
//! (`web::Lines`): the log's lines go out as text frames written straight
//! from the shared segments, WRITABLE is also wanted while it holds a
//! frame of its own (a pong), and every client on it is pinged each
//! `PING_INTERVAL`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;

use super::ShutdownHandle;
use super::fanout_log::FanoutLog;
use super::listen::{self, Listeners};
use super::out_queue::{OutQueue, Wrote};
use super::output_limits::{self, Lagging};
#[cfg(feature = "cluster")]
use super::poll_cluster::{self, ClusterIo};
use super::rules::{self, AcceptBackoff, CLOSE_GRACE, LINGER, SHUTDOWN_FLUSH};
use crate::admission::Admission;
use crate::app::{App, ClientId, Clock, Outbox, Output, Recipients, RoomId};
use crate::config::{Config, Limits};
use crate::error::StartError;
use crate::inbound::{Inbound, Step};
use crate::protocol;
use crate::tls::{Acceptor, Plaintext, Session};
use crate::web::{self, Front, Lines, Progress, Web, WebSocket};

/// Tokens for the non-client sources. Client tokens are slab keys, which
/// start at 0 and stay far below these.
const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
const SIGNALS: Token = Token(usize::MAX - 3);
const TLS_LISTENER: Token = Token(usize::MAX - 4);
const WEB_LISTENER: Token = Token(usize::MAX - 5);

/// One shared read buffer for the whole loop: clients only keep what is left
/// of an unfinished line, so an idle client holds no read buffer at all.
const READ_CHUNK: usize = 64 * 1024;
/// Reads per client per tick before we move on to the others (fairness);
/// a client cut off here is revisited next tick without waiting for an event.
const READS_PER_TICK: usize = 16;
/// Connections accepted per tick before the others get a turn (see
/// `accept_all`); the rest are accepted next tick, which then comes at once.
/// Every join is announced to everyone, so a tick's joins are one `writev`
/// per client: fewer per tick costs a join storm far more CPU, more lets the
/// notices outrun the clients' reading (measured: docs/performance.md,
/// "Measurement notes").
const ACCEPTS_PER_TICK: usize = 32;

/// Where a client is in its life:
///
/// ```text
///  Handshaking ──done──▶ Open      (TLS and web clients only; a failed or
///   │                                 overdue handshake never joins)
///   ├── error, EOF, deadline ──▶ Dead
///   └── web request answered (the page, a 4xx) ──▶ Closing
///
///  Open ──leave (FIN, /quit, idle)──▶ Closing ──all written──▶ Draining ──its FIN──▶ Dead ──▶ reaped
///   │                                  │ CLOSE_GRACE             │ LINGER                 (end of tick:
///   └── reset, write error, too slow ──┴─────────────────────────┴──────────────▶ Dead     socket closed,
///                                                                                         slot released)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// A TLS client whose handshake has not finished, or a web client
    /// whose request head has not all arrived: it holds a slot and an
    /// address count, but is not in the room yet, so a slowloris connection
    /// is never announced to anyone.
    Handshaking,
    /// In the room: receives broadcasts, its input is read.
    Open,
    /// Gone from the App (it sent FIN, `/quit`, ...), but what it is owed is
    /// still being written. A half-closed socket can still receive, so we
    /// flush before closing.
    Closing,
    /// Everything was written and our side is shut (a FIN follows the last
    /// words). What it still sends is read and thrown away until it closes
    /// too: closing a socket with input unread sends a reset, and a reset
    /// throws away whatever the kernel has not delivered yet, the last
    /// words included.
    Draining,
    /// Finished; removed from the slab at the end of this tick.
    Dead,
}

/// One connected client. Kept small: an idle client is this struct (about
/// 100 bytes), its socket, and the App's entry for it; no heap buffers.
struct Client {
    stream: TcpStream,
    /// The TLS session in front of the socket, boxed (a session is over
    /// 1 KiB): a plain client pays one pointer.
    tls: Option<Box<Session>>,
    /// A web client's request head being read, then its WebSocket; boxed,
    /// so a line client pays one pointer.
    web: Option<Box<Web>>,
    /// For per-address accounting and log lines (the port is only logged
    /// at connect; 17 bytes instead of a 32-byte `SocketAddr`).
    ip: IpAddr,
    /// A connection number. Slab keys are reused, so timers remember
    /// `(key, serial)` and ignore a key's new owner. It wraps after 4 billion
    /// connections, far longer than any timer lives.
    serial: u32,
    life: Life,
    /// Framer + flood bucket, boxed and only while there is unfinished input
    /// or a flood pause: `None` for an idle client.
    inbound: Option<Box<Inbound>>,
    /// Its cursor into the room's log, and the lines meant for it alone
    /// (capped at `--sendq`), in the order they were said.
    out: OutQueue,
    /// The App asked for this close itself, so it must not hear `left`.
    closed_by_app: bool,
    /// Flood control paused reading until a timer fires.
    throttled: bool,
    /// WRITABLE is currently part of our registration.
    wants_write: bool,
    /// Already in this tick's flush list.
    queued_for_flush: bool,
    /// In `Outgoing::behind`: its socket refused output it is owed.
    behind: bool,
    /// Last time a line arrived, for `--idle-timeout`.
    last_heard: Instant,
}

/// A bound poll-engine server. See [`crate::engine::Server`].
pub struct PollServer<A> {
    poll: Poll,
    /// The plain port (absent with `--tls-only`).
    listener: Option<TcpListener>,
    /// The TLS port, and where its sessions come from (SIGHUP reloads it).
    tls_listener: Option<(TcpListener, Arc<Acceptor>)>,
    /// The web port, and (https) where its sessions come from.
    web_listener: Option<(TcpListener, Option<Arc<Acceptor>>)>,
    local_addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    web_addr: Option<SocketAddr>,
    signals: Option<Signals>,
    shutdown_requested: Arc<AtomicBool>,
    handle: ShutdownHandle,
    state: Loop<A>,
}

/// Everything the loop mutates, apart from the Poll itself (kept separate so
/// the borrow checker lets us iterate events while changing clients),
/// grouped by concern.
struct Loop<A> {
    app: A,
    limits: Limits,
    clients: Slab<Client>,
    admission: Admission,
    /// The shared read buffer (see `READ_CHUNK`).
    scratch: Vec<u8>,
    /// Where the App puts outputs; drained after every App call.
    outbox: Outbox,
    /// `dispatch` is running: outputs queued meanwhile are left to it.
    dispatching: bool,
    /// Everything on its way out: the log, who to write, who is behind.
    outgoing: Outgoing,
    /// Everything that brings the loop back at a given moment.
    timers: Timers,
    /// The listener's state: paused, or more to accept next tick.
    accepting: Accepting,
    /// Clients to remove at the end of this tick.
    dead: Vec<usize>,
    next_serial: u32,
    /// The web port's request checks and WebSocket sizes.
    web: Option<Arc<Front>>,
    /// `--cluster`: the link to Redis and its two sockets.
    #[cfg(feature = "cluster")]
    cluster: Option<ClusterIo>,
}

/// The output half of the loop: one broadcast goes into `log` in
/// `dispatch`, and out of it in `end_of_tick`.
struct Outgoing {
    /// The room's broadcasts, kept once for every client's cursor.
    log: FanoutLog,
    /// Something was broadcast this tick: every client is owed it, so the
    /// end of the tick visits them all instead of `flush_list`.
    broadcast: bool,
    /// Clients that got output of their own this tick, or became writable:
    /// each gets one write at the end.
    flush_list: Vec<usize>,
    /// Clients whose sockets refused what they are owed. Only these can
    /// hold the log's tail, stall or cost memory, so only these are policed.
    behind: Vec<usize>,
    /// Writes that failed at the end of the tick, handled after the pass.
    failed_writes: Vec<(usize, WriteFailure)>,
    /// The log's head when every client was last given what it is owed:
    /// what was broadcast after it (a departure announced after a failed
    /// write, say) nobody has been given yet, so it must not be trimmed.
    written: u64,
}

/// The loop's schedules, behind one `next_deadline()`.
#[derive(Default)]
struct Timers {
    /// Clients to read again next tick without an event (fairness cap hit,
    /// or a flood pause just ended).
    read_again: Vec<(usize, u32)>,
    /// Flood-paused clients and when they may continue.
    throttled: Deadlines,
    /// Closing clients and when they are dropped even if not drained.
    closing: Deadlines,
    next_idle_sweep: Option<Instant>,
    /// `--idle-timeout`: one entry per open client, at the moment it would
    /// be idle if it said nothing more (see `sweep_idle`).
    idle_checks: Deadlines,
    /// Clients that started draining this tick: read once at its end,
    /// because a peer whose FIN was already read sends no new event.
    to_drain: Vec<usize>,
    /// When the first client that is behind would count as stalled.
    next_stall_check: Option<Instant>,
    /// TLS clients still handshaking and web clients still sending their
    /// request head: when they are given up on, and their peer address,
    /// which the App hears when they join.
    handshakes: Handshakes,
    /// When every WebSocket is pinged next (while there are any).
    next_ping: Option<Instant>,
}

/// Clients (`key`, `serial`) due at given moments, soonest first. A
/// min-heap: adding one or taking the soonest is O(log n), and the next
/// deadline is a peek, so a storm of N closes costs O(N log N) where
/// scanning every entry on every tick made it O(N²).
#[derive(Default)]
struct Deadlines(BinaryHeap<Reverse<(Instant, usize, u32)>>);

impl Deadlines {
    fn push(&mut self, at: Instant, key: usize, serial: u32) {
        self.0.push(Reverse((at, key, serial)));
    }

    /// The soonest moment, if any.
    fn next(&self) -> Option<Instant> {
        self.0.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Take out the soonest entry if it is due by `now`.
    fn pop_due(&mut self, now: Instant) -> Option<(usize, u32)> {
        if self.next()? > now {
            return None;
        }
        let Reverse((_, key, serial)) = self.0.pop()?;
        Some((key, serial))
    }
}

/// Handshakes in progress (see `Life::Handshaking`): their deadlines in a
/// heap, their peers by key, so starting, finishing or expiring one is
/// O(log n) or O(1) however many are under way (a sorted `Vec` searched and
/// shifted on each made a storm of N TLS joins O(N²)). A finished one's
/// deadline stays in the heap until due, then is skipped: its serial no
/// longer matches.
#[derive(Default)]
struct Handshakes {
    deadlines: Deadlines,
    /// Key → the serial of its handshaking client and its peer.
    peers: HashMap<usize, (u32, SocketAddr)>,
}

impl Handshakes {
    fn start(&mut self, deadline: Instant, key: usize, serial: u32, peer: SocketAddr) {
        self.deadlines.push(deadline, key, serial);
        self.peers.insert(key, (serial, peer));
    }

    /// A handshake is over (joined, answered): returns the peer address it
    /// was accepted with, once.
    fn finish(&mut self, key: usize, serial: u32) -> Option<SocketAddr> {
        match self.peers.get(&key) {
            Some(&(s, peer)) if s == serial => {
                self.peers.remove(&key);
                Some(peer)
            }
            _ => None,
        }
    }

    /// The soonest deadline (perhaps of one already finished: one spurious
    /// wake-up at most).
    fn next(&self) -> Option<Instant> {
        self.deadlines.next()
    }

    /// A handshake still under way whose deadline has come, taken out.
    fn pop_expired(&mut self, now: Instant) -> Option<(usize, u32, SocketAddr)> {
        while let Some((key, serial)) = self.deadlines.pop_due(now) {
            if let Some(peer) = self.finish(key, serial) {
                return Some((key, serial, peer));
            }
        }
        None
    }
}

/// The listeners' side of the loop.
#[derive(Default)]
struct Accepting {
    /// Accepting is paused (out of fds) until then.
    paused_until: Option<Instant>,
    /// A listener hit the per-tick accept cap: accept more next tick.
    again: bool,
    /// How long a TLS client may take over its handshake.
    handshake_timeout: Duration,
    /// How long a web client may take to send its request head (its TLS
    /// handshake included).
    head_timeout: Duration,
    /// Decides that pause, and rate-limits its warning.
    backoff: AcceptBackoff,
}

/// Which listener a connection came in on, and what it will speak.
#[derive(Clone, Copy)]
enum Door<'a> {
    /// Lines over plain TCP.
    Lines,
    /// Lines over TLS.
    Tls(&'a Arc<Acceptor>),
    /// A request head, then the page or a WebSocket; over TLS with an
    /// acceptor (https).
    Web(Option<&'a Arc<Acceptor>>),
}

impl Timers {
    /// A handshake is over (joined, answered): forget its deadline. Returns
    /// the peer address it was accepted with.
    fn finish_handshake(&mut self, key: usize, serial: u32) -> Option<SocketAddr> {
        self.handshakes.finish(key, serial)
    }

    /// The soonest of the schedules, if any.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.next_idle_sweep,
            self.next_stall_check,
            self.throttled.next(),
            self.closing.next(),
            self.handshakes.next(),
            self.next_ping,
        ]
        .into_iter()
        .flatten()
        .min()
    }
}

impl<A: App> PollServer<A> {
    /// Step 1 of the tutorial: create the socket, bind, listen (with a
    /// backlog for connection storms: see `listen.rs`).
    pub fn bind(config: Config, app: A) -> Result<Self, StartError> {
        let poll = Poll::new().map_err(StartError::Setup)?;
        // The plain port and/or the TLS port (its certificate loaded first),
        // each a source in the same Poll.
        let Listeners { plain, tls, web } = listen::bind_all(&config)?;
        let register = |listener: std::net::TcpListener, token| {
            let mut listener = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, token, Interest::READABLE)
                .map_err(StartError::Setup)?;
            let addr = listener.local_addr().map_err(StartError::Setup)?;
            Ok::<_, StartError>((listener, addr))
        };
        let listener = plain.map(|l| register(l, LISTENER)).transpose()?;
        let tls_listener = match tls {
            Some((l, acceptor)) => Some((register(l, TLS_LISTENER)?, acceptor)),
            None => None,
        };
        let (web_listener, web_front) = match web {
            Some(door) => (
                Some((register(door.listener, WEB_LISTENER)?, door.tls)),
                Some(door.front),
            ),
            None => (None, None),
        };
        let tls_addr = tls_listener.as_ref().map(|((_, addr), _)| *addr);
        let web_addr = web_listener.as_ref().map(|((_, addr), _)| *addr);
        let local_addr = match (&listener, tls_addr) {
            (Some((_, addr)), _) => *addr,
            (None, Some(addr)) => addr,
            (None, None) => unreachable!("bind_all opens at least one listener"),
        };
        let listener = listener.map(|(l, _)| l);
        let tls_listener = tls_listener.map(|((l, _), acceptor)| (l, acceptor));
        let web_listener = web_listener.map(|((l, _), acceptor)| (l, acceptor));
        // `--cluster`: its sockets open at the first tick (or, with
        // `--cluster-required`, Redis is asked here first).
        #[cfg(feature = "cluster")]
        let cluster = match &config.cluster {
            Some(c) => Some(ClusterIo::new(c, std::time::Instant::now())?),
            None => None,
        };

        // The waker lets another thread interrupt `poll()`; the shutdown
        // handle owns it.
        let waker = Waker::new(poll.registry(), WAKER).map_err(StartError::Setup)?;
        let (handle, shutdown_requested) = ShutdownHandle::new(Arc::new(move || {
            let _ = waker.wake();
        }));

        let signals = if config.handle_signals {
            // SIGHUP reloads the certificate, when there is one.
            let https = web_listener.as_ref().is_some_and(|(_, a)| a.is_some());
            let wanted: &[i32] = if tls_listener.is_some() || https {
                &[SIGINT, SIGTERM, SIGHUP]
            } else {
                &[SIGINT, SIGTERM]
            };
            let mut signals = Signals::new(wanted).map_err(StartError::Setup)?;
            poll.registry()
                .register(&mut signals, SIGNALS, Interest::READABLE)
                .map_err(StartError::Setup)?;
            Some(signals)
        } else {
            None
        };

        let handshake_timeout = config
            .tls
            .as_ref()
            .map_or(Duration::ZERO, |t| t.handshake_timeout);
        let head_timeout = config
            .web
            .as_ref()
            .map_or(Duration::ZERO, |w| w.head_timeout);
        let limits = config.limits;
        let max_clients = rules::max_clients(&limits, crate::config::EngineKind::Poll);
        let now = Instant::now();
        Ok(Self {
            poll,
            listener,
            tls_listener,
            web_listener,
            local_addr,
            tls_addr,
            web_addr,
            signals,
            shutdown_requested,
            handle,
            state: Loop {
                app,
                admission: Admission::new(
                    max_clients,
                    limits.max_per_ip,
                    limits.per_ip_exempts_loopback,
                ),
                timers: Timers {
                    next_idle_sweep: limits
                        .idle_timeout
                        .and_then(|t| now.checked_add(idle_sweep_interval(t))),
                    ..Timers::default()
                },
                outgoing: Outgoing {
                    log: FanoutLog::new(limits.log_cap),
                    broadcast: false,
                    flush_list: Vec::new(),
                    behind: Vec::new(),
                    failed_writes: Vec::new(),
                    written: 0,
                },
                limits,
                // Reserved up front: untouched capacity costs address space,
                // not memory, and the slab never has to copy itself to grow.
                clients: Slab::with_capacity(max_clients),
                scratch: vec![0; READ_CHUNK],
                outbox: Outbox::new(),
                dispatching: false,
                accepting: Accepting {
                    handshake_timeout,
                    head_timeout,
                    ..Accepting::default()
                },
                dead: Vec::new(),
                next_serial: 0,
                web: web_front,
                #[cfg(feature = "cluster")]
                cluster,
            },
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// The event loop. Each pass is one *tick*:
    /// wait → handle every ready source → run due timers → flush → reap.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            // Step 1: sleep until something is ready or the next timer is due.
            // With nothing pending the timeout is `None`: an idle server uses
            // no CPU at all.
            let timeout = self.state.next_timeout(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = Instant::now();
            let registry = self.poll.registry();

            // Step 2: handle each ready source.
            for event in events.iter() {
                match event.token() {
                    // New connections: accept (a slice per tick, see `accept_all`).
                    LISTENER => {
                        if let Some(listener) = &self.listener {
                            self.state.accept_all(listener, Door::Lines, registry, now);
                        }
                    }
                    TLS_LISTENER => {
                        if let Some((listener, acceptor)) = &self.tls_listener {
                            self.state
                                .accept_all(listener, Door::Tls(acceptor), registry, now);
                        }
                    }
                    WEB_LISTENER => {
                        if let Some((listener, acceptor)) = &self.web_listener {
                            let door = Door::Web(acceptor.as_ref());
                            self.state.accept_all(listener, door, registry, now);
                        }
                    }
                    // Another thread called `ShutdownHandle::shutdown`.
                    WAKER => {}
                    SIGNALS => {
                        if let Some(signals) = self.signals.as_mut() {
                            for signal in signals.pending() {
                                if signal == SIGHUP {
                                    let tls = self.tls_listener.as_ref().map(|(_, a)| a);
                                    let web =
                                        self.web_listener.as_ref().and_then(|(_, a)| a.as_ref());
                                    reload_certificate(tls, web);
                                    continue;
                                }
                                info!("signal {signal} received, shutting down");
                                self.shutdown_requested.store(true, Ordering::SeqCst);
                            }
                        }
                    }
                    // The cluster link's sockets: connect, or read replies.
                    #[cfg(feature = "cluster")]
                    token @ (poll_cluster::CMD | poll_cluster::READER) => {
                        if let Some(cluster) = self.state.cluster.as_mut() {
                            cluster.ready(token, &mut self.state.scratch, now);
                        }
                    }
                    // A client socket: read it if readable, flush if writable.
                    Token(key) => self.state.client_ready(key, event, now),
                }
            }

            // Step 3: timers — the App's deadline, flood pauses ending,
            // accept back-off ending, idle clients, closing clients.
            let doors = [
                self.listener.as_ref().map(|l| (l, Door::Lines)),
                self.tls_listener.as_ref().map(|(l, a)| (l, Door::Tls(a))),
                self.web_listener
                    .as_ref()
                    .map(|(l, a)| (l, Door::Web(a.as_ref()))),
            ];
            self.state.run_timers(&doors, registry, now);

            // Step 4: one write per client that has output, then drop the dead.
            self.state.end_of_tick(registry, now);

            if self.shutdown_requested.load(Ordering::SeqCst) {
                self.state.shut_down(&mut self.poll, &mut events);
                return Ok(());
            }
        }
    }
}

impl<A: App> Loop<A> {
    /// The soonest moment any timer wants us back.
    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        if self.accepting.again
            || !self.timers.read_again.is_empty()
            || !self.outgoing.flush_list.is_empty()
            || self.outgoing.broadcast
        {
            return Some(Duration::ZERO);
        }
        #[cfg(feature = "cluster")]
        let link = self.cluster.as_ref().and_then(|c| c.link.poll_timeout());
        #[cfg(not(feature = "cluster"))]
        let link = None;
        [
            self.app.poll_timeout(),
            self.accepting.paused_until,
            self.timers.next_deadline(),
            link,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    // ----- accept ---------------------------------------------------------

    /// The listener is readable: accept until `WouldBlock`, in slices of
    /// `ACCEPTS_PER_TICK` with everyone else served in between. Accept
    /// errors never end the server. Out of fds, we pause accepting for a
    /// moment: pending connections stay queued in the kernel and a timer
    /// (not an event: we would spin, or with edge triggering never hear
    /// again) brings us back.
    fn accept_all(
        &mut self,
        listener: &TcpListener,
        door: Door<'_>,
        registry: &Registry,
        now: Instant,
    ) {
        if self.accepting.paused_until.is_some() {
            return;
        }
        let mut accepted = 0;
        loop {
            // Each join is announced to everyone, and this tick's output is
            // buffered until its end: cap the joins per tick so a connection
            // storm costs a bounded amount of memory, and come back at once.
            if accepted == ACCEPTS_PER_TICK {
                self.accepting.again = true;
                return;
            }
            match listener.accept() {
                Ok((stream, peer)) => {
                    accepted += 1;
                    self.admit(stream, peer, door, registry, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // Retry at once, or (out of fds) pause: see `rules`.
                Err(e) => {
                    if let Some(until) = self.accepting.backoff.after_error(&e, now) {
                        self.accepting.paused_until = Some(until);
                        return;
                    }
                }
            }
        }
    }

    /// A new connection: check the limits, register it, tell the App (a
    /// TLS or web client: once its handshake is done, in `handshake`).
    fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        door: Door<'_>,
        registry: &Registry,
        now: Instant,
    ) {
        if let Err(refusal) = self.admission.admit(peer.ip()) {
            match door {
                Door::Lines => rules::refuse(stream, peer, refusal),
                // A line of text is no answer for a TLS or HTTP client.
                Door::Tls(_) | Door::Web(_) => rules::refuse_silently(stream, peer, refusal),
            }
            return;
        }
        let (tls, web) = match door {
            Door::Lines => (None, None),
            Door::Tls(acceptor) => (Some(acceptor), None),
            Door::Web(acceptor) => (acceptor, self.web.as_ref().map(|f| f.connection())),
        };
        let session = match tls.map(|acceptor| acceptor.accept()).transpose() {
            Ok(session) => session,
            Err(e) => {
                warn!("cannot start a TLS session for {peer}: {e}");
                self.admission.release(peer.ip());
                return;
            }
        };
        // Fan-out latency matters more than packet count, and we already
        // coalesce output per tick, so turn Nagle off.
        let _ = stream.set_nodelay(true);
        let entry = self.clients.vacant_entry();
        let key = entry.key();
        if let Err(e) = registry.register(&mut stream, Token(key), Interest::READABLE) {
            warn!("cannot register {peer}: {e}");
            self.admission.release(peer.ip());
            return;
        }
        self.next_serial = self.next_serial.wrapping_add(1);
        let life = if session.is_some() || web.is_some() {
            // Not in the room until the handshake (and the request head) is
            // done, and not for longer than `--handshake-timeout` if it
            // never is.
            let timeout = if web.is_some() {
                self.accepting.head_timeout
            } else {
                self.accepting.handshake_timeout
            };
            self.timers
                .handshakes
                .start(now + timeout, key, self.next_serial, peer);
            Life::Handshaking
        } else {
            Life::Open
        };
        entry.insert(Client {
            stream,
            tls: session,
            web,
            ip: peer.ip(),
            serial: self.next_serial,
            life,
            inbound: None,
            // Owed only what is said from now on.
            out: OutQueue::new(self.outgoing.log.head()),
            closed_by_app: false,
            throttled: false,
            wants_write: false,
            queued_for_flush: false,
            behind: false,
            last_heard: now,
        });
        debug!("client {key} connected from {peer}");
        if life == Life::Open {
            self.join(key, peer, now);
        }
    }

    /// The client enters the room: the App greets it and tells the others.
    fn join(&mut self, key: usize, peer: SocketAddr, now: Instant) {
        if let (Some(timeout), Some(client)) = (self.limits.idle_timeout, self.clients.get(key))
            && let Some(at) = client.last_heard.checked_add(timeout)
        {
            self.timers.idle_checks.push(at, key, client.serial);
        }
        self.app
            .handle_joined(ClientId(key), peer, now, &mut self.outbox);
        self.dispatch(now);
    }

    // ----- TLS handshake ----------------------------------------------------

    /// A handshaking client's socket is ready: feed the TLS session until
    /// `WouldBlock` and send its replies; then (web) read the request head.
    /// Once both are done, join the room and read on (the client's first
    /// line may have come with its last handshake message). A failed
    /// handshake (garbage, plain text to the TLS port) closes the
    /// connection; nobody else ever knew of it.
    fn handshake(&mut self, key: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if let Some(session) = client.tls.as_deref_mut()
            && session.is_handshaking()
        {
            let mut result = Ok(());
            // Fairness: a peer that keeps talking is read again next tick.
            let mut capped = true;
            for _ in 0..READS_PER_TICK {
                if !session.is_handshaking() {
                    capped = false;
                    break;
                }
                match session.receive(&mut client.stream) {
                    Ok(0) => result = Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                    Ok(_) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => result = Err(e),
                }
                capped = false;
                break;
            }
            // Our half of the handshake, or the alert that ends it.
            let sent = session.send(&mut client.stream);
            let done = !session.is_handshaking();
            let waiting = session.wants_write();
            if let Err(e) = result.and(sent) {
                debug!("TLS handshake with {} failed: {e}", client.ip);
                client.life = Life::Dead;
                self.dead.push(key);
                return;
            }
            if waiting {
                mark_for_flush(client, key, &mut self.outgoing.flush_list);
            }
            if !done {
                if capped {
                    self.timers.read_again.push((key, client.serial));
                }
                return;
            }
            debug!("client {key} finished its TLS handshake");
        }
        if client
            .web
            .as_deref()
            .is_some_and(|w| matches!(w, Web::Head(_)))
            && !self.read_request(key, now)
        {
            return;
        }
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Some(peer) = self.timers.finish_handshake(key, client.serial) else {
            // Every handshaking client has its entry; without one it could
            // never join nor be given up on.
            debug_assert!(false, "client {key} handshook without a timer entry");
            client.life = Life::Dead;
            self.dead.push(key);
            return;
        };
        client.life = Life::Open;
        // Owed only what is said from now on.
        client.out = OutQueue::new(self.outgoing.log.head());
        client.last_heard = now;
        if client.web.is_some() && self.timers.next_ping.is_none() {
            self.timers.next_ping = Some(now + web::PING_INTERVAL);
        }
        self.join(key, peer, now);
        self.read_client(key, now);
    }

    // ----- web request ------------------------------------------------------

    /// A web client's request head, read as far as it has come. True once it
    /// is a WebSocket, ready to join. Otherwise it waits for more, or it was
    /// answered (the page, an error) and now only has that answer to flush
    /// before it closes, or it is gone.
    fn read_request(&mut self, key: usize, now: Instant) -> bool {
        let (Some(client), Some(front)) = (self.clients.get_mut(key), self.web.as_ref()) else {
            return false;
        };
        let Some(Web::Head(head)) = client.web.as_deref_mut() else {
            return false;
        };
        let mut plaintext = Plaintext::over(client.tls.as_deref_mut(), &mut client.stream);
        let answer = match front.read_head(head, &mut plaintext) {
            Ok(Progress::NeedMore) => return false,
            Ok(Progress::Answer(answer)) => answer,
            Err(e) => {
                debug!("web client {} gone before its request: {e}", client.ip);
                client.life = Life::Dead;
                self.dead.push(key);
                return false;
            }
        };
        debug!(
            "web client {key} ({}): {} -> {}",
            client.ip, answer.request, answer.status
        );
        let Some(already_read) = answer.upgrade else {
            // The page or an error: sent like any output, then closed. It
            // never joined, so the App hears nothing of it.
            // Owed nothing of the room's: what was said since it connected
            // must not go out before its answer.
            client.web = None;
            client.out = OutQueue::new(self.outgoing.log.head());
            client.out.stop_at_head(&self.outgoing.log);
            client.out.push_private(&self.outgoing.log, &answer.bytes);
            client.life = Life::Closing;
            client.closed_by_app = true;
            let serial = client.serial;
            self.timers.finish_handshake(key, serial);
            self.timers.closing.push(now + CLOSE_GRACE, key, serial);
            mark_for_flush(client, key, &mut self.outgoing.flush_list);
            return false;
        };
        // The 101 goes out now, before any frame: a socket this fresh (or a
        // TLS session under its buffer limit) takes it whole.
        if let Err(e) = write_all_now(&mut plaintext, &answer.bytes) {
            debug!("web client {key}: cannot send the upgrade: {e}");
            client.life = Life::Dead;
            self.dead.push(key);
            return false;
        }
        client.web = Some(front.upgrade(already_read));
        if client.tls.as_ref().is_some_and(|s| s.wants_write()) {
            mark_for_flush(client, key, &mut self.outgoing.flush_list);
        }
        true
    }

    // ----- read -----------------------------------------------------------

    /// A client socket is ready. Stale keys (removed, or dead this tick) are
    /// ignored.
    fn client_ready(&mut self, key: usize, event: &mio::event::Event, now: Instant) {
        let Some(client) = self.clients.get(key) else {
            return;
        };
        if client.life == Life::Dead {
            return;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_ready(key, now);
        }
        if event.is_writable() {
            self.mark_for_flush(key);
        }
    }

    /// Read until `WouldBlock`, handing each complete line to the App as soon
    /// as it is framed. Stops early when flood control says so.
    fn read_client(&mut self, key: usize, now: Instant) {
        for _ in 0..READS_PER_TICK {
            // Lines already buffered go first: if flood control pauses this
            // client we must not read more from its socket.
            if !self.process_input(key, now) {
                return;
            }
            let Some(client) = self.clients.get_mut(key) else {
                return;
            };
            if client.life != Life::Open || client.inbound.as_ref().is_some_and(|i| i.is_eof()) {
                return;
            }
            // The socket, or the TLS session in front of it, or a
            // WebSocket's text frames above either.
            match lines_of(&mut client.stream, &mut client.tls, &mut client.web)
                .read(&mut self.scratch)
            {
                // FIN: the peer will send no more. Deliver any last line.
                Ok(0) => inbound_of(client, &self.limits, now).push_eof(),
                Ok(n) => inbound_of(client, &self.limits, now).push(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Reset or other error: the client is gone; nothing queued
                // for it can be delivered.
                Err(e) => {
                    debug!("client {key} read error: {e}");
                    self.leave(key, now, Life::Dead);
                    return;
                }
            }
        }
        // Fairness cap reached with data possibly left: come back next tick.
        if let Some(client) = self.clients.get(key) {
            self.timers.read_again.push((key, client.serial));
        }
    }

    /// Its socket is readable (or a timer says read it again).
    fn read_ready(&mut self, key: usize, now: Instant) {
        match self.clients.get(key).map(|c| c.life) {
            Some(Life::Draining) => self.drain_input(key),
            Some(Life::Open) => self.read_client(key, now),
            Some(Life::Handshaking) => self.handshake(key, now),
            _ => {}
        }
        // A TLS record may have asked for an answer (a key update, an
        // alert) that the socket could not take at once, and a WebSocket
        // answers pings and closes: flush after every read batch.
        if let Some(client) = self.clients.get_mut(key)
            && own_frames_waiting(client)
        {
            mark_for_flush(client, key, &mut self.outgoing.flush_list);
        }
    }

    /// A `Draining` client sent something: read it and throw it away, until
    /// `WouldBlock`, or its end of stream (then it is done). `LINGER` bounds
    /// how long it may keep this up.
    fn drain_input(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        for _ in 0..READS_PER_TICK {
            match client.stream.read(&mut self.scratch) {
                Ok(n) if n > 0 => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Its end of stream (or a reset): done with it.
                _ => {
                    client.life = Life::Dead;
                    self.dead.push(key);
                    return;
                }
            }
        }
        // Fairness cap reached: come back next tick.
        self.timers.read_again.push((key, client.serial));
    }

    /// Hand buffered lines to the App. Returns false when reading this client
    /// should stop (throttled, finished, or no longer open).
    fn process_input(&mut self, key: usize, now: Instant) -> bool {
        loop {
            let Some(client) = self.clients.get_mut(key) else {
                return false;
            };
            if client.life != Life::Open || client.throttled {
                return false;
            }
            let Some(inbound) = client.inbound.as_mut() else {
                return true;
            };
            match inbound.next_step(now) {
                Step::Line(line) => {
                    client.last_heard = now;
                    self.app.handle_line(
                        ClientId(key),
                        &line,
                        Clock::with_wall(now),
                        &mut self.outbox,
                    );
                    self.dispatch(now);
                }
                Step::TooLong => {
                    let msg = protocol::line_too_long(self.limits.max_line);
                    self.queue(key, msg.as_bytes(), now);
                }
                Step::Throttled(until) => {
                    client.throttled = true;
                    self.timers.throttled.push(until, key, client.serial);
                    return false;
                }
                Step::NeedMore => {
                    // Nothing half-done: give the input state back.
                    if inbound.is_idle(now) {
                        client.inbound = None;
                    }
                    return true;
                }
                // Every line the peer sent has been delivered; it has left,
                // but may still read what is queued for it (half-close).
                Step::End => {
                    self.leave(key, now, Life::Closing);
                    return false;
                }
            }
        }
    }

    // ----- broadcast --------------------------------------------------------

    /// Carry out what the App asked for. Each output's bytes were encoded once
    /// by the App. A broadcast is appended once to the log, for every
    /// recipient to gather at the end of the tick; a reply to one client goes
    /// into that client's private queue, tagged with where the log is now.
    ///
    /// Carrying out an output can make the App say more: a client cut off as
    /// too slow leaves, and the room announces it. Those outputs are picked
    /// up by this loop, not by a nested `dispatch`: one output may cut off
    /// thousands of stalled clients, and each announcement may cut off the
    /// next, so recursing once per client could overflow the stack.
    fn dispatch(&mut self, now: Instant) {
        if self.dispatching {
            return; // the loop below, further up the stack, will get to it
        }
        self.dispatching = true;
        while !self.outbox.is_empty() {
            self.dispatch_batch(now);
        }
        self.dispatching = false;
    }

    /// Carry out the outputs queued so far (see `dispatch`).
    fn dispatch_batch(&mut self, now: Instant) {
        let mut outbox = std::mem::take(&mut self.outbox);
        // The App has already forgotten the clients it closes: mark them
        // first, so that a farewell which cuts one off (its queue full)
        // cannot report it as `left` to the App.
        for output in outbox.iter() {
            if let Output::Close { client } = output
                && let Some(c) = self.clients.get_mut(client.0)
            {
                c.closed_by_app = true;
            }
        }
        for output in outbox.drain() {
            match output {
                Output::Send {
                    to: Recipients::One(ClientId(key)),
                    bytes,
                } => self.queue(key, &bytes, now),
                // The fan-out: appended once, no per-recipient work at all
                // until the end of the tick.
                Output::Send { to, bytes } => {
                    self.outgoing.log.push(to, &bytes);
                    self.outgoing.broadcast = true;
                }
                Output::Enter {
                    client: ClientId(key),
                    room,
                } => self.enter(key, room, now),
                Output::Close {
                    client: ClientId(key),
                } => self.leave(key, now, Life::Closing),
                #[cfg(feature = "cluster")]
                Output::Publish { sender, entry } => {
                    if let Some(cluster) = self.cluster.as_mut()
                        && cluster.link.publish(&entry, now).is_err()
                        && let Some(client) = sender
                    {
                        self.tell_app(crate::cluster::ClusterEvent::NotSent { client }, now);
                    }
                }
                #[cfg(feature = "cluster")]
                Output::Follow { room } => {
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.link.follow(&room, now);
                    }
                }
                #[cfg(feature = "cluster")]
                Output::Unfollow { room } => {
                    if let Some(cluster) = self.cluster.as_mut() {
                        cluster.link.unfollow(&room);
                    }
                }
                #[cfg(feature = "cluster")]
                Output::Ask(ask) => {
                    let refused = match self.cluster.as_mut() {
                        Some(cluster) => cluster.link.ask(ask, now).err(),
                        None => Some(ask),
                    };
                    if let Some(ask) = refused {
                        self.tell_app(crate::cluster::ClusterEvent::NoAnswer(ask), now);
                    }
                }
                // The lean build has no link; no App asks for one there.
                #[cfg(not(feature = "cluster"))]
                Output::Publish { .. }
                | Output::Follow { .. }
                | Output::Unfollow { .. }
                | Output::Ask(_) => {}
            }
        }
        // Keep the allocation, unless new outputs arrived meanwhile.
        if self.outbox.is_empty() {
            self.outbox = outbox;
        }
    }

    /// Queue bytes for one open client alone, after the broadcasts said
    /// before them (so it hears everything in the order it was said).
    fn queue(&mut self, key: usize, bytes: &[u8], now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.life != Life::Open {
            return;
        }
        if !rules::fits_sendq(client.out.private_bytes(), bytes.len(), self.limits.sendq) {
            self.disconnect_too_slow(key, now);
            return;
        }
        client.out.push_private(&self.outgoing.log, bytes);
        mark_for_flush(client, key, &mut self.outgoing.flush_list);
    }

    /// The App moved a client to another room: from now on it is owed that
    /// room's broadcasts, after what it was still owed of the old one
    /// (`OutQueue::enter`). One that moves far faster than it reads is cut
    /// off as too slow.
    fn enter(&mut self, key: usize, room: RoomId, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.life == Life::Open && !client.out.enter(&self.outgoing.log, key, room) {
            self.disconnect_too_slow(key, now);
        }
    }

    /// The client is too far behind (see `keep_output_in_bounds`) or does
    /// not read its own replies: forget what it is owed, tell it why (best
    /// effort: its socket buffer is probably full), and cut it off, so it
    /// never holds up or costs memory for anyone else.
    fn disconnect_too_slow(&mut self, key: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.life == Life::Dead {
            return;
        }
        let lag = client.out.lag(&self.outgoing.log);
        rules::log_too_slow(key, client.ip, lag);
        client.out.clear(&self.outgoing.log);
        last_words(client, protocol::TOO_SLOW.as_bytes());
        self.leave(key, now, Life::Dead);
    }

    fn mark_for_flush(&mut self, key: usize) {
        if let Some(client) = self.clients.get_mut(key) {
            mark_for_flush(client, key, &mut self.outgoing.flush_list);
        }
    }

    // ----- leave ------------------------------------------------------------

    /// A client stops being part of the room. The App hears about it (unless
    /// it asked for the close), and the client becomes `Closing` (flush what
    /// it is owed, then drain and close; see `Life`) or `Dead`. Its address slot is released when
    /// its socket is closed, at the end of the tick (`reap`).
    fn leave(&mut self, key: usize, now: Instant, next: Life) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        if client.life != Life::Open {
            if next == Life::Dead && client.life != Life::Dead {
                client.life = Life::Dead;
                self.dead.push(key);
            }
            return;
        }
        // It still receives what was said before it left, and no more.
        client.out.stop_at_head(&self.outgoing.log);
        client.life = next;
        let (ip, serial, by_app) = (client.ip, client.serial, client.closed_by_app);
        if next == Life::Dead {
            self.dead.push(key);
        } else if client.out.is_drained(&self.outgoing.log, key) && ready_to_shut(client) {
            // Nothing left to say (nor ciphertext left to send): shut our
            // side now.
            start_draining(client, key, now, &mut self.timers);
        } else {
            self.timers.closing.push(now + CLOSE_GRACE, key, serial);
            self.mark_for_flush(key);
        }
        debug!("client {key} ({ip}) left");
        if !by_app {
            self.app.handle_left(ClientId(key), now, &mut self.outbox);
            self.dispatch(now);
        }
    }

    // ----- timers -----------------------------------------------------------

    /// Step 3: whatever is due — the App's deadline, accepting again, flood
    /// pauses ending, clients that never finished closing, idle clients.
    fn run_timers(
        &mut self,
        doors: &[Option<(&TcpListener, Door<'_>)>],
        registry: &Registry,
        now: Instant,
    ) {
        if self.app.poll_timeout().is_some_and(|at| at <= now) {
            self.app.handle_timeout(now, &mut self.outbox);
            self.dispatch(now);
        }

        if self.accepting.paused_until.is_some_and(|at| at <= now) {
            self.accepting.paused_until = None;
            self.accepting.again = true;
        }
        if self.accepting.again {
            self.accepting.again = false;
            for &(listener, door) in doors.iter().flatten() {
                self.accept_all(listener, door, registry, now);
            }
        }

        // Flood pauses that ended, and fairness revisits: read again now.
        let mut due: Vec<(usize, u32)> = std::mem::take(&mut self.timers.read_again);
        while let Some(paused) = self.timers.throttled.pop_due(now) {
            due.push(paused);
        }
        for (key, serial) in due {
            let Some(client) = self.clients.get_mut(key) else {
                continue;
            };
            if client.serial != serial {
                continue;
            }
            client.throttled = false;
            self.read_ready(key, now);
        }

        // Closing clients that never drained, and draining ones that never
        // closed their side: drop them now.
        while let Some((key, serial)) = self.timers.closing.pop_due(now) {
            if let Some(client) = self.clients.get_mut(key)
                && client.serial == serial
                && matches!(client.life, Life::Closing | Life::Draining)
            {
                client.life = Life::Dead;
                self.dead.push(key);
            }
        }

        self.expire_handshakes(now);
        self.sweep_idle(now);
        self.ping_websockets(now);
    }

    /// Every `PING_INTERVAL`: ping each WebSocket, and drop those that left
    /// `MISSED_PINGS` in a row unanswered (a browser that is gone without a
    /// FIN, say a phone that lost its network).
    fn ping_websockets(&mut self, now: Instant) {
        if self.timers.next_ping.is_none_or(|at| at > now) {
            return;
        }
        let mut gone = Vec::new();
        for (key, client) in self.clients.iter_mut() {
            if client.life != Life::Open {
                continue;
            }
            let Some(ws) = client.web.as_deref_mut().and_then(Web::socket) else {
                continue;
            };
            let mut plaintext = Plaintext::over(client.tls.as_deref_mut(), &mut client.stream);
            if ws.ping(&mut plaintext) {
                mark_for_flush(client, key, &mut self.outgoing.flush_list);
            } else {
                gone.push(key);
            }
        }
        self.timers.next_ping = self
            .clients
            .iter()
            .any(|(_, c)| c.web.is_some())
            .then(|| now + web::PING_INTERVAL);
        for key in gone {
            debug!("client {key} answered no pings: gone");
            self.leave(key, now, Life::Dead);
        }
    }

    /// `--handshake-timeout`: a TLS client that has not finished its
    /// handshake by now (half a ClientHello, or nothing at all), or a web
    /// client that has not sent its whole request head, is closed.
    fn expire_handshakes(&mut self, now: Instant) {
        // Only the due ones come out: most ticks look at none.
        while let Some((key, serial, peer)) = self.timers.handshakes.pop_expired(now) {
            if let Some(client) = self.clients.get_mut(key)
                && client.serial == serial
                && client.life == Life::Handshaking
            {
                debug!("{peer} did not finish its handshake or request in time");
                last_words(client, b"");
                client.life = Life::Dead;
                self.dead.push(key);
            }
        }
    }

    /// `--idle-timeout`: close clients that have been silent too long.
    fn sweep_idle(&mut self, now: Instant) {
        let (Some(at), Some(timeout)) = (self.timers.next_idle_sweep, self.limits.idle_timeout)
        else {
            return;
        };
        if at > now {
            return;
        }
        // A timeout past the clock's range never comes.
        self.timers.next_idle_sweep = now.checked_add(idle_sweep_interval(timeout));
        // Only the clients whose moment has come, not a walk of every
        // client: one that spoke since is put back at its new moment (so
        // once per timeout at most, never once per line), one that did not
        // is idle.
        let mut idle = Vec::new();
        while let Some((key, serial)) = self.timers.idle_checks.pop_due(now) {
            let Some(client) = self.clients.get(key) else {
                continue;
            };
            if client.serial != serial || client.life != Life::Open {
                continue; // gone, or its key has a new owner with its own entry
            }
            // A moment past the clock's range never comes.
            match client.last_heard.checked_add(timeout) {
                Some(at) if at <= now => idle.push(key),
                Some(at) => self.timers.idle_checks.push(at, key, serial),
                None => {}
            }
        }
        for key in idle {
            self.queue(key, protocol::IDLE_TIMEOUT.as_bytes(), now);
            self.leave(key, now, Life::Closing);
        }
    }

    // ----- end of tick ------------------------------------------------------

    /// Step 4: every client with output gets exactly one `write()`, then the
    /// output limits are applied, clients that just shut their side read
    /// what is waiting, and finally the dead leave the slab.
    fn end_of_tick(&mut self, registry: &Registry, now: Instant) {
        // The link's writes go first: a room's tail is asked before its
        // newcomer hears it joined, so what anyone says after that reply
        // is read.
        #[cfg(feature = "cluster")]
        self.step_cluster(registry, now);
        self.write_owed(registry, now);
        self.handle_failed_writes(now);
        self.keep_output_in_bounds(now);
        for key in std::mem::take(&mut self.timers.to_drain) {
            if self
                .clients
                .get(key)
                .is_some_and(|c| c.life == Life::Draining)
            {
                self.drain_input(key);
            }
        }
        self.reap(registry);
        #[cfg(feature = "cluster")]
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.flush(registry, now);
        }
    }

    /// `--cluster`: hand the App news of the link (its outputs are left in
    /// the outbox for the caller's `dispatch`).
    #[cfg(feature = "cluster")]
    fn tell_app(&mut self, event: crate::cluster::ClusterEvent, now: Instant) {
        self.app
            .handle_cluster(event, Clock::with_wall(now), &mut self.outbox);
    }

    /// `--cluster`: the link's timers and sockets, then what it heard,
    /// handed to the App (other nodes' lines, link lost or back), whose
    /// outputs are written in this same tick.
    #[cfg(feature = "cluster")]
    fn step_cluster(&mut self, registry: &Registry, now: Instant) {
        let Some(cluster) = self.cluster.as_mut() else {
            return;
        };
        cluster.step(registry, now);
        while let Some(event) = self.cluster.as_mut().and_then(|c| c.link.poll_event()) {
            self.tell_app(event, now);
            self.dispatch(now);
        }
        if let Some(cluster) = self.cluster.as_mut() {
            cluster.flush(registry, now);
        }
    }

    /// One `writev` per client that is owed output: its private lines and
    /// the log from its cursor, straight from the shared segments. What the
    /// socket did not take stays owed (a cursor that did not move), and only
    /// then do we ask for WRITABLE.
    fn write_owed(&mut self, registry: &Registry, now: Instant) {
        let out = &mut self.outgoing;
        let mut flush_list = std::mem::take(&mut out.flush_list);
        // Clients whose write carried all it could but left more owed.
        let mut write_again = Vec::new();
        let timers = &mut self.timers;
        let mut flush = |key: usize, client: &mut Client| match flush_client(
            key, client, &out.log, registry, now, timers,
        ) {
            Ok(wrote) => {
                if wrote != Wrote::Drained && !client.behind && client.life != Life::Dead {
                    client.behind = true;
                    out.behind.push(key);
                }
                if wrote == Wrote::More {
                    write_again.push(key);
                }
            }
            Err(failure) => out.failed_writes.push((key, failure)),
        };
        if out.broadcast {
            // A broadcast is owed to (nearly) everyone: one pass over the slab.
            for (key, client) in self.clients.iter_mut() {
                flush(key, client);
            }
        } else {
            for &key in &flush_list {
                // The flag, not just the key: a key listed for a client that
                // has since left may belong to a newcomer by now.
                if let Some(client) = self.clients.get_mut(key)
                    && client.queued_for_flush
                {
                    flush(key, client);
                }
            }
        }
        out.broadcast = false;
        out.written = out.log.head();
        flush_list.clear();
        out.flush_list = flush_list;
        // Their sockets have room, so no WRITABLE event will bring them
        // back: the next tick (which then comes at once) writes the rest.
        for key in write_again {
            self.mark_for_flush(key);
        }
    }

    /// A failed write makes a client leave, which can queue "left" notices
    /// for others: those are written next tick (which then comes at once),
    /// keeping one write per client per tick.
    fn handle_failed_writes(&mut self, now: Instant) {
        let mut failed = std::mem::take(&mut self.outgoing.failed_writes);
        for (key, failure) in failed.drain(..) {
            match failure {
                WriteFailure::Io(e) => {
                    debug!("client {key} write error: {e}");
                    if let Some(client) = self.clients.get_mut(key) {
                        client.out.clear(&self.outgoing.log);
                    }
                    self.leave(key, now, Life::Dead);
                }
                WriteFailure::Reregister(e) => {
                    warn!("cannot reregister client {key}: {e}");
                    self.leave(key, now, Life::Dead);
                }
            }
        }
        self.outgoing.failed_writes = failed;
    }

    /// The output limits (`output_limits.rs`), applied to the clients that
    /// are behind: everyone else has been given all they are owed.
    fn keep_output_in_bounds(&mut self, now: Instant) {
        self.forget_caught_up();
        let stall = self.limits.stall_timeout;
        let log = &self.outgoing.log;
        let behind: Vec<Lagging> = self
            .outgoing
            .behind
            .iter()
            .map(|&key| {
                let out = &self.clients[key].out;
                Lagging {
                    key,
                    cursor: out.cursor(),
                    lag: out.lag(log),
                    private_bytes: out.private_bytes(),
                    stalled: out.stalled(now, stall),
                }
            })
            .collect();
        let out = &mut self.outgoing;
        let cut =
            output_limits::enforce(&mut out.log, behind, self.limits.memory_budget, out.written);
        for key in cut {
            self.disconnect_too_slow(key, now);
        }
        // The next moment a client still behind could count as stalled.
        self.forget_caught_up();
        self.timers.next_stall_check = self
            .outgoing
            .behind
            .iter()
            .filter_map(|&key| self.clients[key].out.behind_since())
            .min()
            .map(|since| since + stall);
    }

    /// Drop from `behind` the clients that caught up, or are gone.
    fn forget_caught_up(&mut self) {
        let clients = &self.clients;
        self.outgoing.behind.retain(|&key| {
            clients
                .get(key)
                .is_some_and(|c| c.behind && c.life != Life::Dead)
        });
    }

    /// The dead leave the slab, their sockets are closed and their address
    /// slots released: only now are their resources really gone.
    fn reap(&mut self, registry: &Registry) {
        for key in self.dead.drain(..) {
            if self.clients.get(key).is_some_and(|c| c.life == Life::Dead) {
                let mut client = self.clients.remove(key);
                let _ = registry.deregister(&mut client.stream);
                self.admission.release(client.ip);
                // Dropping the stream closes the socket.
            }
        }
        self.forget_caught_up();
    }

    // ----- shutdown ---------------------------------------------------------

    /// Tell everyone, give output up to `SHUTDOWN_FLUSH` to drain, then stop.
    fn shut_down(&mut self, poll: &mut Poll, events: &mut Events) {
        let now = Instant::now();
        let open: Vec<usize> = self
            .clients
            .iter()
            .filter(|(_, c)| c.life == Life::Open)
            .map(|(k, _)| k)
            .collect();
        // One pass over every client, once, at the end.
        self.timers.handshakes = Handshakes::default();
        for (key, client) in self.clients.iter_mut() {
            if client.life == Life::Handshaking {
                client.life = Life::Dead;
                self.dead.push(key);
            }
        }
        // `--cluster`: the other nodes hear this node's members leave, and
        // their names are given back, within the same flush bound.
        #[cfg(feature = "cluster")]
        if self.cluster.as_ref().is_some_and(|c| c.link.is_up()) {
            self.tell_app(crate::cluster::ClusterEvent::Stopping, now);
            self.dispatch(now);
        }
        for key in open {
            self.queue(key, protocol::SHUTTING_DOWN.as_bytes(), now);
            if let Some(client) = self.clients.get_mut(key) {
                // The App is going away with us; no departures to announce.
                client.closed_by_app = true;
            }
            self.leave(key, now, Life::Closing);
        }
        let deadline = now + SHUTDOWN_FLUSH;
        loop {
            let now = Instant::now();
            self.end_of_tick(poll.registry(), now);
            #[cfg(feature = "cluster")]
            let link_owed = self.cluster.as_ref().is_some_and(|c| c.owes_bytes());
            #[cfg(not(feature = "cluster"))]
            let link_owed = false;
            let waiting = link_owed
                || self
                    .clients
                    .iter()
                    .any(|(_, c)| matches!(c.life, Life::Closing | Life::Draining));
            if !waiting || now >= deadline {
                break;
            }
            if let Err(e) = poll.poll(events, Some(deadline - now))
                && e.kind() != io::ErrorKind::Interrupted
            {
                break;
            }
            for event in events.iter() {
                let Token(key) = event.token();
                if event.is_writable() && self.clients.contains(key) {
                    self.mark_for_flush(key);
                }
                if event.is_readable()
                    && self
                        .clients
                        .get(key)
                        .is_some_and(|c| c.life == Life::Draining)
                {
                    self.drain_input(key);
                }
            }
        }
        info!("shut down; {} client(s) disconnected", self.clients.len());
    }
}

/// A client's input state, created on first use.
fn inbound_of<'a>(client: &'a mut Client, limits: &Limits, now: Instant) -> &'a mut Inbound {
    client.inbound.get_or_insert_with(|| {
        Box::new(Inbound::new(
            limits.max_line,
            limits.rate,
            limits.burst,
            now,
        ))
    })
}

/// Why a client's end-of-tick write failed; handled after the pass.
#[derive(Debug)]
enum WriteFailure {
    /// Reset, broken pipe, ...
    Io(io::Error),
    /// Changing its WRITABLE interest failed.
    Reregister(io::Error),
}

/// One client's single write of the tick (see `Loop::write_owed`).
fn flush_client(
    key: usize,
    client: &mut Client,
    log: &FanoutLog,
    registry: &Registry,
    now: Instant,
    timers: &mut Timers,
) -> Result<Wrote, WriteFailure> {
    client.queued_for_flush = false;
    if matches!(client.life, Life::Dead | Life::Draining) {
        return Ok(Wrote::Drained);
    }
    // A TLS client's ciphertext left over from last time goes first: the
    // session takes new plaintext only as its buffer empties. Then a
    // WebSocket's own frames (a pong, say), unless one of ours is half
    // written: that one is finished by the write below.
    if let Some(session) = client.tls.as_deref_mut() {
        session.send(&mut client.stream).map_err(WriteFailure::Io)?;
    }
    if let Some(ws) = client.web.as_deref_mut().and_then(Web::socket) {
        let mut plaintext = Plaintext::over(client.tls.as_deref_mut(), &mut client.stream);
        ws.send(&mut plaintext).map_err(WriteFailure::Io)?;
    }
    let wrote = if client.life == Life::Handshaking {
        // Nothing of the room's until it has joined.
        Wrote::Drained
    } else {
        client
            .out
            .write_to(
                log,
                key,
                &mut lines_of(&mut client.stream, &mut client.tls, &mut client.web),
                now,
            )
            .map_err(WriteFailure::Io)?
            .1
    };
    let mut tls_waiting = own_frames_waiting(client);
    if wrote == Wrote::Drained {
        client.behind = false;
        if client.life == Life::Closing && !tls_waiting {
            if ready_to_shut(client) {
                start_draining(client, key, now, timers);
            } else {
                // Its `close_notify` waits for room, like any output.
                tls_waiting = true;
            }
        }
    }
    // WRITABLE only while the socket has refused something, or the TLS
    // session (or the WebSocket) holds bytes of its own that the socket
    // has no room for yet.
    let refused = wrote == Wrote::Refused || tls_waiting;
    if refused != client.wants_write {
        let interest = if refused {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry
            .reregister(&mut client.stream, Token(key), interest)
            .map_err(WriteFailure::Reregister)?;
        client.wants_write = refused;
    }
    Ok(wrote)
}

/// Everything owed has been written: shut our side (the FIN follows the
/// last words) and read what it still sends until it closes, for at most
/// `LINGER` (see `Life::Draining`).
fn start_draining(client: &mut Client, key: usize, now: Instant, timers: &mut Timers) {
    let _ = client.stream.shutdown(Shutdown::Write);
    client.life = Life::Draining;
    timers.closing.push(now + LINGER, key, client.serial);
    timers.to_drain.push(key);
}

/// Everything owed has been written: may our side shut now? A plain
/// client, yes. A WebSocket first sends its close frame, and a TLS client
/// its `close_notify` (this end closed on purpose, and nothing was cut
/// off): each queued here (once; a second is ignored), and only once the
/// socket has taken them does the FIN follow.
fn ready_to_shut(client: &mut Client) -> bool {
    if let Some(ws) = client.web.as_deref_mut().and_then(Web::socket) {
        let mut plaintext = Plaintext::over(client.tls.as_deref_mut(), &mut client.stream);
        ws.close_normally(&mut plaintext, "");
        // An error means the peer is gone: nothing left to wait for.
        if !ws.send(&mut plaintext).unwrap_or(true) {
            return false;
        }
    }
    let Some(session) = client.tls.as_deref_mut() else {
        return true;
    };
    session.close();
    session.send(&mut client.stream).unwrap_or(true)
}

/// Best effort, never waiting: `bytes` (a reason), then for a WebSocket its
/// close frame and for a TLS client a `close_notify`, just before the
/// connection is closed.
fn last_words(client: &mut Client, bytes: &[u8]) {
    let mut plaintext = Plaintext::over(client.tls.as_deref_mut(), &mut client.stream);
    match client.web.as_deref_mut().and_then(Web::socket) {
        Some(ws) => ws.last_words(&mut plaintext, bytes),
        None if !bytes.is_empty() => {
            let _ = plaintext.write(bytes);
        }
        None => {}
    }
    if let Some(session) = client.tls.as_deref_mut() {
        session.close();
        let _ = session.send(&mut client.stream);
    }
}

/// SIGHUP: new handshakes use the certificate and key as the files hold
/// them now; sessions already running keep theirs. A pair that fails to
/// load changes nothing. The TLS and web ports share one acceptor when
/// they use the same files.
fn reload_certificate(tls: Option<&Arc<Acceptor>>, web: Option<&Arc<Acceptor>>) {
    let web = web.filter(|w| tls.is_none_or(|t| !Arc::ptr_eq(t, w)));
    for acceptor in tls.into_iter().chain(web) {
        match acceptor.reload() {
            Ok(()) => info!("SIGHUP: TLS certificate and key reloaded"),
            Err(e) => warn!("SIGHUP: TLS reload failed, keeping the old pair: {e}"),
        }
    }
}

/// A client's lines: its socket, through its TLS session if it has one,
/// through its WebSocket if it is a browser.
fn lines_of<'a>(
    stream: &'a mut TcpStream,
    tls: &'a mut Option<Box<Session>>,
    web: &'a mut Option<Box<Web>>,
) -> Lines<'a, TcpStream> {
    let ws: Option<&mut WebSocket> = web.as_deref_mut().and_then(Web::socket);
    Lines::over(ws, Plaintext::over(tls.as_deref_mut(), stream))
}

/// Its TLS session or its WebSocket holds bytes of its own to send.
fn own_frames_waiting(client: &Client) -> bool {
    client.tls.as_ref().is_some_and(|s| s.wants_write())
        || matches!(client.web.as_deref(), Some(Web::Socket(ws)) if ws.wants_write())
}

/// Write all of `bytes` without waiting, or fail: for the few bytes that
/// must go out before anything else on a fresh connection (the 101).
fn write_all_now(w: &mut impl Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    w.flush()
}

/// Put a client on this tick's flush list, once.
fn mark_for_flush(client: &mut Client, key: usize, flush_list: &mut Vec<usize>) {
    if !client.queued_for_flush {
        client.queued_for_flush = true;
        flush_list.push(key);
    }
}

/// How often idle clients are looked for: a tenth of the timeout, so a
/// client is closed at most 10% late, but never more than 10 times a second.
fn idle_sweep_interval(timeout: Duration) -> Duration {
    (timeout / 10).max(Duration::from_millis(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deadlines come out soonest first, only once due, whatever order
    /// they went in.
    #[test]
    fn deadlines_come_out_soonest_first_once_due() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let mut d = Deadlines::default();
        assert_eq!(d.next(), None);
        d.push(at(5), 1, 10);
        d.push(at(2), 2, 20);
        d.push(at(9), 3, 30);
        assert_eq!(d.next(), Some(at(2)));
        assert_eq!(d.pop_due(at(1)), None, "nothing due yet");
        assert_eq!(d.pop_due(at(5)), Some((2, 20)));
        assert_eq!(d.pop_due(at(5)), Some((1, 10)));
        assert_eq!(d.pop_due(at(5)), None, "the last is not due");
        assert_eq!(d.next(), Some(at(9)));
        assert_eq!(d.pop_due(at(9)), Some((3, 30)));
        assert_eq!(d.pop_due(at(100)), None);
    }

    /// A handshake's peer is handed back once, when it finishes or when it
    /// expires, never both; a reused key's old deadline passes over the
    /// new owner.
    #[test]
    fn handshakes_finish_or_expire_once() {
        let t0 = Instant::now();
        let at = |secs| t0 + Duration::from_secs(secs);
        let peer = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut h = Handshakes::default();
        h.start(at(10), 1, 100, peer(1));
        h.start(at(5), 2, 200, peer(2));
        assert_eq!(h.next(), Some(at(5)));
        assert_eq!(h.finish(2, 999), None, "not its serial");
        assert_eq!(h.finish(2, 200), Some(peer(2)));
        assert_eq!(h.finish(2, 200), None, "once");
        // Key 2 is reused by a new handshake, due later.
        h.start(at(20), 2, 201, peer(3));
        assert_eq!(h.pop_expired(at(5)), None, "the finished one is skipped");
        assert_eq!(h.pop_expired(at(10)), Some((1, 100, peer(1))));
        assert_eq!(h.finish(1, 100), None, "expired: gone");
        assert_eq!(h.pop_expired(at(19)), None);
        assert_eq!(h.pop_expired(at(20)), Some((2, 201, peer(3))));
        assert!(h.peers.is_empty());
    }
}
