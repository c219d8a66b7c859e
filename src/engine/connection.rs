//! One threaded-engine client: its blocking socket and its output, shared
//! by three parties:
//! - the room, which queues lines for it alone and wakes its writer when
//!   something was broadcast (under the room lock: [`queue`], [`wake_if_idle`]);
//! - its writer thread, which writes what it is owed, from the room's shared
//!   [`FanoutLog`] through its own cursor, plus its private lines
//!   ([`run_writer`]);
//! - its reader thread, which owns the client's life and, at the end, waits
//!   for the writer ([`wait_writer`]).
//!
//! This is the piece the tutorial's `broadcast()` lacks. There, the sending
//! client's thread calls `send()` on every other socket in turn, so one
//! client that stops reading blocks the sender, and everyone behind it. Here
//! a broadcast is appended once to the log, and each recipient's own writer
//! thread copies its share into its socket when the socket has room. A
//! client that falls behind costs a cursor that has not moved; the room
//! applies the same limits as the poll engine (`output_limits.rs`).
//!
//! The writer never sits in a blocking `write()`: it offers what it is owed
//! with a non-blocking `sendmsg`, so its cursor always says exactly what the
//! kernel has taken, and when the socket buffer is full it waits in `poll()`
//! until there is room again — the poll engine's `WRITABLE` wait, on a
//! thread of its own — or until `--stall-timeout` says it has waited long
//! enough.
//!
//! A TLS client's bytes also go through its session (`threaded_tls.rs`),
//! which both threads share: the reader feeds it what it read
//! ([`take_input`]), the writer encrypts what is owed through it, and every
//! close ends with its `close_notify`. A browser's lines also go through
//! its WebSocket (`threaded_web.rs`), shared the same way, above the
//! session: frames in, frames out, and a close frame before the
//! `close_notify` and the FIN.
//!
//! Locking: the log's lock, then this connection's state, then its
//! WebSocket, then (TLS) its session; the room's lock, if held, comes
//! before all of them. The log's lock is shared by every writer (a read
//! lock) and taken alone only to append or trim, and no lock is held
//! across a call that can wait.
//!
//! [`queue`]: Connection::queue
//! [`wake_if_idle`]: Connection::wake_if_idle
//! [`run_writer`]: Connection::run_writer
//! [`wait_writer`]: Connection::wait_writer
//! [`take_input`]: Connection::take_input

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use log::debug;
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags, recv, send, sendmsg};

use super::fanout_log::FanoutLog;
use super::out_queue::{OutQueue, Wrote};
use super::rules::{self, fits_sendq};
use super::threaded_tls::{Sent, SharedSession};
use super::threaded_web::SharedWebSocket;
use crate::app::RoomId;
use crate::inbound::Inbound;
use crate::protocol;
use crate::tls::Session;
use crate::web::WebSocket;

/// Every write: never wait (the writer waits in `poll()` instead, so the
/// cursor always says how much the kernel has taken), and no SIGPIPE on a
/// peer that is gone (an error is returned instead).
const SEND_FLAGS: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);

/// The room's log, shared by the room (which appends) and every writer.
pub(crate) type SharedLog = std::sync::Arc<RwLock<FanoutLog>>;

/// A panicking thread must not take the others down with it: the log is
/// valid after any partial update.
pub(crate) fn read_log(log: &RwLock<FanoutLog>) -> RwLockReadGuard<'_, FanoutLog> {
    log.read().unwrap_or_else(PoisonError::into_inner)
}

/// A client's socket and output. See the module docs.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The one socket (no `try_clone`: one fd per client), blocking for the
    /// reader's `read()` through `&TcpStream`; the writer never waits on it
    /// except in `poll()` (see `SEND_FLAGS`).
    stream: TcpStream,
    /// A TLS client's session, shared by its reader and writer behind its
    /// own lock (`threaded_tls.rs`); `None` for a plain client, which then
    /// pays one word for it.
    tls: Option<SharedSession>,
    /// A browser's WebSocket, set once by its reader when the request head
    /// upgraded (before its writer starts), shared by both threads behind
    /// its own lock (`threaded_web.rs`); boxed, so a line client pays two
    /// words for it.
    web: std::sync::OnceLock<Box<SharedWebSocket>>,
    /// The room's broadcasts, read through `state.out`'s cursor.
    log: SharedLog,
    /// The cursor, the private lines and the flags the three parties
    /// coordinate on.
    state: Mutex<Outgoing>,
    /// Wakes the writer: output was queued, or the connection is ending.
    to_writer: Condvar,
    /// Wakes the reader: the writer finished, or the connection is ending
    /// while the reader sleeps out a flood pause.
    to_reader: Condvar,
    /// The reader thread, set when it starts: a close it makes itself
    /// (`/quit`) need not wake it from `read()`.
    reader: std::sync::OnceLock<std::thread::ThreadId>,
}

