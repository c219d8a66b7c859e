//! One connection's TLS session, and [`Pipe`], which puts it in front of a
//! socket so that what sits above (the framing, the App) sees plaintext.
//!
//! The rustls pattern is `read_tls` → `process_new_packets` → `reader()` on
//! the way in and `writer()` → `write_tls` on the way out, with
//! `wants_write` deciding whether we need the socket's WRITABLE. Three traps
//! that rustls' own mio example does not show, each handled here:
//! - read until `WouldBlock` on every event (edge-triggered readiness);
//! - drain the plaintext before reading more: rustls refuses to read once
//!   16 KiB of plaintext sit unread ([`Pipe::read`] always drains first);
//! - the writer's `Ok(0)` means "my buffer is full", not "closed": it becomes
//!   `WouldBlock` here, after the ciphertext was offered to the socket.
//!
//! A plain client has no `Session` at all (engines hold an
//! `Option<Box<Session>>`), so it costs nothing extra.

use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

/// Most ciphertext a session keeps waiting for its socket, and most
/// plaintext it buffers before the handshake ends: one full TLS record.
/// (rustls' default is 64 KiB per connection.) What a client is owed beyond
/// this waits in the shared log, where the output limits see it.
const BUFFER_LIMIT: usize = 16 * 1024;

/// Reads of the socket in one [`Pipe::read`] that brought no plaintext
/// (handshake messages, empty records) before it lets the others have a
/// turn: then it answers `Interrupted`, which engines retry or revisit.
const RECEIVES_PER_READ: usize = 16;

/// One TLS session, server or client side.
#[derive(Debug)]
pub struct Session {
    conn: Connection,
}

impl Session {
    /// A server-side session, handshake not yet begun.
    pub(crate) fn new(config: Arc<ServerConfig>) -> Result<Box<Self>, rustls::Error> {
        Ok(Self::boxed(ServerConnection::new(config)?.into()))
    }

    /// A client-side session to `server` (checked against its certificate).
    pub fn client(
        config: Arc<ClientConfig>,
        server: ServerName<'static>,
    ) -> Result<Box<Self>, rustls::Error> {
        Ok(Self::boxed(ClientConnection::new(config, server)?.into()))
    }

    fn boxed(mut conn: Connection) -> Box<Self> {
        conn.set_buffer_limit(Some(BUFFER_LIMIT));
        Box::new(Self { conn })
    }

    /// The handshake has not finished: no plaintext can pass yet.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Ciphertext is waiting for room in the socket.
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Take one read of ciphertext from `src` and process it. `Ok(0)` is the
    /// peer's end of stream. A TLS error is `InvalidData`; the alert that
    /// tells the peer is queued, so [`send`](Self::send) it before closing.
    pub fn receive(&mut self, src: &mut dyn Read) -> io::Result<usize> {
        let n = loop {
            match self.conn.read_tls(src) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        self.conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }

    /// Decrypted bytes into `buf`: `Ok(0)` at the peer's end (its
    /// `close_notify`, or a TCP end of stream without one, which for a line
    /// protocol means the same), `WouldBlock` when none are here yet.
    pub fn plaintext(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            other => other,
        }
    }

    /// Offer plaintext to be encrypted; returns how much was taken (0 when
    /// the session's buffer is full).
    pub fn encrypt(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.conn.writer().write_vectored(bufs)
    }

    /// Send waiting ciphertext to `dst` until none is left (`Ok(true)`) or the
    /// socket is full (`Ok(false)`).
    pub fn send(&mut self, dst: &mut dyn Write) -> io::Result<bool> {
        while self.conn.wants_write() {
            match self.conn.write_tls(dst) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Queue a `close_notify`: the peer learns this end was not cut off.
    /// Nothing more can be written after it; [`send`](Self::send) it.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}

/// A session and its socket as one stream of plaintext, for a non-blocking
/// socket. Reading drains to `WouldBlock` like a socket does; writing
/// encrypts and sends in one go, and `WouldBlock` means the socket is full.
pub struct Pipe<'a, S> {
    pub session: &'a mut Session,
    pub sock: &'a mut S,
}

impl<S: Read + Write> Read for Pipe<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        for _ in 0..RECEIVES_PER_READ {
            // Plaintext first: rustls reads no more while 16 KiB sit unread.
            match self.session.plaintext(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                other => return other,
            }
            let received = self.session.receive(self.sock);
            // Whatever the peer's records asked for (handshake replies, an
            // alert) goes out now; if the socket is full, `wants_write`
            // tells the engine to wait for WRITABLE.
            self.session.send(self.sock)?;
            if received? == 0 {
                // End of stream: what was decrypted before it, then 0.
                return match self.session.plaintext(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
                    other => other,
                };
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }
}

impl<S: Read + Write> Write for Pipe<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    /// Encrypt as much as the session takes, send it, and go on while the
    /// socket keeps up. Returns the plaintext taken; `WouldBlock` if none.
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        // All slices in one call: rustls packs them into shared records.
        let mut taken = self.session.encrypt(bufs)?;
        // Bounded: each pass either sends everything and takes more
        // plaintext (at most `BUFFER_LIMIT` at a time), or stops.
        while self.session.send(self.sock)? && taken < total {
            let (slice, offset) = position(bufs, taken);
            taken += self
                .session
                .encrypt(&[IoSlice::new(&bufs[slice][offset..])])?;
        }
        if taken == 0 && total > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.send(self.sock).map(drop)
    }
}

/// Which slice, and where in it, byte `n` of `bufs` is (`n` < their total).
fn position(bufs: &[IoSlice<'_>], mut n: usize) -> (usize, usize) {
    for (i, b) in bufs.iter().enumerate() {
        if n < b.len() {
            return (i, n);
        }
        n -= b.len();
    }
    (bufs.len() - 1, bufs[bufs.len() - 1].len())
}
