//! TLS for the line protocol (feature `tls`, on by default): rustls with
//! the ring provider, driven by hand so that both engines keep their own
//! I/O rules.
//!
//! - `server.rs`: the certificate and key, loaded from PEM files and
//!   reloaded on SIGHUP ([`Acceptor`]).
//! - `session.rs`: one client's TLS session, a box in front of its byte
//!   stream ([`Session`]), and [`Pipe`], which joins a session to its socket
//!   as one `Read + Write` of plaintext.
//! - `client.rs`: the client side for `pollchat connect --tls` and
//!   `pollchat bench --tls` (system roots, `--ca`, `--insecure`).
//!
//! - `lean.rs`: built without the feature (`--no-default-features`, the lean
//!   server), the same names with no values: asking for TLS is a start-up
//!   error, and the engines need no `#[cfg]`.

use std::fmt;
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
