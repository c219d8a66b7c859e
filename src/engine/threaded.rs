//! The threaded engine: the tutorials' thread-per-client chat server, done
//! properly. Compare it with `poll.rs`; `docs/engines.md` maps the two side
//! by side.
//!
//! The tutorial (`accept()` in a loop, `Thread(target=clientthread)` per
//! client, a `broadcast()` over `list_of_clients`, and `remove()`) keeps its
//! shape here:
//! - [`ThreadedServer::run`] is the accept loop, on the caller's thread;
//! - every client gets a *reader thread* (`Shared::serve_client`), the
//!   tutorial's `clientthread`: blocking `read()`, lines to the App;
//! - `list_of_clients` is the `Room`: the same sans-IO App the poll engine
//!   drives, with a `Slab` of members, behind one `Mutex`;
//! - `broadcast()` is the App's output appended once to the room's shared
//!   fan-out log (`fanout_log.rs`), which every client's writer reads
//!   through its own cursor;
//! - `remove()` is `Room::leave` and, when the threads are done,
//!   `Room::forget`.
//!
//! What the tutorial gets wrong, and what this file does instead:
//! - its `broadcast()` calls a blocking `send()` on every other socket, so
//!   one client that stops reading stalls everyone. Here each client also has
//!   a *writer thread* (`connection.rs`) that writes what it is owed into
//!   its socket, waiting for room when the socket is full, and the room lock
//!   is never held across a call that can wait. How far behind a client may
//!   fall is decided as in the poll engine (`output_limits.rs`);
//! - it assumes one `recv()` is one message. Here `Inbound` frames lines,
//!   caps their length, sanitises them and applies flood control, exactly as
//!   in the poll engine;
//! - its threads never end and its `remove()` leaks the socket. Here a
//!   client's two threads end when it leaves, its socket is closed, and its
//!   id returns to the slab for the next client.
//!
//! TLS (`--tls-port`): a second accept loop on a thread of its own, whose
//! clients join the same room. A TLS client's reader thread starts first,
//! alone: it completes the handshake (`threaded_tls::handshake`, bounded by
//! `--handshake-timeout`), and only then does the client join the room and
//! get its writer. Its two threads then share one session behind one lock
//! (`threaded_tls.rs` says why that lock is never held across a wait).
//!
//! The web page (`--web-port`): a third accept loop, on a thread of its
//! own. A browser's reader thread also starts alone, under one deadline
//! from the accept (`--handshake-timeout`): the TLS handshake for https,
//! then the request head (`read_request`). The page or an error is
//! answered and closed by that thread, and the room never hears of it; an
//! upgrade to a WebSocket joins the room and gets its writer, and its two
//! threads share the WebSocket behind one more lock (`threaded_web.rs`).
//! The timer thread also pings every WebSocket every 30 s
//! (`Room::ping_websockets`).
//!
//! Threads: the caller of `run()` (accepting), one more accepting TLS
//! clients when there is a TLS listener and one accepting browsers when
//! there is a web listener, one timer thread (App deadlines, e.g. the
//! quiz's, and pings), one signal thread (the binary only), and two per
//! client (one while a TLS client shakes hands or a browser sends its
//! request), each with a small stack (`CLIENT_STACK`).
//!
//! Lock order: the room, then the log, then a connection's state, then a
//! browser's WebSocket, then a TLS client's session; never the reverse, and
//! no socket call that can wait under any of them.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use rustix::io::Errno;
use rustix::net::{RecvFlags, recv};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use slab::Slab;

use super::ShutdownHandle;
use super::connection::{Connection, Queued, SharedLog};
use super::fanout_log::FanoutLog;
use super::listen::bind_all;
use super::output_limits::{self, Lagging};
use super::rules::{self, AcceptBackoff, CLOSE_GRACE, LINGER, SHUTDOWN_FLUSH};
use super::threaded_tls;
use super::threaded_web;
use crate::admission::Admission;
use crate::app::{App, ClientId, Clock, Outbox, Output, Recipients};
use crate::config::{Config, Limits};
use crate::error::StartError;
use crate::inbound::{Inbound, Step};
use crate::protocol;
use crate::tls::Acceptor;
use crate::web::{self, Front, Progress, Web};

/// Stack size for client threads. Rust's default is 2 MiB: only touched
/// pages count in RSS, but 2,000 threads would reserve 4 GiB of address
/// space, so the default hides what a thread really costs and lets a
/// runaway recursion go far. A client thread needs little (its read
/// buffer, a few App frames), and the room never recurses (see
/// [`Room::dispatch`]): 64 KiB is about three times the most a thread was
/// measured to touch (docs/performance.md, "Measurement notes").
const CLIENT_STACK: usize = 64 * 1024;
/// Each reader's buffer, on its stack. It is zeroed when the thread starts,
/// so even an idle client pays for it in RSS: one page. A longer line just
/// takes more reads.
const READ_CHUNK: usize = 4 * 1024;
/// Most bytes a reader takes in one go, in `READ_CHUNK` pieces, before it
/// hands their lines to the room under one lock: the poll engine's read
/// size. A burst then reaches the log in pieces of the same size in both
/// engines, and one lock (and one round of writer wake-ups) carries a read's
/// worth of lines instead of 4 KiB of them.
const READ_BATCH: usize = 64 * 1024;
/// The room applies the output limits (`output_limits.rs`) each time the
/// log has grown by this much since it last did: often enough that the log
/// never passes its cap by more than this, rarely enough that a flood does
/// not visit every client per line.
const LIMITS_EVERY: usize = 64 * 1024;
/// After shutdown has hung up on everyone, how long it waits for client
/// threads to notice before returning anyway.
const THREAD_EXIT_WAIT: Duration = Duration::from_secs(1);
/// A browser's reads of its request head (and of its TLS handshake). A
/// browser's head is well under 2 KiB; more just takes another read.
const HEAD_READ: usize = 1024;

/// A bound threaded-engine server. See [`crate::engine::Server`].
pub struct ThreadedServer<A> {
    /// The plain listener (none with `--tls-only`). Shared with the
    /// shutdown handle, which shuts it down to wake a blocked `accept()`.
    plain: Option<Arc<TcpListener>>,
    /// The TLS listener and where its sessions come from, likewise.
    tls: Option<(Arc<TcpListener>, Arc<Acceptor>)>,
    /// The plain listener's address, or with `--tls-only` the TLS one's.
    local_addr: SocketAddr,
    /// The TLS listener's address, if there is one.
    tls_addr: Option<SocketAddr>,
    /// The web listener (`--web-port`), likewise shared with the shutdown
    /// handle, and what its connections are checked against.
    web: Option<WebPort>,
    /// The web listener's address, if there is one.
    web_addr: Option<SocketAddr>,
    /// SIGINT/SIGTERM (and SIGHUP with a TLS listener or https), when the
    /// binary asked for them (`handle_signals`).
    signals: Option<Signals>,
    shutdown_requested: Arc<AtomicBool>,
    handle: ShutdownHandle,
    /// Everything the client threads and the timer share.
    shared: Arc<Shared<A>>,
}

