//! A threaded-engine TLS client's one session, shared by its two threads.
//!
//! In the poll engine one thread owns a client's socket and its session, so
//! "read ciphertext, decrypt, encrypt, send" is one sequence of calls. Here
//! the reader thread and the writer thread both need the session: the
//! reader to decrypt what arrives (and to answer the handshake, or a key
//! update), the writer to encrypt what the client is owed. A TLS session is
//! one state machine with one sequence of records each way, so the two
//! threads take turns on it: [`SharedSession`] is the session behind one
//! `Mutex`, and every call made under that lock is one that cannot wait:
//! - the reader does its blocking `read()` on the socket *without* the
//!   lock, and only then takes it to feed those bytes in
//!   ([`SharedSession::take_ciphertext`]). Were it to block in `read()`
//!   holding the lock, the writer could not encrypt a single line until the
//!   client spoke: a silent client would receive nothing;
//! - the writer encrypts and sends with the engine's non-blocking
//!   `send`/`sendmsg` ([`SharedSession::write_owed`]), and when the socket
//!   is full it lets go of the lock before it waits in `poll()`. Were it to
//!   wait holding the lock, a client that stops reading would also stop the
//!   server reading from it (and a reader stuck behind the lock cannot even
//!   notice the client has gone).
//!
//! The lock is the innermost of the engine's locks: the room, then the log,
//! then a connection's state, then its session. The writer holds the log
//! and its state while it encrypts (so its cursor moves with what the
//! session took); the reader holds the session alone; nothing holding the
//! session takes another lock.
//!
//! The handshake comes first ([`handshake`]), on the reader thread, before
//! the client joins the room and before its writer exists: until then there
//! is nobody to share with, and nothing to write but the handshake itself.

use std::fmt;
use std::io::{self, IoSlice, Read as _};
use std::net::TcpStream;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::connection::{Connection, NonBlocking};
use super::fanout_log::FanoutLog;
use super::out_queue::{OutQueue, Wrote};
use crate::inbound::Inbound;
use crate::tls::{Pipe, Session};

/// Plaintext taken from the session at a time, between two feeds of
/// ciphertext, into a buffer on the reader's stack. Draining it every time
/// keeps rustls' own plaintext buffer (16 KiB) from filling, which would
/// make it refuse to read. Small, because a stack page once touched stays
/// in RSS for the client's whole life: with this and [`HANDSHAKE_READ`] at
/// 1 KiB instead of 4, an idle TLS client costs 8 KB less (measured with
/// `pollchat bench -n 1000 --messages 0 --tls`); a few more passes of a
/// loop cost nothing next to the decryption.
const PLAINTEXT_CHUNK: usize = 1024;

/// The handshake's reads of the socket. A ClientHello is a few hundred
/// bytes to 2 KB; more just takes another read.
const HANDSHAKE_READ: usize = 1024;

/// One client's TLS session and the lock its two threads take turns on.
#[derive(Debug)]
pub(crate) struct SharedSession {
    /// Boxed (as the poll engine's is): a session is over a kilobyte, and
    /// only TLS clients have one.
    session: Mutex<Box<Session>>,
}

/// Whether the session still holds ciphertext after an offer to the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Nothing is waiting.
    All,
    /// The socket was full: the rest waits in the session for the writer.
    Waiting,
}

impl From<bool> for Sent {
    fn from(all: bool) -> Self {
        if all { Sent::All } else { Sent::Waiting }
    }
}

impl SharedSession {
    pub(crate) fn new(session: Box<Session>) -> Self {
        Self {
            session: Mutex::new(session),
        }
    }

