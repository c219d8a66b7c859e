//! TLS for the line protocol (feature `tls`, on by default): rustls with
//! the ring provider, driven by hand so that both engines keep their own
//! I/O rules.
//!
//! - `server.rs`: the certificate and key, loaded from PEM files and
//!   reloaded on SIGHUP ([`Acceptor`]).
//! - `session.rs`: one client's TLS session, a box in front of its byte
//!   stream ([`Session`]), and [`Pipe`], which joins a session to its socket
//!   as one `Read + Write` of plaintext.
//! - [`Plaintext`] (here): a connection's plaintext whichever it is, the
//!   socket itself or a `Pipe`, so callers need not ask.
//! - `client.rs`: the client side for `pollchat connect --tls` and
//!   `pollchat bench --tls` (system roots, `--ca`, `--insecure`).
//!
//! - `lean.rs`: built without the feature (`--no-default-features`, the lean
//!   server), the same names with no values: asking for TLS is a start-up
//!   error, and the engines need no `#[cfg]`.

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::path::PathBuf;

#[cfg(feature = "tls")]
mod client;
#[cfg(feature = "tls")]
mod server;
#[cfg(feature = "tls")]
mod session;

#[cfg(feature = "tls")]
pub use client::{ClientTls, Verify};
#[cfg(feature = "tls")]
pub use server::Acceptor;
#[cfg(feature = "tls")]
pub use session::{Pipe, Session};

#[cfg(not(feature = "tls"))]
mod lean;
#[cfg(not(feature = "tls"))]
pub use lean::{Acceptor, Pipe, Session};

/// Why a certificate, key or CA file could not be used. Each names the file,
/// so start-up can print one line that says what to fix.
#[derive(Debug)]
pub enum TlsError {
    /// The file could not be read (missing, unreadable).
    Read { path: PathBuf, reason: String },
    /// The file was read but holds no PEM block of the kind wanted.
    NoPem { path: PathBuf, wanted: &'static str },
    /// The PEM was there but is damaged.
    BadPem { path: PathBuf, reason: String },
    /// rustls refused the pair: a key that does not match the certificate,
    /// or one it cannot use.
    Rejected { path: PathBuf, reason: String },
    /// This binary was built without the `tls` feature.
    NotBuilt,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, reason } => {
                write!(f, "cannot read {}: {reason}", path.display())
            }
            TlsError::NoPem { path, wanted } => {
                write!(
                    f,
                    "{}: no {wanted} found (expected a PEM file)",
                    path.display()
                )
            }
            TlsError::BadPem { path, reason } => {
                write!(f, "{}: damaged PEM: {reason}", path.display())
            }
            TlsError::Rejected { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::NotBuilt => f.write_str(
                "--tls-port: built without TLS support (rebuild with the default features)",
            ),
        }
    }
}

impl std::error::Error for TlsError {}

/// A connection's plaintext: the socket itself for a plain client, or the
/// socket behind its TLS session ([`Pipe`]). The engines and `pollchat
/// connect` read and write through this, never asking which.
pub enum Plaintext<'a, S> {
    Plain(&'a mut S),
    Tls(Pipe<'a, S>),
}

impl<'a, S> Plaintext<'a, S> {
    pub fn over(tls: Option<&'a mut Session>, sock: &'a mut S) -> Self {
        match tls {
            None => Plaintext::Plain(sock),
            Some(session) => Plaintext::Tls(Pipe { session, sock }),
        }
    }
}

impl<S: Read + Write> Read for Plaintext<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Plaintext::Plain(sock) => sock.read(buf),
            Plaintext::Tls(pipe) => pipe.read(buf),
        }
    }
}

impl<S: Read + Write> Write for Plaintext<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Plaintext::Plain(sock) => sock.write(buf),
            Plaintext::Tls(pipe) => pipe.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Plaintext::Plain(sock) => sock.write_vectored(bufs),
            Plaintext::Tls(pipe) => pipe.write_vectored(bufs),
        }
    }

    /// For TLS: send the ciphertext waiting in the session (what the socket
    /// cannot take yet stays there).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Plaintext::Plain(sock) => sock.flush(),
            Plaintext::Tls(pipe) => pipe.flush(),
        }
    }
}