/// What [`Connection::queue`] (or [`Connection::wake_if_idle`]) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Queued; the writer is busy or already due to be woken.
    Done,
    /// Queued, and the writer sleeps: wake it when done queueing.
    WakeWriter,
    /// Not queued: it would pass `--sendq`.
    TooSlow,
}

/// Everything behind [`Connection::state`].
#[derive(Debug)]
struct Outgoing {
    /// Where this client is in the log, and its private lines.
    out: OutQueue,
    /// No more output will come: the writer hangs up once drained.
    closing: bool,
    /// Hang up now: what it was owed was dropped and the socket shut down.
    aborted: bool,
    /// The writer is waiting on `to_writer` and nobody has promised to wake
    /// it yet (a busy writer picks new output up by itself).
    writer_idle: bool,
    /// The writer thread has finished with the socket.
    writer_done: bool,
    /// TLS or WebSocket: since when the session has held ciphertext (or
    /// the WebSocket a frame of its own: a pong, a ping, the close) that
    /// the socket would not take, with nothing else owed. The cursor alone
    /// would say "not behind", so this is what lets the stall timeout and
    /// the output limits see such a client as they see a plain one whose
    /// socket is full. Always `None` for a plain line client.
    cipher_waiting: Option<Instant>,
}

/// A client's counters for the room's output limits (`output_limits.rs`).
pub(crate) struct Standing {
    /// It is owed output (its writer may simply not have got to it yet).
    pub owed: bool,
    /// Its socket refused what it is owed: it is behind.
    pub refused: bool,
    pub cursor: u64,
    pub lag: u64,
    pub private_bytes: usize,
    pub stalled: bool,
}

impl Connection {
    /// A connection owed what the log receives from now on; `tls` is a TLS
    /// client's session, its handshake not yet done.
    pub(crate) fn new(stream: TcpStream, log: SharedLog, tls: Option<Box<Session>>) -> Self {
        let out = OutQueue::new(read_log(&log).head());
        Self {
            stream,
            tls: tls.map(SharedSession::new),
            web: std::sync::OnceLock::new(),
            log,
            state: Mutex::new(Outgoing {
                out,
                closing: false,
                aborted: false,
                writer_idle: false,
                writer_done: false,
                cipher_waiting: None,
            }),
            to_writer: Condvar::new(),
            to_reader: Condvar::new(),
            reader: std::sync::OnceLock::new(),
        }
    }

    /// Called by the reader thread as it starts.
    pub(crate) fn set_reader(&self) {
        let _ = self.reader.set(std::thread::current().id());
    }

    /// The socket, for the reader's `read()`.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A TLS client's session.
    pub(crate) fn tls(&self) -> Option<&SharedSession> {
        self.tls.as_ref()
    }

    /// Its request head asked for a WebSocket, and the 101 is sent: from
    /// now on its lines are frames. Called by the reader before the writer
    /// starts (and only once: a second call changes nothing).
    pub(crate) fn upgrade(&self, ws: WebSocket) {
        let _ = self.web.set(Box::new(SharedWebSocket::new(ws)));
    }

    /// A browser's WebSocket, once upgraded.
    pub(crate) fn websocket(&self) -> Option<&SharedWebSocket> {
        self.web.get().map(|b| &**b)
    }

    /// A panicking thread must not take the others down with it: the state
    /// is a cursor, a few flags and a byte queue, valid after any partial
    /// update.
    fn state(&self) -> MutexGuard<'_, Outgoing> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- the room's side (called under the room lock) ---------------------