    /// A panicking thread must not take the other down with it: rustls'
    /// state is consistent between calls, and a call that panicked left
    /// at worst an error the next call reports. A WebSocket client's
    /// session is locked after its WebSocket (`threaded_web.rs`).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Box<Session>> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reader's side: `bytes`, just read from the socket, go through
    /// the session; the plaintext they carry goes to `inbound`. rustls takes
    /// a slice in pieces (what its buffer holds) and refuses to read once 16 KiB of
    /// plaintext sit unread, so the plaintext is drained after every
    /// receive. Whatever the records asked for (a handshake reply, a key
    /// update, an alert) is offered to the socket without waiting.
    ///
    /// With no `inbound` (a web client's handshake: what follows it is a
    /// request head, not lines) the plaintext stays in the session, to be
    /// read from there; a handshake's last flight carries far less than
    /// the 16 KiB rustls holds.
    ///
    /// A TLS error is `InvalidData`; its alert has been offered already.
    pub(crate) fn take_ciphertext(
        &self,
        sock: &TcpStream,
        bytes: &[u8],
        mut inbound: Option<&mut Inbound>,
    ) -> io::Result<Sent> {
        let mut session = self.lock();
        let mut rest = bytes;
        let mut plain = [0u8; PLAINTEXT_CHUNK];
        let mut failed = None;
        // Each pass consumes bytes of `rest` (or ends): bounded.
        while !rest.is_empty() {
            match session.receive(&mut rest) {
                // Its `close_notify` came: rustls reads nothing after it.
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
            if let Some(inbound) = inbound.as_deref_mut()
                && drain_plaintext(&mut session, &mut plain, inbound)
            {
                break;
            }
        }
        // The alert, after an error, and a handshake's replies.
        let sent = session.send(&mut NonBlocking(sock));
        match failed {
            Some(e) => Err(e),
            None => sent.map(Sent::from),
        }
    }

    /// The writer's side: one write of what client `key` is owed, encrypted
    /// by the session and sent without waiting (rustls' `Pipe`). The cursor
    /// moves by what the session took; what the session could not send yet
    /// stays in it (16 KiB at most) and is sent first next time. Owed
    /// nothing more but with ciphertext still waiting counts as
    /// [`Wrote::Refused`]: the writer must wait for room, not go to sleep
    /// with the end of a line stuck in the session (rustls/rustls#359).
    pub(crate) fn write_owed(
        &self,
        out: &mut OutQueue,
        log: &FanoutLog,
        key: usize,
        sock: &TcpStream,
        now: Instant,
    ) -> io::Result<(usize, Wrote)> {
        let mut session = self.lock();
        let mut sock = NonBlocking(sock);
        let (written, wrote) = out.write_to(
            log,
            key,
            &mut Pipe {
                session: &mut session,
                sock: &mut sock,
            },
            now,
        )?;
        // Ciphertext left from an earlier write, when nothing new was owed.
        if wrote == Wrote::Drained && !session.send(&mut sock)? {
            return Ok((written, Wrote::Refused));
        }
        Ok((written, wrote))
    }

    /// Offer whatever ciphertext waits to the socket, without waiting.
    pub(crate) fn flush(&self, sock: &TcpStream) -> io::Result<Sent> {
        self.lock().send(&mut NonBlocking(sock)).map(Sent::from)
    }

    /// The end of an orderly close: queue `close_notify` after everything
    /// the client was owed, and offer it (and what waits before it) to the
    /// socket. Safe to call again: rustls sends one `close_notify`.
    pub(crate) fn close(&self, sock: &TcpStream) -> io::Result<Sent> {
        let mut session = self.lock();
        session.close();
        session.send(&mut NonBlocking(sock)).map(Sent::from)
    }

    /// Hanging up now: `last_words` (if the session takes them), then
    /// `close_notify`, each only as far as the socket takes it without
    /// waiting. Whatever it does not take is lost: the caller shuts the
    /// socket down next.
    pub(crate) fn last_words(&self, sock: &TcpStream, last_words: &[u8]) {
        let mut session = self.lock();
        if !last_words.is_empty() && !session.is_handshaking() {
            let _ = session.encrypt(&[IoSlice::new(last_words)]);
        }
        session.close();
        let _ = session.send(&mut NonBlocking(sock));
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.lock().is_handshaking()
    }
}

/// All the plaintext the session holds, into `inbound`. True at the peer's
/// end (its `close_notify`): the end of stream is pushed too.
fn drain_plaintext(session: &mut Session, plain: &mut [u8], inbound: &mut Inbound) -> bool {
    // Bounded: each pass takes plaintext out, and the session holds at
    // most 16 KiB of it.
    loop {
        match session.plaintext(plain) {
            Ok(0) => {
                inbound.push_eof();
                return true;
            }
            Ok(n) => inbound.push(&plain[..n]),
            // `WouldBlock`: none left. No other error comes from a read of
            // buffered plaintext.
            Err(_) => return false,
        }
    }
}

/// Why a handshake did not complete. Logged at debug: on a public port,
/// failed handshakes are scanners and typos, not news.
#[derive(Debug)]
pub(crate) enum HandshakeFailed {
    /// Not finished within `--handshake-timeout` (a slowloris, or a client
    /// that connected and said nothing).
    TimedOut,
    /// The peer closed before the handshake was done.
    Closed,
    /// Not TLS, or TLS we cannot speak (garbage, plain text, no common
    /// cipher suite); the alert has been offered.
    Tls(io::Error),
    /// The socket failed (reset, or hung up on by shutdown).
    Io(io::Error),
}

impl fmt::Display for HandshakeFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeFailed::TimedOut => f.write_str("handshake not finished in time"),
            HandshakeFailed::Closed => f.write_str("closed during the handshake"),
            HandshakeFailed::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeFailed::Io(e) => write!(f, "socket error during the handshake: {e}"),
        }
    }
}

