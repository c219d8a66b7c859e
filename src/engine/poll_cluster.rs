//! The poll engine's side of `--cluster`: the link's two sockets live in
//! the same `Poll` as the clients, under the same rules. Everything the
//! link decides (when to connect, what to send, what a reply means) is in
//! the sans-IO `cluster::link`; this file only moves its bytes.
//!
//! - connect is non-blocking: the first WRITABLE (or an error) says how it
//!   went, read with `take_error()` and `peer_addr()`;
//! - read until `WouldBlock`, retrying `Interrupted`;
//! - write what the link has at the end of the tick, and want WRITABLE only
//!   while some of it is left;
//! - when the link says its attempt is over (`Link::session` changed), the
//!   sockets are dropped and, for a new attempt, opened again.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;
use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

use crate::cluster::link::{Conn, Link, LinkSettings};
use crate::error::StartError;

/// The link's tokens, beside the listeners' (see `poll.rs`).
pub(super) const CMD: Token = Token(usize::MAX - 6);
pub(super) const READER: Token = Token(usize::MAX - 7);

/// What `--cluster` resolved to.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Redis, resolved once at start-up (std's resolver blocks).
    pub addr: SocketAddr,
    pub link: LinkSettings,
    /// `--cluster-required`: start-up fails unless Redis answers.
    pub required: bool,
}

/// One of the two connections.
struct Socket {
    stream: TcpStream,
    connected: bool,
    /// The interest it is registered with, so it is changed only when needed.
    writable: bool,
}

/// The link and its sockets.
pub(super) struct ClusterIo {
    pub link: Link,
    addr: SocketAddr,
    /// The link attempt the sockets belong to.
    session: Option<u32>,
    sockets: [Option<Socket>; 2],
}

impl ClusterIo {
    pub fn new(config: &ClusterConfig, now: Instant) -> Result<ClusterIo, StartError> {
        if config.required {
            probe(config.addr, &config.link).map_err(|e| {
                StartError::Config(format!(
                    "--cluster-required: Redis at {} does not answer: {e}",
                    config.addr
                ))
            })?;
        }
        Ok(ClusterIo {
            link: Link::new(config.link.clone(), crate::cluster::random_seed(), now),
            addr: config.addr,
            session: None,
            sockets: [None, None],
        })
    }

    /// Give the link its timers, then make the sockets match what it wants.
    pub fn step(&mut self, registry: &Registry, now: Instant) {
        if self.link.poll_timeout().is_some_and(|at| at <= now) {
            self.link.handle_timeout(now);
        }
        // A connect that fails at once fails the attempt: at most two rounds.
        for _ in 0..2 {
            let wanted = self.link.session();
            if wanted == self.session {
                return;
            }
            for socket in self.sockets.iter_mut() {
                if let Some(mut old) = socket.take() {
                    let _ = registry.deregister(&mut old.stream);
                }
            }
            self.session = wanted;
            if wanted.is_some() {
                self.open(registry, now);
            }
        }
    }

