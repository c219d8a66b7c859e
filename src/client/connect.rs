//! Opening the connection, before the event loop starts: look the name up,
//! try each address it has until one answers, all within [`CONNECT_TIMEOUT`].
//!
//! This part blocks on purpose. There is nothing else to do until we are
//! connected, and `std`'s `connect_timeout` says plainly what happens; the
//! socket is made non-blocking and handed to mio afterwards.

use std::fmt;
use std::io;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::address::ServerAddress;

/// How long we wait for the server to accept, across all its addresses.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why we could not connect. Displayed as
/// `Unable to connect to HOST:PORT: reason`.
#[derive(Debug)]
pub struct ConnectError {
    /// The address as the user gave it, for the message.
    pub address: ServerAddress,
    pub reason: ConnectFailure,
}

/// The reason part of a [`ConnectError`].
#[derive(Debug)]
pub enum ConnectFailure {
    /// The name lookup failed (no such host, no resolver).
    Resolve(io::Error),
    /// The name resolved to no address at all.
    NoAddress,
    /// Nothing listens on that port.
    Refused,
    /// No answer within [`CONNECT_TIMEOUT`].
    TimedOut,
    Other(io::Error),
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unable to connect to {}: ", self.address)?;
        match &self.reason {
            ConnectFailure::Resolve(e) => write!(f, "cannot resolve the name ({e})"),
            ConnectFailure::NoAddress => f.write_str("the name has no address"),
            ConnectFailure::Refused => f.write_str("connection refused"),
            ConnectFailure::TimedOut => {
                write!(f, "no answer within {} s", CONNECT_TIMEOUT.as_secs())
            }
            ConnectFailure::Other(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// Resolve `address` and connect to the first of its addresses that accepts.
/// The error names the last failure.
pub fn connect(address: &ServerAddress) -> Result<TcpStream, ConnectError> {
    let fail = |reason| ConnectError {
        address: address.clone(),
        reason,
    };
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let candidates = (address.host.as_str(), address.port)
        .to_socket_addrs()
        .map_err(|e| fail(ConnectFailure::Resolve(e)))?;
    let mut last = ConnectFailure::NoAddress;
    for addr in candidates {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            last = ConnectFailure::TimedOut;
            break;
        }
        match TcpStream::connect_timeout(&addr, left) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = classify(e),
        }
    }
    Err(fail(last))
}

fn classify(e: io::Error) -> ConnectFailure {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ConnectFailure::TimedOut,
        _ => ConnectFailure::Other(e),
    }
}