/// The web port: its listener, the request checks and WebSocket sizes, and
/// (https) where its sessions come from: the TLS port's acceptor when both
/// use the same files (`listen::bind_all`), so one SIGHUP reloads both.
struct WebPort {
    listener: Arc<TcpListener>,
    front: Arc<Front>,
    tls: Option<Arc<Acceptor>>,
}

/// What every thread shares: the room behind its lock, and the wake-ups.
struct Shared<A> {
    room: Mutex<Room<A>>,
    /// Wakes the timer thread: the App's deadline moved, or shutdown began.
    timer: Condvar,
    /// Signalled whenever a client's threads have finished, for shutdown.
    gone: Condvar,
    limits: Limits,
    /// A TLS client that has not finished its handshake this long after it
    /// was accepted is closed (`--handshake-timeout`).
    handshake_timeout: Duration,
    /// A browser that has not finished its TLS handshake and sent its whole
    /// request head this long after it was accepted is closed (the same
    /// `--handshake-timeout`, given as `WebListen::head_timeout`).
    head_timeout: Duration,
}

/// The `list_of_clients` and the App: everything the lock protects.
struct Room<A> {
    app: A,
    /// Members by `ClientId`: dense keys, reused once a client's threads
    /// are done (so the App can index a Vec by id).
    clients: Slab<Member>,
    admission: Admission,
    /// Where the App puts outputs; drained after every App call.
    outbox: Outbox,
    /// The room's broadcasts, appended here and read by every writer.
    log: SharedLog,
    /// The log's size at which the output limits are applied next.
    next_limits_check: usize,
    /// Something was broadcast since the writers were last woken.
    broadcast: bool,
    limits: Limits,
    /// Writers that were asleep when output was queued for them: woken once
    /// the whole batch is queued (`wake_writers`), so each writes it at once.
    to_wake: Vec<Arc<Connection>>,
    /// The deadline the timer thread is sleeping until (the App's, or the
    /// next ping's if that comes first), so an App call that moves it can
    /// wake the timer (and one that does not, need not).
    timer_deadline: Option<Instant>,
    /// When every WebSocket member is pinged next; `None` while there is
    /// none (`ping_websockets`).
    next_ping: Option<Instant>,
    /// Shutdown began: the timer stops, nobody new joins.
    shutting_down: bool,
}

/// One client as the room sees it.
struct Member {
    /// For per-address accounting and log lines.
    peer: SocketAddr,
    /// In the room: its lines reach the App and broadcasts reach it. False
    /// from the moment it leaves (or is closed) until its threads are done.
    open: bool,
    /// Its socket and output queue, shared with its two threads.
    conn: Arc<Connection>,
    /// A TLS client still shaking hands, or a browser still sending its
    /// request head (or being answered and closed): its id and address slot
    /// are taken (half-open connections count against `--max-per-ip`), but
    /// it is not in the room yet, and shutdown hangs up on it at once.
    shaking_hands: bool,
}

/// How a client's connection ends when it leaves the room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Farewell {
    /// Flush what is queued, then hang up (FIN received, `/quit`, idle).
    Flush,
    /// Hang up now; nothing more can be delivered (reset, write error).
    Abort,
    /// Over `--sendq`, or past the output limits: drop what it is owed
    /// (this many bytes, for the log line), try to say why, hang up now.
    TooSlow(u64),
}

/// Why a reader thread stopped reading.
enum Ended {
    /// End of stream, every line delivered: the client left (or half-closed).
    Eof,
    /// Reading failed (reset): the client is gone.
    Error(io::Error),
    /// Silent for `--idle-timeout`.
    Idle,
    /// The room closed it (the App, `--sendq`, shutdown).
    Closed,
}

