//! The rules both engines apply the same way, kept in one place so the poll
//! and threaded engines cannot drift apart: who receives an output, when a
//! private queue is over `--sendq`, how a refused connection is told, how accepting
//! backs off when the process is out of file descriptors, and how long
//! closing clients and shutdown may take.
//!
//! Nothing here does blocking I/O or owns a thread: each engine calls these
//! from its own loop or threads.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::admission::Refusal;
use crate::app::{ClientId, Recipients, RoomId};
use crate::config::{EngineKind, Limits, engine_client_cap};

/// How long accepting pauses when the process is out of file descriptors.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one "out of file descriptors" warning per this long.
pub(crate) const FD_WARN_EVERY: Duration = Duration::from_secs(5);
/// How long a closing client (FIN received, `/quit`, idle) may take to drain
/// what was queued for it before it is dropped anyway.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// How long a client that has been told everything may take to close its
/// side, while what it still sends is read and thrown away (closing with
/// input unread would send a reset, which can destroy the last words).
pub(crate) const LINGER: Duration = Duration::from_secs(2);
/// How long shutdown waits for output to flush.
pub(crate) const SHUTDOWN_FLUSH: Duration = Duration::from_secs(1);

/// Whether client `key`, in room `room`, is among the recipients `to`
/// (whether it is still open is the engine's to check). Both engines
/// decide who hears what here.
pub(crate) fn is_recipient(to: Recipients, key: usize, room: RoomId) -> bool {
    match to {
        Recipients::One(ClientId(one)) => key == one,
        Recipients::Room(r) => room == r,
        Recipients::RoomBut(r, ClientId(except)) => room == r && key != except,
        Recipients::All => true,
    }
}

/// True if `more` bytes may join `pending` ones without passing `sendq`.
pub(crate) fn fits_sendq(pending: usize, more: usize, sendq: usize) -> bool {
    pending + more <= sendq
}

/// The log line for a client cut off as too slow: `behind` is how many
/// bytes it was owed (see `OutQueue::lag`).
pub(crate) fn log_too_slow(key: usize, peer: impl std::fmt::Display, behind: u64) {
    warn!("client {key} ({peer}) disconnected: too slow to read ({behind} bytes behind)");
}

/// Tell a connection refused by `--max-clients` or `--max-per-ip` why, then
/// close it. Best effort, and it never waits: a fresh socket's send buffer
/// is empty, so this short line fits at once even on a blocking socket.
pub(crate) fn refuse<S: Write + AsFd>(mut stream: S, peer: SocketAddr, refusal: Refusal) {
    let _ = stream.write(refusal.line().as_bytes());
    let _ = rustix::net::shutdown(&stream, rustix::net::Shutdown::Write);
    // Whatever it has sent already is read, so the close is a FIN after
    // the refusal, not a reset that could destroy it. (Not waiting for
    // more: a refusal must cost nothing.)
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match rustix::net::recv(&stream, &mut buf, rustix::net::RecvFlags::DONTWAIT) {
            Ok((n, _)) if n > 0 => {}
            _ => break,
        }
    }
    info!("refused {peer}: {}", refusal.line().trim_end());
}

/// The TLS port's refusal: a plain-text line would be garbage to a TLS
/// client, and a handshake just to say "full" would cost what refusing
/// saves, so the connection is closed without a word.
pub(crate) fn refuse_silently<S>(stream: S, peer: SocketAddr, refusal: Refusal) {
    drop(stream);
    info!("refused TLS {peer}: {}", refusal.line().trim_end());
}

/// `--max-clients`, lowered (with a warning) to fit the open-file limit,
/// and for the threaded engine its threads' memory mappings.
pub(crate) fn max_clients(limits: &Limits, engine: EngineKind) -> usize {
    let cap = engine_client_cap(limits.max_clients, engine);
    if cap.clients() < limits.max_clients {
        warn!("--max-clients {} lowered: {cap}", limits.max_clients);
    }
    cap.clients()
}

/// What to do after `accept()` failed, shared so both engines back off, and
/// log, the same way. Accept errors never end a server.
#[derive(Debug, Default)]
pub(crate) struct AcceptBackoff {
    /// When we last warned, so a long fd shortage logs once per
    /// `FD_WARN_EVERY` instead of ten times a second.
    last_warning: Option<Instant>,
}

impl AcceptBackoff {
    /// `None`: try again at once (interrupted, or the peer gave up while
    /// queued). `Some(until)`: out of fds or memory (EMFILE, ENFILE, ENOBUFS,
    /// ENOMEM): stop accepting until then. The waiting connections stay
    /// queued in the kernel meanwhile; retrying at once would only spin.
    pub(crate) fn after_error(&mut self, e: &io::Error, now: Instant) -> Option<Instant> {
        if matches!(
            e.kind(),
            io::ErrorKind::Interrupted
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
        ) {
            return None;
        }
        if self.last_warning.is_none_or(|t| now >= t + FD_WARN_EVERY) {
            warn!("accept failed ({e}); pausing accepts for {ACCEPT_BACKOFF:?}");
            self.last_warning = Some(now);
        }
        Some(now + ACCEPT_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sendq_counts_what_is_already_pending() {
        assert!(fits_sendq(0, 10, 10));
        assert!(!fits_sendq(1, 10, 10));
    }

    #[test]
    fn accept_backs_off_on_fd_exhaustion_and_warns_once_per_period() {
        let t0 = Instant::now();
        let mut backoff = AcceptBackoff::default();
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.after_error(&aborted, t0), None);
        assert_eq!(backoff.last_warning, None);
        let emfile = io::Error::from_raw_os_error(24);
        assert_eq!(backoff.after_error(&emfile, t0), Some(t0 + ACCEPT_BACKOFF));
        assert_eq!(backoff.last_warning, Some(t0));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            backoff.after_error(&emfile, later),
            Some(later + ACCEPT_BACKOFF)
        );
        assert_eq!(backoff.last_warning, Some(t0));
        let much_later = t0 + FD_WARN_EVERY;
        backoff.after_error(&emfile, much_later);
        assert_eq!(backoff.last_warning, Some(much_later));
    }
}