    /// It joined the room just now: owed only what is broadcast from here on
    /// (not what was said while it was being set up).
    pub(crate) fn start_at_head(&self) {
        let log = read_log(&self.log);
        self.state().out = OutQueue::new(log.head());
    }

    /// Queue bytes for this client alone, after every broadcast so far,
    /// unless that would pass `sendq`: then nothing is queued and the caller
    /// cuts the client off. Never waits.
    ///
    /// The writer is not woken here: `Queued::WakeWriter` asks the caller to
    /// call [`Connection::wake_writer`] once it has queued everything it is
    /// about to (the poll engine's "one write per client per tick").
    pub(crate) fn queue(&self, bytes: &[u8], sendq: usize) -> Queued {
        let log = read_log(&self.log);
        let mut state = self.state();
        if state.closing || state.aborted || state.writer_done {
            // Leaving already, or its writer failed and is gone (the reader
            // is about to tell the room): it has nowhere to go.
            return Queued::Done;
        }
        if !fits_sendq(state.out.private_bytes(), bytes.len(), sendq) {
            return Queued::TooSlow;
        }
        state.out.push_private(&log, bytes);
        if state.writer_idle {
            state.writer_idle = false;
            return Queued::WakeWriter;
        }
        Queued::Done
    }

    /// It now hears `room`, after what it was still owed of the old one
    /// (`OutQueue::enter`); `TooSlow` if it moves far faster than it reads.
    pub(crate) fn enter(&self, key: usize, room: RoomId) -> Queued {
        let log = read_log(&self.log);
        let mut state = self.state();
        if state.closing || state.aborted || state.writer_done || state.out.enter(&log, key, room) {
            return Queued::Done;
        }
        Queued::TooSlow
    }

    /// Something was broadcast: if the writer sleeps, it will be woken.
    pub(crate) fn wake_if_idle(&self) -> Queued {
        let mut state = self.state();
        if state.writer_idle {
            state.writer_idle = false;
            return Queued::WakeWriter;
        }
        Queued::Done
    }

    /// Wake the writer after a `Queued::WakeWriter`.
    pub(crate) fn wake_writer(&self) {
        self.to_writer.notify_one();
    }

    /// Where it stands, for the room's output limits. Steps its cursor over
    /// broadcasts not meant for it first, so only what it is really owed
    /// holds the log's tail.
    pub(crate) fn standing(
        &self,
        log: &FanoutLog,
        key: usize,
        now: Instant,
        stall: Duration,
    ) -> Standing {
        let mut state = self.state();
        let cipher_waiting = state.cipher_waiting;
        let out = &mut state.out;
        out.advance(log, key, 0);
        Standing {
            owed: !out.is_drained(log, key),
            refused: out.behind_since().is_some() || cipher_waiting.is_some(),
            cursor: out.cursor(),
            lag: out.lag(log),
            private_bytes: out.private_bytes(),
            stalled: out.stalled(now, stall)
                || cipher_waiting.is_some_and(|t| now.saturating_duration_since(t) >= stall),
        }
    }

    /// How many bytes it is owed (for log lines).
    pub(crate) fn lag(&self) -> u64 {
        let log = read_log(&self.log);
        self.state().out.lag(&log)
    }

    /// From now on the writer writes nothing. The output limits call this
    /// under the log's write lock, before the room lets it go, so no writer
    /// can be served past what the log forgot; `cut_off` starts with it.
    pub(crate) fn forget_owed(&self, log: &FanoutLog) {
        let mut state = self.state();
        state.aborted = true;
        state.out.clear(log);
        self.to_writer.notify_one();
        self.to_reader.notify_one();
    }

    /// It left the room: the writer sends what was said until now and its
    /// private lines, then shuts our side. If another thread closes it (the
    /// server shutting down, say), the reader's blocked `read()` is made to
    /// return at once (end of stream), so the reader notices the client has
    /// left; a reader closing its own client (`/quit`) is not in `read()`,
    /// and keeps the socket readable, to drain it afterwards
    /// ([`Connection::drain_input`]).
    pub(crate) fn close(&self) {
        let log = read_log(&self.log);
        let mut state = self.state();
        state.out.stop_at_head(&log);
        state.closing = true;
        self.to_writer.notify_one();
        self.to_reader.notify_one();
        drop(state);
        drop(log);
        if self.reader.get() != Some(&std::thread::current().id()) {
            let _ = self.stream.shutdown(Shutdown::Read);
        }
    }