    fn open(&mut self, registry: &Registry, now: Instant) {
        for (conn, token) in [(Conn::Cmd, CMD), (Conn::Reader, READER)] {
            let opened = TcpStream::connect(self.addr).and_then(|mut stream| {
                // Each command is a small write that must go at once:
                // Nagle would hold one back until the last is acknowledged.
                stream.set_nodelay(true)?;
                registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match opened {
                Ok(stream) => {
                    self.sockets[conn as usize] = Some(Socket {
                        stream,
                        connected: false,
                        writable: true,
                    })
                }
                Err(e) => {
                    self.link.handle_closed(conn, now, &e.to_string());
                    return;
                }
            }
        }
    }

    /// A link socket is ready: finish its connect, and read what it has.
    pub fn ready(&mut self, token: Token, scratch: &mut [u8], now: Instant) {
        let conn = if token == CMD {
            Conn::Cmd
        } else {
            Conn::Reader
        };
        let session = self.session;
        let Some(socket) = self.sockets[conn as usize].as_mut() else {
            return; // a stale event for sockets already dropped
        };
        if !socket.connected {
            match socket.stream.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.link.handle_closed(conn, now, &e.to_string());
                    return;
                }
                Ok(None) => {}
            }
            match socket.stream.peer_addr() {
                Ok(_) => {
                    socket.connected = true;
                    self.link.handle_connected(conn, now);
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.link.handle_closed(conn, now, &e.to_string());
                    return;
                }
            }
        }
        loop {
            let Some(socket) = self.sockets[conn as usize].as_mut() else {
                return;
            };
            match socket.stream.read(scratch) {
                Ok(0) => {
                    self.link
                        .handle_closed(conn, now, "Redis closed the connection");
                    return;
                }
                Ok(n) => {
                    self.link.handle_read(conn, &scratch[..n], now);
                    if self.link.session() != session {
                        return; // the reply failed the link
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.link.handle_closed(conn, now, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Bytes for Redis not written yet (shutdown waits for them).
    pub fn owes_bytes(&self) -> bool {
        [Conn::Cmd, Conn::Reader].iter().any(|&c| {
            self.sockets[c as usize]
                .as_ref()
                .is_some_and(|s| s.connected)
                && !self.link.transmit(c).is_empty()
        })
    }

    /// End of the tick: write what the link has for each connected socket,
    /// and want WRITABLE only while some is left (or the connect is on).
    pub fn flush(&mut self, registry: &Registry, now: Instant) {
        for (conn, token) in [(Conn::Cmd, CMD), (Conn::Reader, READER)] {
            let Some(socket) = self.sockets[conn as usize].as_mut() else {
                continue;
            };
            if socket.connected {
                loop {
                    let bytes = self.link.transmit(conn);
                    if bytes.is_empty() {
                        break;
                    }
                    match socket.stream.write(bytes) {
                        Ok(n) => self.link.handle_written(conn, n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            self.link.handle_closed(conn, now, &e.to_string());
                            break;
                        }
                    }
                }
            }
            let Some(socket) = self.sockets[conn as usize].as_mut() else {
                continue;
            };
            let writable = !socket.connected || !self.link.transmit(conn).is_empty();
            if writable != socket.writable {
                let interest = if writable {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                if let Err(e) = registry.reregister(&mut socket.stream, token, interest) {
                    self.link.handle_closed(conn, now, &e.to_string());
                    continue;
                }
                socket.writable = writable;
            }
        }
    }
}

/// `--cluster-required`: one blocking PING at start-up (AUTH first if a
/// password is set), within 2 s.
fn probe(addr: SocketAddr, settings: &LinkSettings) -> Result<(), String> {
    const WITHIN: Duration = Duration::from_secs(2);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, WITHIN).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(WITHIN))
        .map_err(|e| e.to_string())?;
    let mut request = Vec::new();
    let mut replies = 1;
    if let Some(pass) = &settings.password {
        let mut auth = vec!["AUTH"];
        auth.extend(settings.user.as_deref());
        auth.push(pass);
        crate::cluster::resp::encode(&auth, &mut request);
        replies += 1;
    }
    crate::cluster::resp::encode(&["PING"], &mut request);
    stream.write_all(&request).map_err(|e| e.to_string())?;
    let mut input = Vec::new();
    let mut chunk = [0; 512];
    while replies > 0 {
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("it closed the connection".into());
        }
        input.extend_from_slice(&chunk[..n]);
        if input.len() > 64 * 1024 {
            return Err("it answered PING with over 64 KiB".into());
        }
        while let Some((frame, used)) =
            crate::cluster::resp::decode(&input).map_err(|e| e.to_string())?
        {
            input.drain(..used);
            if let crate::cluster::resp::Frame::Error(e) = frame {
                return Err(format!("it answered {e}"));
            }
            replies -= 1;
        }
    }
    info!("cluster: Redis at {addr} answers");
    Ok(())
}
