//! A connection to a server as `pollchat connect` and `pollchat bench` see
//! it: one non-blocking mio socket, with or without a TLS session in front.
//!
//! [`Link`] reads and writes plaintext either way, so the loops above it
//! keep one code path. Over TLS it hands the work to
//! [`Pipe`](crate::tls::Pipe), which keeps mio's rules: a read drains the
//! socket to `WouldBlock`, a write encrypts and sends and answers
//! `WouldBlock` when the socket is full. What a loop must add:
//! - ask for WRITABLE while [`Link::wants_write`] (ciphertext waits for
//!   room: handshake messages, the tail of a write, the `close_notify`);
//! - hold its own plaintext back while [`Link::is_handshaking`], so that
//!   its output buffer stays the one bound on what waits to be sent;
//! - end with [`Link::finish`]: `close_notify`, then FIN.
//!
//! A plain link has no session (`None`), so it costs nothing extra; in the
//! lean build the session type has no values and the TLS arms compile away.

use std::io::{self, IoSlice, Read, Write};
use std::net::Shutdown;

use mio::net::TcpStream;

use crate::tls::{Plaintext, Session};

/// The server socket and, over TLS, the session in front of it: one
/// `Read + Write` of plaintext for the client's and the bench's loops.
pub struct Link {
    /// The socket, for mio's registry and socket options. Writing to it
    /// directly would corrupt a TLS stream: go through the `Link`.
    sock: TcpStream,
    /// The TLS session in front of the socket; `None` for plain TCP.
    tls: Option<Box<Session>>,
    /// Our `close_notify` is queued: nothing more may be written.
    closing: bool,
    /// We sent FIN.
    shut: bool,
}

impl Link {
    /// Plain TCP.
    pub fn plain(sock: TcpStream) -> Link {
        Link {
            sock,
            tls: None,
            closing: false,
            shut: false,
        }
    }

    /// TLS over `sock`, the handshake not yet begun: its first message (the
    /// ClientHello) waits, so [`wants_write`](Self::wants_write) is true.
    pub fn tls(sock: TcpStream, session: Box<Session>) -> Link {
        Link {
            sock,
            tls: Some(session),
            closing: false,
            shut: false,
        }
    }

    pub fn sock(&self) -> &TcpStream {
        &self.sock
    }

    /// For registering with mio.
    pub fn sock_mut(&mut self) -> &mut TcpStream {
        &mut self.sock
    }

    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A TLS handshake is still under way: no plaintext passes yet.
    pub fn is_handshaking(&self) -> bool {
        self.tls.as_ref().is_some_and(|s| s.is_handshaking())
    }

    /// Ciphertext waits for room in the socket: keep WRITABLE interest.
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|s| s.wants_write())
    }

    /// End our side once everything queued is sent: a `close_notify` over
    /// TLS (the server learns we were not cut off), then FIN. We can still
    /// read what the server says after it. Call again on WRITABLE until it
    /// answers `Ok(true)`. Not during a handshake (the caller waits).
    pub fn finish(&mut self) -> io::Result<bool> {
        if self.shut {
            return Ok(true);
        }
        if let Some(session) = self.tls.as_mut() {
            if !self.closing {
                session.close();
                self.closing = true;
            }
            if !session.send(&mut self.sock)? {
                return Ok(false); // the socket is full: more on WRITABLE
            }
        }
        // The peer may already be gone; there is nothing left to tell it.
        let _ = self.sock.shutdown(Shutdown::Write);
        self.shut = true;
        Ok(true)
    }
}

impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Plaintext::over(self.tls.as_deref_mut(), &mut self.sock).read(buf)
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Plaintext::over(self.tls.as_deref_mut(), &mut self.sock).write_vectored(bufs)
    }

    /// Send waiting ciphertext (none on plain TCP); what the socket cannot
    /// take yet stays, and [`Link::wants_write`] says so.
    fn flush(&mut self) -> io::Result<()> {
        Plaintext::over(self.tls.as_deref_mut(), &mut self.sock).flush()
    }
}

/// Dropped without [`Link::finish`] (a signal, the bench's end, an error):
/// still say `close_notify` if the session is up, with one non-blocking
/// try. A full socket or a gone peer just loses it.
impl Drop for Link {
    fn drop(&mut self) {
        if let Some(session) = self.tls.as_mut()
            && !self.closing
            && !session.is_handshaking()
        {
            session.close();
            let _ = session.send(&mut self.sock);
        }
    }
}
