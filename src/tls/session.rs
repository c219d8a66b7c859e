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
        // plaintext (at most `BUFFER_LIMIT` at a time), or stops. (Before
        // the handshake ends nothing is sent and the session takes plaintext
        // only up to its limit: then a pass takes nothing, and stops.)
        while self.session.send(self.sock)? && taken < total {
            let (slice, offset) = position(bufs, taken);
            let more = self
                .session
                .encrypt(&[IoSlice::new(&bufs[slice][offset..])])?;
            if more == 0 {
                break;
            }
            taken += more;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    use rustls::RootCertStore;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

    /// One direction of a non-blocking socket in memory: reads take what
    /// the other side wrote (`WouldBlock` when empty); writes take at most
    /// `room` bytes at a time until the reader catches up.
    #[derive(Default)]
    struct Wire {
        bytes: VecDeque<u8>,
    }

    /// Our end of a connection: read from `inbound`, write to `outbound`,
    /// which holds at most `room` bytes.
    struct End<'a> {
        inbound: &'a mut Wire,
        outbound: &'a mut Wire,
        room: usize,
    }

    impl Read for End<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.inbound.bytes.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.inbound.bytes.len());
            for (slot, byte) in buf.iter_mut().zip(self.inbound.bytes.drain(..n)) {
                *slot = byte;
            }
            Ok(n)
        }
    }

    impl Write for End<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let free = self.room.saturating_sub(self.outbound.bytes.len());
            if free == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(free);
            self.outbound.bytes.extend(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A server session and a client session that trusts it.
    fn pair() -> (Box<Session>, Box<Session>) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(made.signing_key.serialize_der()));
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![CertificateDer::from(made.cert.der().to_vec())], key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(made.cert.der().clone()).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let name = ServerName::try_from("localhost").unwrap();
        (
            Session::new(Arc::new(server)).unwrap(),
            Session::client(Arc::new(client), name).unwrap(),
        )
    }

    /// Move bytes both ways until both handshakes are done (bounded).
    fn handshake(server: &mut Session, client: &mut Session, up: &mut Wire, down: &mut Wire) {
        for _ in 0..20 {
            if !server.is_handshaking() && !client.is_handshaking() {
                return;
            }
            let mut c = End {
                inbound: down,
                outbound: up,
                room: usize::MAX,
            };
            client.send(&mut c).unwrap();
            let _ = client.receive(&mut c);
            let mut s = End {
                inbound: up,
                outbound: down,
                room: usize::MAX,
            };
            let _ = server.receive(&mut s);
            server.send(&mut s).unwrap();
        }
        panic!("the handshake did not finish");
    }

    /// 100 KiB of plaintext from the client arrive whole through the
    /// server's `Pipe`, however far they got ahead: the pipe drains
    /// plaintext before each `read_tls` (rustls refuses to read once 16 KiB
    /// sit unread), and ends at `WouldBlock` like a socket.
    #[test]
    fn a_pipe_reads_more_than_rustls_buffers() {
        let (mut server, mut client) = pair();
        let (mut up, mut down) = (Wire::default(), Wire::default());
        handshake(&mut server, &mut client, &mut up, &mut down);
        let sent: Vec<u8> = (0..100 * 1024).map(|i| (i % 251) as u8).collect();
        let mut c = End {
            inbound: &mut down,
            outbound: &mut up,
            room: usize::MAX,
        };
        Pipe {
            session: &mut client,
            sock: &mut c,
        }
        .write_all(&sent)
        .unwrap();

        let mut s = End {
            inbound: &mut up,
            outbound: &mut down,
            room: usize::MAX,
        };
        let mut pipe = Pipe {
            session: &mut server,
            sock: &mut s,
        };
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..1000 {
            match pipe.read(&mut buf) {
                Ok(0) => panic!("end of stream"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent);
    }

    /// A socket with room for 1,000 bytes at a time: the pipe takes only
    /// what the session can buffer (`BUFFER_LIMIT`), reports `WouldBlock`
    /// once both are full, and takes more as the socket drains; nothing is
    /// lost or reordered on the way.
    #[test]
    fn a_pipe_write_stops_at_a_full_socket_and_resumes() {
        let (mut server, mut client) = pair();
        let (mut up, mut down) = (Wire::default(), Wire::default());
        handshake(&mut server, &mut client, &mut up, &mut down);
        let sent: Vec<u8> = (0..200 * 1024).map(|i| (i % 253) as u8).collect();
        let mut taken = 0;
        let mut got = Vec::new();
        let mut buf = [0u8; 64 * 1024];
        for _ in 0..10_000 {
            if taken == sent.len() && !server.wants_write() && got.len() == sent.len() {
                break;
            }
            let mut s = End {
                inbound: &mut up,
                outbound: &mut down,
                room: 1000,
            };
            let mut pipe = Pipe {
                session: &mut server,
                sock: &mut s,
            };
            if taken < sent.len() {
                match pipe.write(&sent[taken..]) {
                    Ok(n) => {
                        assert!(n <= BUFFER_LIMIT + 1000, "took {n} bytes at once");
                        taken += n;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            } else {
                pipe.flush().unwrap();
            }
            let mut c = End {
                inbound: &mut down,
                outbound: &mut up,
                room: usize::MAX,
            };
            let mut reader = Pipe {
                session: &mut client,
                sock: &mut c,
            };
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got.len(), sent.len());
        assert!(got == sent);
    }

    /// Before the handshake ends nothing can be sent, and the session takes
    /// plaintext only up to its limit: a write of more returns what was
    /// taken (it used to loop forever, the session taking 0 each pass).
    #[test]
    fn a_write_before_the_handshake_stops_at_the_limit() {
        let (_server, mut client) = pair();
        let (mut up, mut down) = (Wire::default(), Wire::default());
        let mut c = End {
            inbound: &mut down,
            outbound: &mut up,
            room: usize::MAX,
        };
        let early = vec![b'x'; 3 * BUFFER_LIMIT];
        let taken = Pipe {
            session: &mut client,
            sock: &mut c,
        }
        .write(&early)
        .unwrap();
        assert!(taken > 0 && taken <= BUFFER_LIMIT, "took {taken}");
    }

    /// `close` sends `close_notify`: the peer reads a clean end (0), not an
    /// error.
    #[test]
    fn close_is_a_clean_end_for_the_peer() {
        let (mut server, mut client) = pair();
        let (mut up, mut down) = (Wire::default(), Wire::default());
        handshake(&mut server, &mut client, &mut up, &mut down);
        server.close();
        let mut s = End {
            inbound: &mut up,
            outbound: &mut down,
            room: usize::MAX,
        };
        assert!(server.send(&mut s).unwrap());
        let mut c = End {
            inbound: &mut down,
            outbound: &mut up,
            room: usize::MAX,
        };
        let mut buf = [0u8; 16];
        let n = Pipe {
            session: &mut client,
            sock: &mut c,
        }
        .read(&mut buf)
        .unwrap();
        assert_eq!(n, 0);
    }
}
