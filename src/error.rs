//! Typed errors. Start-up errors end the process with status 2 and one line;
//! once running, the engines log and carry on instead of returning errors.

use std::fmt;
use std::io;
use std::net::SocketAddr;

/// Why a server could not start.
#[derive(Debug)]
pub enum StartError {
    /// Another process already listens on this address.
    AddrInUse(SocketAddr),
    /// Binding failed for another reason (no such local address, permission).
    Bind { addr: SocketAddr, source: io::Error },
    /// Setting up the poll instance, waker or signal handlers failed.
    Setup(io::Error),
    /// A configuration value that flags cannot catch alone.
    Config(String),
    /// The logging thread could not be started.
    Logging(io::Error),
    /// The TLS certificate or key cannot be used (or TLS is not built in).
    Tls(crate::tls::TlsError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::AddrInUse(addr) => {
                write!(f, "cannot listen on {addr}: address already in use")
            }
            StartError::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::Setup(e) => write!(f, "cannot start the server: {e}"),
            StartError::Config(msg) => f.write_str(msg),
            StartError::Logging(e) => write!(f, "cannot start the logging thread: {e}"),
            StartError::Tls(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StartError {}

impl StartError {
    /// Classify a bind failure so "in use" gets its own clear message.
    pub fn from_bind(addr: SocketAddr, source: io::Error) -> Self {
        if source.kind() == io::ErrorKind::AddrInUse {
            StartError::AddrInUse(addr)
        } else {
            StartError::Bind { addr, source }
        }
    }
}