    /// Hang up now: forget what it is owed, send `last_words` only if the
    /// socket takes them without waiting (a browser's as a text frame and
    /// then its close frame; a TLS client's through its session, then its
    /// `close_notify`), and shut the socket down, which also wakes a reader
    /// or writer blocked on it.
    pub(crate) fn cut_off(&self, last_words: &[u8]) {
        self.forget_owed(&read_log(&self.log));
        // Its socket buffer is probably full, and the room lock may be
        // held: never wait for these.
        match (self.websocket(), &self.tls) {
            // The WebSocket's and the session's locks come after the
            // room's: allowed here.
            (Some(web), tls) => web.last_words(tls.as_ref(), &self.stream, last_words),
            (None, Some(tls)) => tls.last_words(&self.stream, last_words),
            (None, None) if !last_words.is_empty() => {
                let _ = send(&self.stream, last_words, SEND_FLAGS);
            }
            (None, None) => {}
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// Every `web::PING_INTERVAL`, for a browser: ping it (the room's timer
    /// thread calls this, under the room lock: it never waits). `None` for
    /// a line client; `Some(false)` if it left the last pings unanswered
    /// and is to be taken for gone. A ping the socket would not take at
    /// once is the writer's to send.
    pub(crate) fn ping(&self) -> Option<bool> {
        let web = self.websocket()?;
        match web.ping(self.tls.as_ref(), &self.stream) {
            None => Some(false),
            Some(sent) => {
                if sent == Sent::Waiting {
                    self.writer_must_send();
                }
                Some(true)
            }
        }
    }

    /// The session or the WebSocket holds bytes of its own the socket would
    /// not take: wake a sleeping writer, which waits for room and sends
    /// them. Takes the state lock: call it with the WebSocket's and the
    /// session's let go.
    fn writer_must_send(&self) {
        let mut state = self.state();
        if state.writer_idle {
            state.writer_idle = false;
            self.to_writer.notify_one();
        }
    }

    // ----- the reader's side ------------------------------------------------

    /// Bytes the reader just read from the socket, into its framing: as
    /// they are for a plain client; through the session for a TLS one
    /// (`SharedSession::take_ciphertext`); through the WebSocket (and the
    /// session) for a browser (`SharedWebSocket::take_input`); called
    /// without any other lock held. If the session or the WebSocket
    /// answered something (a key update, a pong) that the socket would not
    /// take at once, the writer is woken to wait for room and send it.
    pub(crate) fn take_input(&self, bytes: &[u8], inbound: &mut Inbound) -> io::Result<()> {
        let sent = match (self.websocket(), &self.tls) {
            (Some(web), tls) => web.take_input(tls.as_ref(), &self.stream, bytes, inbound)?,
            (None, Some(tls)) => tls.take_ciphertext(&self.stream, bytes, Some(inbound))?,
            (None, None) => {
                inbound.push(bytes);
                return Ok(());
            }
        };
        if sent == Sent::Waiting {
            // Their locks were let go first: state, then WebSocket, then
            // session.
            self.writer_must_send();
        }
        Ok(())
    }

    /// Flood control: sleep until `until`, unless the connection ends first.
    /// Returns false if it ended.
    pub(crate) fn pause_until(&self, until: Instant) -> bool {
        let pause = until.saturating_duration_since(Instant::now());
        let state = self
            .to_reader
            .wait_timeout_while(self.state(), pause, |s| !s.closing && !s.aborted)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        !state.closing && !state.aborted
    }

    /// After the writer has shut our side: read what the client still sends
    /// and throw it away, until it closes its side too or `linger` passes.
    /// Closing a socket with input unread sends a reset, and a reset throws
    /// away whatever the kernel has not delivered yet: the last words.
    pub(crate) fn drain_input(&self, linger: Duration) {
        let deadline = Instant::now() + linger;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match std::io::Read::read(&mut &self.stream, &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Wait for the writer to finish, at most `grace`; if it has not by
    /// then (the client stopped reading), hang up, which ends the writer.
    pub(crate) fn wait_writer(&self, grace: Duration) {
        let state = self
            .to_reader
            .wait_timeout_while(self.state(), grace, |s| !s.writer_done)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if !state.writer_done {
            drop(state);
            self.cut_off(b"");
        }
    }

    // ----- the writer thread ------------------------------------------------

    /// The writer thread's whole life, for client `key`: write what it is
    /// owed without waiting, and when the socket buffer is full wait in
    /// `poll()` for room, at most until it has made no progress for `stall`
    /// (then it is cut off as too slow); sleep while it is owed nothing;
    /// after a close, hang up once drained. A write error (reset, broken
    /// pipe) hangs up too, which wakes the reader, and the reader tells the
    /// room.
    pub(crate) fn run_writer(&self, key: usize, stall: Duration) {
        // Everything it was owed was written: only our side is shut, so the
        // FIN follows the last words and the reader can drain the input.
        let mut written_all = false;
        loop {
            let log = read_log(&self.log);
            let mut state = self.state();
            if state.aborted {
                break;
            }
            let now = Instant::now();
            // Under the log and state locks, as the cursor must move with
            // what the frames or the session take: the WebSocket's lock,
            // then the session's, last.
            let wrote = match (self.websocket(), &self.tls) {
                (None, None) => state
                    .out
                    .write_to(&log, key, &mut NonBlocking(&self.stream), now),
                (Some(web), tls) => {
                    web.write_owed(tls.as_ref(), &mut state.out, &log, key, &self.stream, now)
                }
                (None, Some(tls)) => tls.write_owed(&mut state.out, &log, key, &self.stream, now),
            };
            if self.tls.is_some() || self.websocket().is_some() {
                let stuck =
                    matches!(wrote, Ok((_, Wrote::Refused))) && state.out.behind_since().is_none();
                state.cipher_waiting = if stuck {
                    Some(state.cipher_waiting.unwrap_or(now))
                } else {
                    None
                };
            }
            match wrote {
                Ok((_, Wrote::More)) => {}
                Ok((_, Wrote::Drained)) => {
                    if state.closing {
                        written_all = true;
                        break;
                    }
                    state.writer_idle = true;
                    drop(log);
                    let mut state = self
                        .to_writer
                        .wait_while(state, |s| s.writer_idle && !s.aborted && !s.closing)
                        .unwrap_or_else(PoisonError::into_inner);
                    state.writer_idle = false;
                }
                Ok((_, Wrote::Refused)) => {
                    let since = state
                        .out
                        .behind_since()
                        .or(state.cipher_waiting)
                        .unwrap_or(now);
                    let lag = state.out.lag(&log);
                    drop(state);
                    drop(log);
                    let left = (since + stall).saturating_duration_since(now);
                    if !self.wait_writable(left) {
                        rules::log_too_slow(key, self.peer(), lag);
                        self.cut_off(protocol::TOO_SLOW.as_bytes());
                        break;
                    }
                }
                Err(e) => {
                    debug!("client {key} write failed: {e}");
                    break;
                }
            }
        }
        // An orderly close: the close frame, then the `close_notify`, then
        // the FIN.
        if written_all && let Some(web) = self.websocket() {
            self.send_close_frame(web, stall);
        }
        if written_all && let Some(tls) = &self.tls {
            self.send_close_notify(tls, stall);
        }
        let _ = self.stream.shutdown(if written_all {
            Shutdown::Write
        } else {
            Shutdown::Both
        });
        let log = read_log(&self.log);
        let mut state = self.state();
        state.writer_done = true;
        state.out.clear(&log);
        self.to_reader.notify_one();
    }

    /// The last record of an orderly TLS close, after everything owed:
    /// `close_notify`, waiting for room if the socket is full (without the
    /// session's lock), at most `stall` at a time. A cut-off (the reader's
    /// close grace running out, shutdown) ends the wait at once.
    fn send_close_notify(&self, tls: &SharedSession, stall: Duration) {
        let mut sent = tls.close(&self.stream);
        // Bounded: each pass waits for room at most `stall`, and ends once
        // the connection is cut off (which also wakes the `poll()`).
        while let Ok(Sent::Waiting) = sent {
            if self.state().aborted || !self.wait_writable(stall) {
                return;
            }
            sent = tls.flush(&self.stream);
        }
    }

    /// A browser's orderly close, after everything owed: its close frame,
    /// waiting for room like `send_close_notify` (without the WebSocket's
    /// lock), at most `stall` at a time; a cut-off ends the wait at once.
    fn send_close_frame(&self, web: &SharedWebSocket, stall: Duration) {
        let tls = self.tls.as_ref();
        let mut sent = web.close(tls, &self.stream);
        // Bounded: each pass waits for room at most `stall`, and ends once
        // the connection is cut off (which also wakes the `poll()`).
        while let Ok(Sent::Waiting) = sent {
            if self.state().aborted || !self.wait_writable(stall) {
                return;
            }
            sent = web.flush(tls, &self.stream);
        }
    }

    /// For log lines.
    pub(crate) fn peer(&self) -> String {
        self.stream
            .peer_addr()
            .map_or_else(|_| "gone".into(), |a| a.to_string())
    }

    /// Sleep until the socket has room again (or is shut down: a cut-off
    /// wakes this at once), at most `limit`. False if the time ran out
    /// with no room (a stall), or `poll()` itself failed.
    pub(crate) fn wait_writable(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = Timespec::try_from(left).ok();
            let mut fds = [PollFd::new(&self.stream, PollFlags::OUT)];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(0) => return false,
                Ok(_) => return true,
                Err(Errno::INTR) => {}
                Err(e) => {
                    debug!("poll failed: {}", io::Error::from(e));
                    return false;
                }
            }
        }
    }
}

/// A blocking socket used without waiting: `write` is `send()` and
/// `write_vectored` is `sendmsg()`, both with `SEND_FLAGS`; `read` is a
/// `recv()` that does not wait either (what the TLS `Pipe` asks of a
/// socket; the engine's readers block in `read()` on the stream itself).
pub(crate) struct NonBlocking<'a>(pub(crate) &'a TcpStream);

impl Read for NonBlocking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(recv(self.0, buf, RecvFlags::DONTWAIT)?.0)
    }
}

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(send(self.0, buf, SEND_FLAGS)?)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut control = SendAncillaryBuffer::default();
        Ok(sendmsg(self.0, bufs, &mut control, SEND_FLAGS)?)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// For unit tests: a loopback pair, our side as a `Connection` on a fresh