impl<A: App + Send + 'static> ThreadedServer<A> {
    /// The tutorial's first steps: create the socket, bind, listen.
    /// With a TLS listener (`--tls-port`) the certificate and key are
    /// loaded first (`listen::bind_all`), so a bad file stops start-up
    /// before any port is taken.
    pub fn bind(config: Config, app: A) -> Result<Self, StartError> {
        let listeners = bind_all(&config)?;
        // Accepting threads block in `accept()`.
        let blocking = |l: std::net::TcpListener| -> Result<_, StartError> {
            l.set_nonblocking(false).map_err(StartError::Setup)?;
            Ok(Arc::new(l))
        };
        let plain = listeners.plain.map(blocking).transpose()?;
        let tls = match listeners.tls {
            Some((listener, acceptor)) => Some((blocking(listener)?, acceptor)),
            None => None,
        };
        let tls_addr = match &tls {
            Some((listener, _)) => Some(listener.local_addr().map_err(StartError::Setup)?),
            None => None,
        };
        let web = match listeners.web {
            Some(door) => Some(WebPort {
                listener: blocking(door.listener)?,
                front: door.front,
                tls: door.tls,
            }),
            None => None,
        };
        let web_addr = match &web {
            Some(port) => Some(port.listener.local_addr().map_err(StartError::Setup)?),
            None => None,
        };
        let local_addr = match (&plain, tls_addr) {
            (Some(listener), _) => listener.local_addr().map_err(StartError::Setup)?,
            (None, Some(addr)) => addr,
            // `bind_all` refuses this already; no listener is no server.
            (None, None) => return Err(StartError::Config("--tls-only needs --tls-port".into())),
        };

        // Shutting a listening socket down makes a blocked `accept()` return
        // an error at once (Linux), and stops the kernel queueing newcomers.
        // The handle keeps only weak references, so the ports are released
        // when the server is dropped even if handles live on.
        let weak_listeners: Vec<_> = plain
            .iter()
            .chain(tls.iter().map(|(listener, _)| listener))
            .chain(web.iter().map(|port| &port.listener))
            .map(Arc::downgrade)
            .collect();
        let (handle, shutdown_requested) = ShutdownHandle::new(Arc::new(move || {
            for listener in weak_listeners.iter().filter_map(|l| l.upgrade()) {
                let _ = rustix::net::shutdown(&*listener, rustix::net::Shutdown::Read);
            }
        }));

        let signals = if config.handle_signals {
            // SIGHUP reloads the certificate; without TLS it keeps its
            // default meaning (the terminal went away: exit).
            let https = web.as_ref().is_some_and(|port| port.tls.is_some());
            let watched: &[i32] = if tls.is_some() || https {
                &[SIGINT, SIGTERM, SIGHUP]
            } else {
                &[SIGINT, SIGTERM]
            };
            Some(Signals::new(watched).map_err(StartError::Setup)?)
        } else {
            None
        };
        let handshake_timeout = config
            .tls
            .as_ref()
            .map_or(crate::config::HANDSHAKE_TIMEOUT, |t| t.handshake_timeout);
        let head_timeout = config
            .web
            .as_ref()
            .map_or(crate::config::HANDSHAKE_TIMEOUT, |w| w.head_timeout);

        let limits = config.limits;
        let room = Room {
            app,
            clients: Slab::new(),
            admission: Admission::new(
                rules::max_clients(&limits, crate::config::EngineKind::Threaded),
                limits.max_per_ip,
                limits.per_ip_exempts_loopback,
            ),
            outbox: Outbox::new(),
            log: Arc::new(RwLock::new(FanoutLog::new(limits.log_cap))),
            next_limits_check: LIMITS_EVERY,
            broadcast: false,
            limits: limits.clone(),
            to_wake: Vec::new(),
            timer_deadline: None,
            next_ping: None,
            shutting_down: false,
        };
        Ok(Self {
            plain,
            tls,
            local_addr,
            tls_addr,
            web,
            web_addr,
            signals,
            shutdown_requested,
            handle,
            shared: Arc::new(Shared {
                room: Mutex::new(room),
                timer: Condvar::new(),
                gone: Condvar::new(),
                limits,
                handshake_timeout,
                head_timeout,
            }),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Start the timer (and signal) thread, accept until shut down (TLS
    /// clients and browsers on threads of their own), then tell everyone,
    /// flush for at most `SHUTDOWN_FLUSH`, and return.
    pub fn run(mut self) -> io::Result<()> {
        let timer = {
            let shared = self.shared.clone();
            spawn_small("pollchat-timer".into(), move || shared.run_timer())?
        };
        // SIGHUP reloads each certificate once: the web port's acceptor is
        // the TLS port's own when both use the same files.
        let tls_acceptor = self.tls.as_ref().map(|(_, acceptor)| acceptor.clone());
        let web_acceptor = self
            .web
            .as_ref()
            .and_then(|port| port.tls.clone())
            .filter(|w| tls_acceptor.as_ref().is_none_or(|t| !Arc::ptr_eq(t, w)));
        let acceptors: Vec<_> = tls_acceptor.into_iter().chain(web_acceptor).collect();
        let signal_watch = match self.signals.take() {
            Some(signals) => Some(watch_signals(signals, self.handle.clone(), acceptors)?),
            None => None,
        };

        // The web port's accept loop, always on its own thread.
        let mut accept_threads = Vec::new();
        if let Some(port) = self.web.take() {
            let WebPort {
                listener,
                front,
                tls,
            } = port;
            accept_threads.extend(self.spawn_accept_loop(
                "pollchat-accept-web",
                listener,
                move |shared, stream, peer| shared.admit_web(stream, peer, &front, tls.as_deref()),
            ));
        }
        // The TLS accept loop: on its own thread beside a plain listener,
        // or on this one with `--tls-only`.
        match (self.plain.take(), self.tls.take()) {
            (Some(plain), tls) => {
                if let Some((listener, acceptor)) = tls {
                    accept_threads.extend(self.spawn_accept_loop(
                        "pollchat-accept-tls",
                        listener,
                        move |shared, stream, peer| shared.admit_tls(stream, peer, &acceptor),
                    ));
                }
                accept_loop(&plain, &self.shutdown_requested, |stream, peer| {
                    self.shared.admit(stream, peer)
                });
            }
            (None, Some((listener, acceptor))) => {
                accept_loop(&listener, &self.shutdown_requested, |stream, peer| {
                    self.shared.admit_tls(stream, peer, &acceptor)
                });
            }
            (None, None) => {}
        }
        for thread in accept_threads {
            let _ = thread.join();
        }

        self.shared.shut_down();
        let _ = timer.join();
        if let Some((closer, thread)) = signal_watch {
            closer.close();
            let _ = thread.join();
        }
        Ok(())
    }

    /// An accept loop on a thread of its own, ended like the others by the
    /// shutdown handle (which shuts `listener` down). If the thread cannot
    /// start, nobody could ever connect through that port: the server
    /// stops, as a failed bind would.
    fn spawn_accept_loop(
        &self,
        name: &str,
        listener: Arc<TcpListener>,
        admit: impl Fn(&Arc<Shared<A>>, TcpStream, SocketAddr) + Send + 'static,
    ) -> Option<JoinHandle<()>> {
        let shared = self.shared.clone();
        let stop = self.shutdown_requested.clone();
        let thread = thread::Builder::new()
            .name(name.into())
            .stack_size(CLIENT_STACK)
            .spawn(move || {
                accept_loop(&listener, &stop, |stream, peer| {
                    admit(&shared, stream, peer)
                })
            });
        match thread {
            Ok(thread) => Some(thread),
            Err(e) => {
                self.handle.shutdown();
                warn!("cannot start the {name} thread: {e}");
                None
            }
        }
    }
}

/// The tutorial's `while True: conn, addr = server.accept()`, with the
/// errors it ignores: none of them ends the server, and running out of
/// file descriptors pauses accepting for a moment (the same rules as the
/// poll engine) instead of spinning. One runs per listener; `admit` is
/// what its connections go through (`Shared::admit`, `Shared::admit_tls`).
fn accept_loop(
    listener: &TcpListener,
    shutdown_requested: &AtomicBool,
    admit: impl Fn(TcpStream, SocketAddr),
) {
    let mut backoff = AcceptBackoff::default();
    while !shutdown_requested.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => admit(stream, peer),
            // The shutdown handle shut the listener down to wake us.
            Err(_) if shutdown_requested.load(Ordering::SeqCst) => break,
            Err(e) => {
                if let Some(until) = backoff.after_error(&e, Instant::now()) {
                    thread::sleep(until.saturating_duration_since(Instant::now()));
                }
            }
        }
    }
}

/// The end of a reader thread, however it ends: if it is unwinding from a
/// panic (a bug in the App, say), the client is cut off first; then the
/// writer is waited for and joined, and the client forgotten, which closes
/// its socket and frees its id and address slot. Without this a panicking
/// reader would leak all three, and its writer.
struct ClientDone<'a, A: App + Send + 'static> {
    shared: &'a Shared<A>,
    key: usize,
    conn: Option<Arc<Connection>>,
    /// `None` while a TLS client shakes hands (its writer starts once it
    /// has joined): then there is nothing to flush or drain, only to close.
    writer: Option<JoinHandle<()>>,
}

impl<'a, A: App + Send + 'static> ClientDone<'a, A> {
    fn new(
        shared: &'a Shared<A>,
        key: usize,
        conn: &Arc<Connection>,
        writer: Option<JoinHandle<()>>,
    ) -> Self {
        Self {
            shared,
            key,
            conn: Some(conn.clone()),
            writer,
        }
    }
}

impl<A: App + Send + 'static> Drop for ClientDone<'_, A> {
    fn drop(&mut self) {
        let key = self.key;
        if thread::panicking() {
            // The App may be what panicked: it is not told (a second panic
            // here would abort the process), the connection just ends.
            warn!("client {key}: reader thread panicked; disconnecting it");
            self.shared
                .with_room(|room, _| room.depart(key, Farewell::Abort));
        }
        if let (Some(conn), Some(writer)) = (&self.conn, self.writer.take()) {
            conn.wait_writer(CLOSE_GRACE);
            let _ = writer.join();
            conn.drain_input(LINGER);
        }
        // The room's reference is the last: `forget` closes the socket.
        self.conn = None;
        self.shared.with_room(|room, _| room.forget(key));
        self.shared.gone.notify_all();
    }
}

