//! The browser front (feature `web`, on by default): `--web-port` serves
//! the chat page and, on `/ws`, a WebSocket into the same room as the line
//! clients. Both engines drive it; nothing here owns a socket.
//!
//! - `http.rs`: the request head, read with a cap and parsed by httparse,
//!   and its answer: the page, the upgrade (Origin checked), or a 4xx.
//! - `page.rs` and `page/`: the page itself, compiled in.
//! - `ws.rs`: a WebSocket between the line framing and the connection's
//!   plaintext ([`WebSocket`]): text frames in are lines, lines out are text
//!   frames.
//! - [`Lines`] (here): a connection's lines, whichever it carries them in,
//!   bytes or frames, so the engines read and write without asking.
//! - `lean.rs`: built without the feature, the same names with no values.
//!
//! A connection on the web port goes through three layers at most:
//!
//! ```text
//!   App ⇄ Inbound / OutQueue ⇄ Lines (WebSocket frames) ⇄ Plaintext (TLS) ⇄ socket
//! ```

use std::io::{self, IoSlice, Read, Write};

use crate::tls::Plaintext;

#[cfg(feature = "web")]
mod http;
#[cfg(feature = "web")]
mod page;
#[cfg(feature = "web")]
mod ws;

#[cfg(feature = "web")]
pub use http::{Answer, MAX_HEAD, Progress, RequestHead, accept_key, base64};
#[cfg(feature = "web")]
pub use ws::{MISSED_PINGS, WebSocket};

#[cfg(not(feature = "web"))]
mod lean;
#[cfg(not(feature = "web"))]
pub use lean::{Answer, Front, Progress, RequestHead, WebSocket};

/// This binary serves `--web-port`.
pub const BUILT: bool = cfg!(feature = "web");

/// How often a WebSocket is pinged: browsers cannot ping from a page, and
/// proxies drop connections silent for a minute.
pub const PING_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// Who may open the chat's WebSocket from a browser page, besides a page
/// of this server's own (Origin's host equal to the request's Host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    /// `--web-origin`: exact origins (`https://chat.example.org`), or `*`.
    pub allowed: Vec<String>,
}

/// The web listener's settings: what every connection on it is checked
/// against, and how its WebSocket is sized.
#[cfg(feature = "web")]
#[derive(Debug)]
pub struct Front {
    origins: OriginPolicy,
    max_line: usize,
}

#[cfg(feature = "web")]
impl Front {
    pub fn new(origins: OriginPolicy, max_line: usize) -> Result<Self, NotBuilt> {
        Ok(Self { origins, max_line })
    }

    /// A new connection: its head is to be read.
    pub fn connection(&self) -> Box<Web> {
        Box::new(Web::Head(RequestHead::new()))
    }

    /// Read the head on, and answer it once complete.
    pub fn read_head(&self, head: &mut RequestHead, r: &mut impl Read) -> io::Result<Progress> {
        head.read_from(r, &self.origins)
    }

    /// The 101 was sent: the connection is a WebSocket.
    pub fn upgrade(&self, already_read: Vec<u8>) -> Box<Web> {
        Box::new(Web::Socket(WebSocket::new(already_read, self.max_line)))
    }
}

/// `--web-port` in a build without the `web` feature.
#[derive(Debug)]
pub struct NotBuilt;

impl std::fmt::Display for NotBuilt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("--web-port: built without web support (rebuild with the default features)")
    }
}

impl std::error::Error for NotBuilt {}

/// A web-port connection's own state, boxed beside its socket (so the
/// variants' sizes do not matter: a line client pays one pointer).
#[allow(clippy::large_enum_variant)]
pub enum Web {
    /// Its request head is being read.
    Head(RequestHead),
    /// Upgraded: in the room.
    Socket(WebSocket),
}

impl Web {
    pub fn socket(&mut self) -> Option<&mut WebSocket> {
        match self {
            Web::Socket(ws) => Some(ws),
            Web::Head(_) => None,
        }
    }
}

/// A connection's lines: as bytes for a line client, as WebSocket frames
/// for a browser, over its plaintext either way.
pub enum Lines<'a, S> {
    Bytes(Plaintext<'a, S>),
    Frames(&'a mut WebSocket, Plaintext<'a, S>),
}

impl<'a, S> Lines<'a, S> {
    pub fn over(ws: Option<&'a mut WebSocket>, plaintext: Plaintext<'a, S>) -> Self {
        match ws {
            None => Lines::Bytes(plaintext),
            Some(ws) => Lines::Frames(ws, plaintext),
        }
    }
}

impl<S: Read + Write> Read for Lines<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Lines::Bytes(p) => p.read(buf),
            Lines::Frames(ws, p) => ws.read(p, buf),
        }
    }
}

impl<S: Read + Write> Write for Lines<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Lines::Bytes(p) => p.write(buf),
            Lines::Frames(ws, p) => ws.write(p, &[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Lines::Bytes(p) => p.write_vectored(bufs),
            Lines::Frames(ws, p) => ws.write(p, bufs),
        }
    }

    /// Frames of the WebSocket's own (pong, close) first, then the TLS
    /// session's ciphertext.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Lines::Bytes(p) => p.flush(),
            Lines::Frames(ws, p) => {
                ws.send(p)?;
                p.flush()
            }
        }
    }
}