/// log, and the peer's socket, read with a timeout.
#[cfg(test)]
pub(crate) fn loopback_pair() -> (Connection, TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (ours, _) = listener.accept().unwrap();
    let log = std::sync::Arc::new(RwLock::new(FanoutLog::new(usize::MAX)));
    (Connection::new(ours, log, None), peer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{ClientId, Recipients};
    use std::io::Read;
    use std::sync::{Arc, mpsc};

    const KEY: usize = 1;
    const STALL: Duration = Duration::from_secs(30);

    fn pair() -> (Arc<Connection>, TcpStream) {
        let (conn, peer) = loopback_pair();
        (Arc::new(conn), peer)
    }

    fn broadcast(conn: &Connection, bytes: &[u8]) {
        conn.log.write().unwrap().push(
            Recipients::RoomBut(crate::app::RoomId::LOBBY, ClientId(0)),
            bytes,
        );
        if conn.wake_if_idle() == Queued::WakeWriter {
            conn.wake_writer();
        }
    }

    fn read_all(mut peer: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    }

    /// Run the writer on a thread; the receiver hears when it has ended.
    fn spawn_writer(conn: &Arc<Connection>, stall: Duration) -> mpsc::Receiver<()> {
        let (done, ended) = mpsc::channel();
        let conn = conn.clone();
        std::thread::spawn(move || {
            conn.run_writer(KEY, stall);
            let _ = done.send(());
        });
        ended
    }

    #[test]
    fn sendq_refuses_what_would_not_fit_and_close_flushes_then_hangs_up() {
        let (conn, peer) = pair();
        assert_eq!(conn.queue(b"abc", 4), Queued::Done);
        assert_eq!(
            conn.queue(b"de", 4),
            Queued::TooSlow,
            "5 bytes with sendq 4"
        );
        broadcast(&conn, b"-chat-");
        assert_eq!(conn.queue(b"\n", 4), Queued::Done);
        let writer = spawn_writer(&conn, STALL);
        conn.close();
        broadcast(&conn, b"after it left");
        assert_eq!(read_all(peer), b"abc-chat-\n");
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(conn.state().writer_done);
        assert_eq!(conn.state().out.private_bytes(), 0);
    }

    /// A reader slower than the writer: the socket fills again and again,
    /// the writer waits for room each time, and every byte arrives in order,
    /// broadcasts and private lines interleaved as they were said.
    #[test]
    fn a_slow_reader_gets_every_byte_in_order() {
        let (conn, mut peer) = pair();
        let mut want = Vec::new();
        let writer = spawn_writer(&conn, STALL);
        for i in 0..20_000usize {
            let line = format!("{i} {}\n", "x".repeat(i % 7 * 150));
            want.extend_from_slice(line.as_bytes());
            if i % 3 == 0 {
                if conn.queue(line.as_bytes(), usize::MAX) == Queued::WakeWriter {
                    conn.wake_writer();
                }
            } else {
                broadcast(&conn, line.as_bytes());
            }
        }
        let mut got = vec![0; want.len()];
        for piece in got.chunks_mut(64 * 1024) {
            peer.read_exact(piece).unwrap();
        }
        assert!(got == want, "bytes lost, duplicated or reordered");
        conn.close();
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
    }

    /// A writer waiting for room on a client that never reads ends as soon
    /// as the client is cut off.
    #[test]
    fn a_cut_off_wakes_a_writer_waiting_for_room() {
        let (conn, peer) = pair();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(1)
            .unwrap();
        let writer = spawn_writer(&conn, STALL);
        let line = [b'z'; 64 * 1024];
        // Far more than the kernel buffers, broadcast until the writer is
        // behind: it found the socket full and now waits for room.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            broadcast(&conn, &line);
            if conn.state().out.behind_since().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "the socket never filled");
            std::thread::yield_now();
        }
        conn.cut_off(b"");
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
    }

    /// A writer that makes no progress for the stall timeout cuts its
    /// client off, saying why if the socket takes it.
    #[test]
    fn a_stalled_writer_cuts_its_client_off() {
        let (conn, peer) = pair();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(1)
            .unwrap();
        let writer = spawn_writer(&conn, Duration::from_millis(200));
        let line = [b'z'; 64 * 1024];
        let deadline = Instant::now() + Duration::from_secs(20);
        while conn.state().out.behind_since().is_none() {
            broadcast(&conn, &line);
            assert!(Instant::now() < deadline, "the socket never filled");
            std::thread::yield_now();
        }
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(conn.state().aborted, "cut off");
        drop(peer);
    }

    /// A writer that failed is gone: what is offered afterwards is dropped,
    /// not held, so a client that is already gone costs no memory and is
    /// not also reported too slow.
    #[test]
    fn after_a_write_error_offers_are_dropped() {
        let (conn, _peer) = pair();
        conn.stream().shutdown(Shutdown::Write).unwrap();
        assert_eq!(conn.queue(b"lost\n", 8), Queued::Done);
        conn.run_writer(KEY, STALL); // EPIPE: ends at once
        assert!(conn.state().writer_done);
        assert_eq!(conn.queue(b"past sendq\n", 8), Queued::Done);
        assert_eq!(conn.state().out.private_bytes(), 0);
    }

    #[test]
    fn cut_off_drops_the_queue_says_last_words_and_ends_a_flood_pause() {
        let (conn, peer) = pair();
        assert_eq!(conn.queue(b"never sent\n", 1024), Queued::Done);
        let (paused, woke) = mpsc::channel();
        std::thread::spawn({
            let conn = conn.clone();
            move || {
                let until = Instant::now() + Duration::from_secs(60);
                paused.send(conn.pause_until(until)).unwrap();
            }
        });
        conn.cut_off(b"bye\n");
        let still_open = woke.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(!still_open);
        assert_eq!(read_all(peer), b"bye\n");
        conn.run_writer(KEY, STALL); // ends at once: nothing may be written any more
    }
}