/// After a `read()` that filled `buf`: take what else has already arrived,
/// without waiting, up to `READ_BATCH` in all (of ciphertext, for a TLS
/// client). An error is returned for the caller to report after the lines
/// read so far.
fn read_arrived(conn: &Connection, buf: &mut [u8], inbound: &mut Inbound) -> Option<io::Error> {
    let mut total = buf.len();
    while total < READ_BATCH {
        match recv(conn.stream(), &mut *buf, RecvFlags::DONTWAIT) {
            Ok((0, _)) => {
                inbound.push_eof();
                return None;
            }
            Ok((n, _)) => {
                if let Err(e) = conn.take_input(&buf[..n], inbound) {
                    return Some(e);
                }
                total += n;
                if n < buf.len() {
                    return None;
                }
            }
            // Nothing more yet (or a signal): the next `read()` waits.
            Err(Errno::AGAIN | Errno::INTR) => return None,
            Err(e) => return Some(e.into()),
        }
    }
    None
}

/// A thread with the small client stack.
fn spawn_small(name: String, body: impl FnOnce() + Send + 'static) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name(name)
        .stack_size(CLIENT_STACK)
        .spawn(body)
}

/// SIGINT/SIGTERM on a thread of their own: the first one starts a graceful
/// shutdown. With a TLS listener or https on the web port, SIGHUP reloads
/// each of `acceptors` (`Acceptor::reload`): new handshakes use the new
/// pair, sessions already running keep theirs, and a pair that does not
/// load leaves the old one in place. The returned handle ends the thread.
fn watch_signals(
    mut signals: Signals,
    shutdown: ShutdownHandle,
    acceptors: Vec<Arc<Acceptor>>,
) -> io::Result<(signal_hook::iterator::Handle, JoinHandle<()>)> {
    let closer = signals.handle();
    let thread = spawn_small("pollchat-signals".into(), move || {
        // Ends after the first SIGINT/SIGTERM, or when `closer` closes it.
        for signal in signals.forever() {
            if signal == SIGHUP {
                for acceptor in &acceptors {
                    reload_certificate(acceptor);
                }
                continue;
            }
            info!("signal {signal} received, shutting down");
            shutdown.shutdown();
            return;
        }
    })?;
    Ok((closer, thread))
}

/// SIGHUP: read the certificate and key again.
fn reload_certificate(acceptor: &Acceptor) {
    match acceptor.reload() {
        // The same words as the poll engine's.
        Ok(()) => info!("SIGHUP: TLS certificate and key reloaded"),
        Err(e) => warn!("SIGHUP: TLS reload failed, keeping the old pair: {e}"),
    }
}