/// What one [`read_by`] got.
pub(crate) enum Read {
    /// This many bytes (0: the peer's end of stream).
    Bytes(usize),
    /// Nothing yet (a timeout short of the deadline, a signal): call again.
    Again,
    /// The deadline has passed.
    Late,
}

/// One blocking read of a connection still being set up (its TLS
/// handshake, a browser's request head) that waits no later than
/// `deadline`, so a peer that trickles bytes or sends none gains nothing.
pub(crate) fn read_by(stream: &TcpStream, buf: &mut [u8], deadline: Instant) -> io::Result<Read> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(Read::Late);
    }
    stream.set_read_timeout(Some(left))?;
    match (&mut &*stream).read(buf) {
        Ok(n) => Ok(Read::Bytes(n)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Ok(Read::Again)
        }
        Err(e) => Err(e),
    }
}

/// Complete the TLS handshake of `conn`, on its reader thread, before it
/// joins the room: read (blocking, bounded by `deadline`), feed the session,
/// send its replies, until it is no longer handshaking. Plaintext that came
/// with the client's last handshake flight (a TLS 1.3 client may send its
/// first line at once) is already in `inbound`; with no `inbound` (a web
/// client, whose request head comes next) it waits in the session.
///
/// `deadline` is the slowloris defence: every blocking wait here (the
/// `read()`, and `poll()` should the socket be full) ends at it, whatever
/// the client trickles in the meantime.
pub(crate) fn handshake(
    conn: &Connection,
    tls: &SharedSession,
    deadline: Instant,
    mut inbound: Option<&mut Inbound>,
) -> Result<(), HandshakeFailed> {
    let stream = conn.stream();
    let mut buf = [0u8; HANDSHAKE_READ];
    // Bounded by `deadline`: every pass waits at most until then.
    while tls.is_handshaking() {
        let n = match read_by(stream, &mut buf, deadline) {
            Ok(Read::Bytes(0)) => return Err(HandshakeFailed::Closed),
            Ok(Read::Bytes(n)) => n,
            Ok(Read::Again) => continue,
            Ok(Read::Late) => return Err(HandshakeFailed::TimedOut),
            Err(e) => return Err(HandshakeFailed::Io(e)),
        };
        let mut sent = match tls.take_ciphertext(stream, &buf[..n], inbound.as_deref_mut()) {
            Ok(sent) => sent,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(HandshakeFailed::Tls(e));
            }
            Err(e) => return Err(HandshakeFailed::Io(e)),
        };
        // A fresh socket takes a handshake flight at once; should it not,
        // wait for room, without the lock, and no later than `deadline`.
        while sent == Sent::Waiting {
            let left = deadline.saturating_duration_since(Instant::now());
            if !conn.wait_writable(left) {
                return Err(HandshakeFailed::TimedOut);
            }
            sent = tls.flush(stream).map_err(HandshakeFailed::Io)?;
        }
    }
    // From here on, reads wait as the plain reader's do.
    stream.set_read_timeout(None).map_err(HandshakeFailed::Io)
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::{Arc, RwLock};
    use std::time::Duration;

    use crate::app::{ClientId, Recipients};
    use crate::inbound::Step;
    use crate::tls::{Acceptor, ClientTls, Verify};

    const KEY: usize = 1;

    /// A server session from a throwaway certificate, and a client session
    /// that takes any certificate (the point here is the server side).
    fn sessions() -> (Box<Session>, Box<Session>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "pollchat-threaded-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let acceptor = Acceptor::load(&cert, &key).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let client = ClientTls::new(&Verify::Insecure).unwrap();
        (
            acceptor.accept().unwrap(),
            client.session("localhost").unwrap(),
        )
    }

    /// A loopback pair whose peer end has a tiny receive buffer, as our
    /// side a `Connection` with the server session, handshake done through
    /// [`handshake`]; returns it with the client session and its socket.
    fn connected() -> (Connection, Box<Session>, TcpStream) {
        let (server, mut client) = sessions();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        peer.set_recv_buffer_size(1).unwrap();
        peer.connect(&listener.local_addr().unwrap().into())
            .unwrap();
        let peer: TcpStream = peer.into();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ours, _) = listener.accept().unwrap();
        let log = Arc::new(RwLock::new(FanoutLog::new(usize::MAX)));
        let conn = Connection::new(ours, log, Some(server));
        let mut wire = peer.try_clone().unwrap();
        let client_side = std::thread::spawn(move || {
            // Bounded: a handshake is two or three flights.
            for _ in 0..10 {
                client.send(&mut wire).unwrap();
                if !client.is_handshaking() {
                    break;
                }
                client.receive(&mut wire).unwrap();
            }
            client
        });
        let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(20);
        let tls = conn.tls().unwrap();
        handshake(&conn, tls, deadline, Some(&mut inbound)).unwrap();
        let client = client_side.join().unwrap();
        (conn, client, peer)
    }

    /// rustls refuses to read once 16 KiB of plaintext sit unread: 100 KiB
    /// of lines handed over in one slice still come out whole, because the
    /// plaintext is drained between receives.
    #[test]
    fn ciphertext_carrying_more_than_rustls_buffers_is_taken_whole() {
        let (conn, mut client, _peer) = connected();
        let line = format!("{}\n", "x".repeat(999));
        let plaintext = line.repeat(100);
        let mut ciphertext = Vec::new();
        let mut taken = 0;
        // Bounded: each pass encrypts up to the session's 16 KiB.
        while taken < plaintext.len() {
            taken += client
                .encrypt(&[IoSlice::new(&plaintext.as_bytes()[taken..])])
                .unwrap();
            client.send(&mut ciphertext).unwrap();
        }
        let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
        let tls = conn.tls().unwrap();
        let sent = tls
            .take_ciphertext(conn.stream(), &ciphertext, Some(&mut inbound))
            .unwrap();
        assert_eq!(sent, Sent::All);
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(inbound.next_step(now), Step::Line("x".repeat(999)));
        }
        assert_eq!(inbound.next_step(now), Step::NeedMore);
    }

    /// The trap of rustls/rustls#359: owed nothing more, but the end of the
    /// output still in the session because the socket was full. That is
    /// `Refused` (wait for room), not `Drained` (sleep), until the socket
    /// has taken it.
    #[test]
    fn ciphertext_stuck_in_the_session_is_not_drained() {
        let (conn, mut client, mut peer) = connected();
        let tls = conn.tls().unwrap();
        let mut log = FanoutLog::new(usize::MAX);
        log.push(
            Recipients::RoomBut(crate::app::RoomId::LOBBY, ClientId(0)),
            &vec![b'z'; 8 << 20],
        );
        let mut out = OutQueue::new(0);
        let now = Instant::now();
        // Until the socket is full (bounded: 8 MiB is far more than a
        // socket holds for a peer that does not read).
        let mut refused = false;
        for _ in 0..100_000 {
            let (_, wrote) = tls
                .write_owed(&mut out, &log, KEY, conn.stream(), now)
                .unwrap();
            if wrote == Wrote::Refused {
                refused = true;
                break;
            }
        }
        assert!(refused, "the socket never filled");
        // What is left of the log is forgotten: only the session's
        // ciphertext remains, and the socket still has no room for it.
        out.clear(&log);
        let (_, wrote) = tls
            .write_owed(&mut out, &log, KEY, conn.stream(), now)
            .unwrap();
        assert_eq!(wrote, Wrote::Refused);
        // The client reads everything: the rest goes out, and then it is
        // drained.
        let mut got = 0;
        let mut buf = [0u8; 64 * 1024];
        // Bounded: every pass takes at least one record off the socket.
        for _ in 0..100_000 {
            let (_, wrote) = tls
                .write_owed(&mut out, &log, KEY, conn.stream(), now)
                .unwrap();
            if wrote == Wrote::Drained && got == out.cursor() as usize {
                break;
            }
            client.receive(&mut peer).unwrap();
            while let Ok(n) = client.plaintext(&mut buf) {
                assert!(n > 0 && buf[..n].iter().all(|&b| b == b'z'));
                got += n;
            }
        }
        assert_eq!(
            got as u64,
            out.cursor(),
            "every byte the session took arrived"
        );
    }
}