impl<A: App + Send + 'static> Shared<A> {
    /// Run `f` on the room, under its lock, with the time taken *inside* the
    /// lock, so the App sees time move forward whichever thread calls it.
    /// Afterwards, wake the timer if the App's deadline moved.
    /// Writers with new output are woken at the end.
    fn with_room<R>(&self, f: impl FnOnce(&mut Room<A>, Instant) -> R) -> R {
        let mut room = self.lock();
        let result = f(&mut room, Instant::now());
        room.wake_writers();
        if room.next_wake() != room.timer_deadline {
            self.timer.notify_one();
        }
        result
    }

    /// A panicking client thread must not take the server down with it;
    /// the room stays usable (the poll engine would have died instead).
    fn lock(&self) -> MutexGuard<'_, Room<A>> {
        self.room.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- accept -----------------------------------------------------------

    /// A new connection: check the limits, add it to the room (the App
    /// welcomes it), then start its two threads.
    fn admit(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        if let Err(refusal) = self.with_room(|room, _| room.admission.admit(peer.ip())) {
            rules::refuse(stream, peer, refusal);
            return;
        }
        // Fan-out latency matters more than packet count: no Nagle.
        let _ = stream.set_nodelay(true);
        let log = self.with_room(|room, _| room.log.clone());
        let conn = Arc::new(Connection::new(stream, log, None));
        let key = self.with_room(|room, now| {
            let key = room.hold(peer, conn.clone(), false);
            room.join(key, now);
            key
        });
        if let Err(e) = self.start_threads(key, conn) {
            warn!("cannot start threads for client {key} ({peer}): {e}");
            self.with_room(|room, now| {
                room.leave(key, Farewell::Abort, now);
                room.forget(key);
            });
        }
    }

    /// A new connection on the TLS port: the same limits as the plain port
    /// (a half-open connection holds its address slot from here until it
    /// closes), then an id, but not a seat in the room: its reader thread
    /// starts alone and does the handshake first (`serve_tls_client`).
    fn admit_tls(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, acceptor: &Acceptor) {
        // The deadline runs from the accept: time spent here counts.
        let deadline = Instant::now() + self.handshake_timeout;
        self.admit_unjoined(stream, peer, Some(acceptor), move |shared, key, conn| {
            shared.serve_tls_client(key, conn, deadline)
        });
    }

    /// A new connection on the web port: the same limits and the same
    /// silent refusal as the TLS port (neither a line of text nor an HTTP
    /// answer is owed to a connection refused for load), then an id but not
    /// a seat in the room: its reader thread starts alone, does the TLS
    /// handshake (https) and reads the request head (`serve_web_client`).
    fn admit_web(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        front: &Arc<Front>,
        acceptor: Option<&Acceptor>,
    ) {
        // One deadline from the accept for the handshake and the head.
        let deadline = Instant::now() + self.head_timeout;
        let front = front.clone();
        self.admit_unjoined(stream, peer, acceptor, move |shared, key, conn| {
            shared.serve_web_client(key, conn, deadline, &front)
        });
    }

    /// A connection that must finish a handshake before it joins: check the
    /// limits (a refusal is silent), start its TLS session if it has one,
    /// hold an id for it, and start its reader thread on `serve`.
    fn admit_unjoined(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        acceptor: Option<&Acceptor>,
        serve: impl FnOnce(&Arc<Self>, usize, Arc<Connection>) + Send + 'static,
    ) {
        if let Err(refusal) = self.with_room(|room, _| room.admission.admit(peer.ip())) {
            rules::refuse_silently(stream, peer, refusal);
            return;
        }
        let session = match acceptor.map(Acceptor::accept).transpose() {
            Ok(session) => session,
            Err(e) => {
                warn!("cannot start a TLS session for {peer}: {e}");
                self.with_room(|room, _| room.admission.release(peer.ip()));
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let log = self.with_room(|room, _| room.log.clone());
        let conn = Arc::new(Connection::new(stream, log, session));
        let key = self.with_room(|room, _| room.hold(peer, conn.clone(), true));
        let shared = self.clone();
        let reader = spawn_small(format!("reader {key}"), {
            let conn = conn.clone();
            move || serve(&shared, key, conn)
        });
        if let Err(e) = reader {
            warn!("cannot start a thread for client {key} ({peer}): {e}");
            conn.cut_off(b"");
            drop(conn);
            self.with_room(|room, _| room.forget(key));
        }
    }

    /// The writer first: the reader is the one that waits for it at the end.
    fn start_threads(self: &Arc<Self>, key: usize, conn: Arc<Connection>) -> io::Result<()> {
        let writer = self.start_writer(key, &conn)?;
        let shared = self.clone();
        let reader = spawn_small(format!("reader {key}"), {
            let conn = conn.clone();
            move || shared.serve_client(key, conn, writer)
        });
        if reader.is_err() {
            // The writer (detached with the closure) ends once hung up on.
            conn.cut_off(b"");
        }
        reader.map(drop)
    }

    fn start_writer(&self, key: usize, conn: &Arc<Connection>) -> io::Result<JoinHandle<()>> {
        let conn = conn.clone();
        let stall = self.limits.stall_timeout;
        spawn_small(format!("writer {key}"), move || conn.run_writer(key, stall))
    }

    // ----- per-client read --------------------------------------------------

    /// A client's reader thread: the tutorial's `clientthread`. Read lines
    /// until the client leaves, tell the room, wait for the writer to flush,
    /// then free the client's id (`ClientDone`, which does that last part
    /// even if this thread panics).
    fn serve_client(&self, key: usize, conn: Arc<Connection>, writer: JoinHandle<()>) {
        let _done = ClientDone::new(self, key, &conn, Some(writer));
        // Declared after `_done`, so dropped before it: the room's is the
        // last reference when `ClientDone` forgets the client.
        let conn = conn;
        conn.set_reader();
        self.serve_member(key, &conn, self.new_inbound());
    }

    /// A TLS client's reader thread: handshake first (bounded by
    /// `deadline`), on this thread alone; then it joins the room (the App
    /// welcomes it only now), its writer starts, and it is served like any
    /// client. A failed or unfinished handshake just closes the connection:
    /// the room never knew it.
    fn serve_tls_client(self: &Arc<Self>, key: usize, conn: Arc<Connection>, deadline: Instant) {
        let mut done = ClientDone::new(self, key, &conn, None);
        let conn = conn;
        conn.set_reader();
        let Some(tls) = conn.tls() else {
            return; // admitted by `admit_tls`, always with a session
        };
        // Lines that came with the end of the handshake wait here.
        let mut inbound = self.new_inbound();
        if let Err(why) = threaded_tls::handshake(&conn, tls, deadline, Some(&mut inbound)) {
            debug!("client {key} ({}): {why}; closed", conn.peer());
            // Its alert (or `close_notify`) if the socket takes it, then
            // hang up; `done` frees its id and address slot.
            conn.cut_off(b"");
            return;
        }
        self.join_and_serve(key, &conn, &mut done, inbound);
    }

    /// A client held until its handshake was done (TLS, web) enters the
    /// room now (the App welcomes it only now), gets its writer, and is
    /// served like any client. Not if the server is shutting down
    /// meanwhile: then it is hung up on.
    fn join_and_serve(
        self: &Arc<Self>,
        key: usize,
        conn: &Arc<Connection>,
        done: &mut ClientDone<'_, A>,
        inbound: Inbound,
    ) {
        let joined = self.with_room(|room, now| !room.shutting_down && room.join(key, now));
        if !joined {
            conn.cut_off(b"");
            return;
        }
        match self.start_writer(key, conn) {
            Ok(writer) => done.writer = Some(writer),
            Err(e) => {
                warn!("cannot start a writer for client {key}: {e}");
                self.with_room(|room, now| room.leave(key, Farewell::Abort, now));
                return;
            }
        }
        self.serve_member(key, conn, inbound);
    }

    /// A browser's reader thread: the TLS handshake (https), then the
    /// request head, both by `deadline`, on this thread alone. The page or
    /// an error is answered and closed here, and the room never knew of
    /// it. An upgrade joins the room (the App welcomes it only now), starts
    /// its writer, and from then on it is served like any client, its lines
    /// in and out as WebSocket text frames.
    fn serve_web_client(
        self: &Arc<Self>,
        key: usize,
        conn: Arc<Connection>,
        deadline: Instant,
        front: &Front,
    ) {
        let mut done = ClientDone::new(self, key, &conn, None);
        let conn = conn;
        conn.set_reader();
        if let Some(tls) = conn.tls() {
            // The plaintext that follows (the head) stays in the session.
            if let Err(why) = threaded_tls::handshake(&conn, tls, deadline, None) {
                debug!("web client {key} ({}): {why}; closed", conn.peer());
                conn.cut_off(b"");
                return;
            }
        }
        let Some(already_read) = self.read_request(key, &conn, front, deadline) else {
            return; // answered and closed, or gone
        };
        let Web::Socket(ws) = *front.upgrade(already_read) else {
            return;
        };
        conn.upgrade(ws);
        // Frames that came right behind the head (a client need not wait
        // for the 101) are lines already; they go to the App once it has
        // joined.
        let mut inbound = self.new_inbound();
        if let Err(e) = conn.take_input(&[], &mut inbound) {
            debug!("web client {key}: {e}; closed");
            conn.cut_off(b"");
            return;
        }
        self.join_and_serve(key, &conn, &mut done, inbound);
    }

    /// A browser's request head, read until it is complete or `deadline`
    /// (a slowloris that trickles bytes gains nothing: every blocking
    /// `read()` ends at it), then answered. For a WebSocket, the 101 is sent
    /// and what followed the head is returned; the page and the errors
    /// (404, 405, 400, 431, 403, 426) are sent, then closed as an orderly
    /// close is (`threaded_web::close_answered`), and `None` is returned,
    /// as it is for a client gone or out of time (closed silently).
    fn read_request(
        &self,
        key: usize,
        conn: &Connection,
        front: &Front,
        deadline: Instant,
    ) -> Option<Vec<u8>> {
        let Web::Head(mut head) = *front.connection() else {
            return None;
        };
        let stream = conn.stream();
        let mut buf = [0u8; HEAD_READ];
        // What the last `read()` got; nothing at first, as the head may
        // have come with the end of the TLS handshake and wait in the
        // session.
        let mut n = 0;
        // Bounded by `deadline`: every pass waits at most until then.
        let answer = loop {
            match threaded_web::read_head(conn, front, &mut head, &buf[..n]) {
                Ok(Progress::NeedMore) => {}
                Ok(Progress::Answer(answer)) => break answer,
                Err(e) => {
                    debug!(
                        "web client {key} ({}) gone before its request: {e}",
                        conn.peer()
                    );
                    conn.cut_off(b"");
                    return None;
                }
            }
            n = 0;
            match threaded_tls::read_by(stream, &mut buf, deadline) {
                Ok(threaded_tls::Read::Bytes(0)) => {
                    debug!("web client {key} ({}) gone before its request", conn.peer());
                    conn.cut_off(b"");
                    return None;
                }
                Ok(threaded_tls::Read::Bytes(got)) => n = got,
                Ok(threaded_tls::Read::Again) => {}
                Ok(threaded_tls::Read::Late) => {
                    debug!(
                        "{} did not finish its handshake or request in time",
                        conn.peer()
                    );
                    conn.cut_off(b"");
                    return None;
                }
                Err(e) => {
                    debug!("web client {key} read error: {e}");
                    conn.cut_off(b"");
                    return None;
                }
            }
        };
        debug!(
            "web client {key} ({}): {} -> {}",
            conn.peer(),
            answer.request,
            answer.status
        );
        // From here on, reads wait as a member's do.
        let _ = stream.set_read_timeout(None);
        // The answer goes out like any close's last words: within the
        // close grace.
        let grace = Instant::now() + CLOSE_GRACE;
        if let Err(e) = threaded_web::send_all(conn, &answer.bytes, grace) {
            debug!("web client {key}: cannot send its answer: {e}");
            conn.cut_off(b"");
            return None;
        }
        match answer.upgrade {
            Some(already_read) => Some(already_read),
            None => {
                threaded_web::close_answered(conn, grace);
                None
            }
        }
    }

    /// A client's input pipeline, fresh.
    fn new_inbound(&self) -> Inbound {
        let limits = &self.limits;
        Inbound::new(limits.max_line, limits.rate, limits.burst, Instant::now())
    }

    /// A member's reads until it leaves, and how it leaves.
    fn serve_member(&self, key: usize, conn: &Connection, inbound: Inbound) {
        match self.read_lines(key, conn, inbound) {
            // Every line delivered: it left, but may still read what is
            // queued for it (a half-close), so flush before hanging up.
            Ended::Eof => self.with_room(|room, now| room.leave(key, Farewell::Flush, now)),
            Ended::Error(e) => {
                debug!("client {key} read error: {e}");
                self.with_room(|room, now| room.leave(key, Farewell::Abort, now));
            }
            Ended::Idle => self.with_room(|room, now| room.idle_out(key, now)),
            Ended::Closed => {}
        }
    }

    /// Read and hand each complete line to the App, until the client is
    /// gone or the room closes it.
    fn read_lines(&self, key: usize, conn: &Connection, mut inbound: Inbound) -> Ended {
        let limits = &self.limits;
        let mut buf = [0u8; READ_CHUNK];
        let mut last_heard = Instant::now();
        // An error met after some bytes were read: reported once their
        // lines are delivered, as the next read would.
        let mut read_error = None;
        loop {
            // Lines already buffered go first (flood control may say wait),
            // all of them under one lock: a read's worth of lines costs one
            // lock, and each recipient's writer is woken once, not per line.
            let step = self
                .with_room(|room, now| room.take_lines(key, &mut inbound, &mut last_heard, now));
            match step {
                Some(Step::NeedMore) => {}
                // The documented "delay" for a flooder: this thread sleeps,
                // its socket fills, and TCP pushes back on the sender.
                Some(Step::Throttled(until)) => {
                    if conn.pause_until(until) {
                        continue;
                    }
                    return Ended::Closed;
                }
                Some(Step::End) => return Ended::Eof,
                _ => return Ended::Closed,
            }
            if let Some(e) = read_error.take() {
                return Ended::Error(e);
            }
            // `--idle-timeout` is a read timeout measured from the last line.
            if let Some(idle) = limits.idle_timeout {
                // A timeout past the clock's range never comes.
                let left = last_heard.checked_add(idle).map_or(Duration::MAX, |at| {
                    at.saturating_duration_since(Instant::now())
                });
                if left.is_zero() {
                    return Ended::Idle;
                }
                if let Err(e) = conn.stream().set_read_timeout(Some(left)) {
                    return Ended::Error(e);
                }
            }
            // Blocking, with no lock held (for a TLS client, not even its
            // session's: its writer keeps encrypting meanwhile).
            match (&mut conn.stream()).read(&mut buf) {
                Ok(0) => inbound.push_eof(),
                Ok(n) => match conn.take_input(&buf[..n], &mut inbound) {
                    Err(e) => read_error = Some(e),
                    Ok(()) if n == buf.len() => {
                        read_error = read_arrived(conn, &mut buf, &mut inbound);
                    }
                    Ok(()) => {}
                },
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The read timeout: the loop above checks whether it is idle.
                Err(e)
                    if limits.idle_timeout.is_some()
                        && matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                Err(e) => return Ended::Error(e),
            }
        }
    }

    // ----- timers -----------------------------------------------------------

    /// The timer thread: sleep until the App's next deadline or the next
    /// round of WebSocket pings (or forever if there is neither), call
    /// `handle_timeout` or `ping_websockets`, repeat. Any App call that
    /// moves the deadline wakes it (see `with_room`), so it never polls.
    fn run_timer(&self) {
        let mut room = self.lock();
        loop {
            if room.shutting_down {
                return;
            }
            let now = Instant::now();
            if room.app.poll_timeout().is_some_and(|at| at <= now) {
                let room = &mut *room;
                room.app.handle_timeout(now, &mut room.outbox);
                room.dispatch(now);
                room.wake_writers();
            }
            if room.next_ping.is_some_and(|at| at <= now) {
                room.ping_websockets(now);
                room.wake_writers();
            }
            room.timer_deadline = room.next_wake();
            room = match room.timer_deadline {
                None => self
                    .timer
                    .wait(room)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let wait = at.saturating_duration_since(now);
                    let woken = self.timer.wait_timeout(room, wait);
                    woken.unwrap_or_else(PoisonError::into_inner).0
                }
            };
        }
    }

    // ----- shutdown ---------------------------------------------------------

    /// Tell everyone, let their writers flush for at most `SHUTDOWN_FLUSH`,
    /// hang up on the rest, and wait (bounded) for their threads to end.
    fn shut_down(&self) {
        let deadline = Instant::now() + SHUTDOWN_FLUSH;
        let mut room = self.lock();
        room.shutting_down = true;
        self.timer.notify_one();
        let now = Instant::now();
        room.outbox.send(Recipients::All, protocol::SHUTTING_DOWN);
        room.dispatch(now);
        room.wake_writers();
        let open: Vec<usize> = room.open_keys().collect();
        let count = open.len();
        for key in open {
            // The App is going away with us: no departures to announce.
            room.depart(key, Farewell::Flush);
        }
        // TLS clients still shaking hands, and browsers still sending their
        // request (or being answered), have nothing of the room's to flush.
        for (_, member) in room.clients.iter().filter(|(_, m)| m.shaking_hands) {
            member.conn.cut_off(b"");
        }
        room = self.wait_until_empty(room, deadline);
        for (_, member) in room.clients.iter() {
            member.conn.cut_off(b"");
        }
        let room = self.wait_until_empty(room, deadline + THREAD_EXIT_WAIT);
        if !room.clients.is_empty() {
            warn!(
                "{} client thread(s) still running at exit",
                room.clients.len()
            );
        }
        info!("shut down; {count} client(s) disconnected");
    }

    fn wait_until_empty<'a>(
        &self,
        room: MutexGuard<'a, Room<A>>,
        deadline: Instant,
    ) -> MutexGuard<'a, Room<A>> {
        let wait = deadline.saturating_duration_since(Instant::now());
        self.gone
            .wait_timeout_while(room, wait, |room| !room.clients.is_empty())
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }
}

/// The log, for appending or trimming. A panicking thread must not take the
/// others down with it: the log is valid after any partial update.
fn write_log(log: &RwLock<FanoutLog>) -> std::sync::RwLockWriteGuard<'_, FanoutLog> {
    log.write().unwrap_or_else(PoisonError::into_inner)
}

impl<A: App> Room<A> {
    fn is_open(&self, key: usize) -> bool {
        self.clients.get(key).is_some_and(|m| m.open)
    }

    /// When the timer thread must wake next: the App's deadline, or the
    /// next round of pings if that comes first.
    fn next_wake(&self) -> Option<Instant> {
        match (self.app.poll_timeout(), self.next_ping) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Every `PING_INTERVAL`, on the timer thread: ping each WebSocket
    /// member, and drop those that left `MISSED_PINGS` pings in a row
    /// unanswered (a browser gone without a FIN, say a phone that lost its
    /// network). Here rather than on each member's threads: one scan of
    /// the room every 30 s, under the lock the timer holds anyway, instead
    /// of a timed wake-up per writer; a ping is a non-blocking write of a
    /// few bytes, and one the socket will not take waits for the writer.
    fn ping_websockets(&mut self, now: Instant) {
        let mut gone = Vec::new();
        let mut any = false;
        for (key, member) in self.clients.iter().filter(|(_, m)| m.open) {
            match member.conn.ping() {
                None => {}
                Some(true) => any = true,
                Some(false) => gone.push(key),
            }
        }
        self.next_ping = any.then(|| now + web::PING_INTERVAL);
        for key in gone {
            debug!("client {key} answered no pings: gone");
            self.leave(key, Farewell::Abort, now);
        }
    }

    fn open_keys(&self) -> impl Iterator<Item = usize> + '_ {
        self.clients
            .iter()
            .filter(|(_, m)| m.open)
            .map(|(key, _)| key)
    }

    /// Give an admitted client its id (the slab key), not yet in the room:
    /// a TLS client shaking hands stays like this until `join`.
    fn hold(&mut self, peer: SocketAddr, conn: Arc<Connection>, shaking_hands: bool) -> usize {
        self.clients.insert(Member {
            peer,
            open: false,
            conn,
            shaking_hands,
        })
    }

    /// A held client joins the room; the App welcomes it. False if it is
    /// not held (any more).
    fn join(&mut self, key: usize, now: Instant) -> bool {
        let Some(member) = self.clients.get_mut(key) else {
            return false;
        };
        member.conn.start_at_head();
        member.open = true;
        member.shaking_hands = false;
        let peer = member.peer;
        // The first WebSocket starts the pings (the timer is woken by
        // `with_room`, as the next wake-up moved).
        if member.conn.websocket().is_some() && self.next_ping.is_none() {
            self.next_ping = Some(now + web::PING_INTERVAL);
        }
        debug!("client {key} connected from {peer}");
        self.app
            .handle_joined(ClientId(key), peer, now, &mut self.outbox);
        self.dispatch(now);
        true
    }

    /// Hand a client's buffered lines to the App until its input needs
    /// more bytes, is throttled or ends; returns that step. `None` if the
    /// client is no longer in the room (it may have just `/quit`).
    fn take_lines(
        &mut self,
        key: usize,
        inbound: &mut Inbound,
        last_heard: &mut Instant,
        now: Instant,
    ) -> Option<Step> {
        while self.is_open(key) {
            match inbound.next_step(now) {
                Step::Line(line) => {
                    *last_heard = now;
                    self.app.handle_line(
                        ClientId(key),
                        &line,
                        Clock::with_wall(now),
                        &mut self.outbox,
                    );
                    self.dispatch(now);
                }
                Step::TooLong => {
                    self.reply(key, protocol::line_too_long(self.limits.max_line), now);
                }
                step => return Some(step),
            }
        }
        None
    }

    /// A line from the engine itself to one client.
    fn reply(&mut self, key: usize, text: impl Into<String>, now: Instant) {
        self.outbox.send(Recipients::One(ClientId(key)), text);
        self.dispatch(now);
    }

    /// `--idle-timeout` ran out: say so, then leave like any departure
    /// (unless that line pushed it over `--sendq` and it is gone already).
    fn idle_out(&mut self, key: usize, now: Instant) {
        self.reply(key, protocol::IDLE_TIMEOUT, now);
        self.leave(key, Farewell::Flush, now);
    }

    // ----- broadcast --------------------------------------------------------

    /// Carry out everything the App asked for. Each output's bytes were
    /// encoded once: a reply is queued for its one client, a broadcast is
    /// appended once to the log, and the writers do the rest. Clients cut
    /// off on the way (`--sendq`, the output limits) are announced to the
    /// App here, one after another from a worklist rather than by
    /// recursion, so the stack depth stays flat on small stacks however
    /// many clients fall behind at once.
    fn dispatch(&mut self, now: Instant) {
        let mut departed = Vec::new();
        loop {
            let mut outbox = std::mem::take(&mut self.outbox);
            // The App has already forgotten the clients it closes: mark them
            // gone first, so a farewell that cuts one off (its queue full)
            // cannot report it as `left`.
            let closed: Vec<usize> = outbox
                .iter()
                .filter_map(|o| match o {
                    Output::Close { client } => Some(client.0),
                    _ => None,
                })
                .collect();
            for output in outbox.drain() {
                match output {
                    Output::Send {
                        to: Recipients::One(ClientId(key)),
                        bytes,
                    } => {
                        let Some(member) = self.clients.get(key).filter(|m| m.open) else {
                            continue;
                        };
                        let queued = member.conn.queue(&bytes, self.limits.sendq);
                        self.carry_out(key, queued, &closed, &mut departed);
                    }
                    // Nothing to queue: a move is only cut short when it
                    // comes far faster than the client reads.
                    Output::Enter {
                        client: ClientId(key),
                        room,
                    } => {
                        let Some(member) = self.clients.get(key).filter(|m| m.open) else {
                            continue;
                        };
                        let queued = member.conn.enter(key, room);
                        self.carry_out(key, queued, &closed, &mut departed);
                    }
                    Output::Send { to, bytes } => {
                        write_log(&self.log).push(to, &bytes);
                        self.broadcast = true;
                    }
                    // The App closed it and has forgotten it: no `left`.
                    Output::Close {
                        client: ClientId(key),
                    } => {
                        self.depart(key, Farewell::Flush);
                    }
                    // Only the poll engine links to other nodes; `main`
                    // refuses `--cluster` with this engine, so the App
                    // never asks for these here.
                    Output::Publish { .. }
                    | Output::Follow { .. }
                    | Output::Unfollow { .. }
                    | Output::Ask(_) => {}
                }
            }
            self.outbox = outbox;
            departed.extend(self.keep_output_in_bounds(now));
            let Some(key) = departed.pop() else {
                return;
            };
            self.app.handle_left(ClientId(key), now, &mut self.outbox);
        }
    }

    /// What queueing private output for `key` calls for: nothing, waking
    /// its writer, or cutting it off (over `--sendq`), which the App hears
    /// of unless it closed the client itself.
    fn carry_out(
        &mut self,
        key: usize,
        queued: Queued,
        closed: &[usize],
        departed: &mut Vec<usize>,
    ) {
        let Some(member) = self.clients.get(key) else {
            return;
        };
        match queued {
            Queued::Done => {}
            Queued::WakeWriter => self.to_wake.push(member.conn.clone()),
            Queued::TooSlow => {
                let lag = member.conn.lag();
                if self.depart(key, Farewell::TooSlow(lag)) && !closed.contains(&key) {
                    departed.push(key);
                }
            }
        }
    }

    /// Once the log has grown by `LIMITS_EVERY`: the output limits, as the
    /// poll engine applies them (`output_limits.rs`). Returns the clients
    /// it cut off, for the App to hear about.
    fn keep_output_in_bounds(&mut self, now: Instant) -> Vec<usize> {
        let mut log = write_log(&self.log);
        if log.retained() < self.next_limits_check {
            return Vec::new();
        }
        let stall = self.limits.stall_timeout;
        // Behind: its socket refused what it is owed. A member merely owed
        // what its writer has not got to yet (it is woken after this batch)
        // is not judged, but nothing it is owed may be forgotten.
        let mut written = log.head();
        let mut behind = Vec::new();
        let mut lags = Vec::new();
        // A TLS client still shaking hands is owed nothing yet (it starts
        // at the head when it joins): it must not hold the log's tail.
        for (key, m) in self.clients.iter().filter(|(_, m)| !m.shaking_hands) {
            let s = m.conn.standing(&log, key, now, stall);
            lags.push((key, s.lag));
            if s.refused {
                behind.push(Lagging {
                    key,
                    cursor: s.cursor,
                    lag: s.lag,
                    private_bytes: s.private_bytes,
                    stalled: s.stalled,
                });
            } else if s.owed {
                written = written.min(s.cursor);
            }
        }
        let cut = output_limits::enforce(&mut log, behind, self.limits.memory_budget, written);
        self.next_limits_check = log.retained() + LIMITS_EVERY;
        // Before the log is let go: no writer may serve them what is left
        // after the part the log forgot.
        for &key in &cut {
            if let Some(member) = self.clients.get(key) {
                member.conn.forget_owed(&log);
            }
        }
        drop(log);
        // Those that had left already are cut off, but not announced again.
        cut.into_iter()
            .filter(|&key| {
                let lag = lags.iter().find(|l| l.0 == key).map_or(0, |l| l.1);
                self.depart(key, Farewell::TooSlow(lag))
            })
            .collect()
    }

    /// Wake every writer that was given output while asleep, and after a
    /// broadcast every sleeping writer in the room.
    fn wake_writers(&mut self) {
        if std::mem::take(&mut self.broadcast) {
            for (_, member) in self.clients.iter().filter(|(_, m)| m.open) {
                if member.conn.wake_if_idle() == Queued::WakeWriter {
                    self.to_wake.push(member.conn.clone());
                }
            }
        }
        for conn in self.to_wake.drain(..) {
            conn.wake_writer();
        }
    }

    // ----- remove -----------------------------------------------------------

    /// A client leaves the room (the tutorial's `remove()`): it stops
    /// receiving, its address slot is freed, its connection ends as `how`
    /// says, and the App hears about it.
    fn leave(&mut self, key: usize, how: Farewell, now: Instant) {
        if self.depart(key, how) {
            self.app.handle_left(ClientId(key), now, &mut self.outbox);
            self.dispatch(now);
        }
    }

    /// Everything of leaving except telling the App. False if the client
    /// had already left.
    fn depart(&mut self, key: usize, how: Farewell) -> bool {
        let Some(member) = self.clients.get_mut(key) else {
            return false;
        };
        let was_open = std::mem::replace(&mut member.open, false);
        match how {
            // Already left: nothing more to do.
            _ if !was_open && !matches!(how, Farewell::TooSlow(_)) => return false,
            Farewell::Flush => member.conn.close(),
            Farewell::Abort => member.conn.cut_off(b""),
            // Even a client that has left and is still being flushed is cut
            // off when the output limits say so: the log no longer holds
            // what it is owed.
            Farewell::TooSlow(lag) => {
                rules::log_too_slow(key, member.peer, lag);
                member.conn.cut_off(protocol::TOO_SLOW.as_bytes());
            }
        }
        if was_open {
            debug!("client {key} ({}) left", member.peer);
        }
        was_open
    }

    /// The client's threads are done: its socket is closed (this was the
    /// last reference), and only now are its id and its address slot free
    /// for the next client.
    fn forget(&mut self, key: usize) {
        if let Some(member) = self.clients.try_remove(key) {
            debug_assert!(!member.open, "client {key} forgotten while in the room");
            self.admission.release(member.peer.ip());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A loopback pair (ours, the peer's), and `sent` written by the peer,
    /// waited for (bounded) until it is all readable on our side.
    fn pair_with_arrived(sent: usize) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        peer.write_all(&vec![b'x'; sent]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while rustix::io::ioctl_fionread(&ours).unwrap() < sent as u64 {
            assert!(Instant::now() < deadline, "the bytes never arrived");
            thread::yield_now();
        }
        (ours, peer)
    }

    /// What has already arrived is taken without waiting, in one batch of
    /// at most `READ_BATCH` (like one poll-engine read).
    #[test]
    fn a_full_read_takes_what_else_has_arrived_up_to_one_batch() {
        for (sent, batch) in [
            (READ_CHUNK + 100, READ_CHUNK + 100),
            (READ_BATCH + READ_CHUNK, READ_BATCH),
        ] {
            let (ours, _peer) = pair_with_arrived(sent);
            let log = Arc::new(RwLock::new(FanoutLog::new(usize::MAX)));
            let ours = Connection::new(ours, log, None);
            let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
            let mut buf = [0u8; READ_CHUNK];
            let n = (&mut ours.stream()).read(&mut buf).unwrap();
            assert_eq!(n, READ_CHUNK);
            inbound.push(&buf[..n]);
            assert!(read_arrived(&ours, &mut buf, &mut inbound).is_none());
            assert_eq!(inbound.buffered(), batch);
        }
    }
}
