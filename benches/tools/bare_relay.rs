//! A bare mio relay with no features, the baseline pollchat's performance
//! targets are set against (`benches/compare.sh`): whatever one client sends
//! is copied, as read, to every other client. No framing, no names, no
//! limits, no flood control; output a socket won't take yet is buffered
//! without bound. Not for use as a server.
//!
//! Run: `cargo run --release --example bare_relay -- PORT` (127.0.0.1 only).

use std::io::{self, Read, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);

struct Peer {
    stream: TcpStream,
    /// Bytes the socket has not taken yet.
    out: Vec<u8>,
}

fn main() -> io::Result<()> {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: bare_relay PORT");
            std::process::exit(2);
        }
    };
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("bare relay listening on 127.0.0.1:{port}");

    let mut peers: Slab<Peer> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                while let Ok((mut stream, _)) = listener.accept() {
                    let _ = stream.set_nodelay(true);
                    let entry = peers.vacant_entry();
                    poll.registry().register(
                        &mut stream,
                        Token(entry.key()),
                        Interest::READABLE | Interest::WRITABLE,
                    )?;
                    entry.insert(Peer {
                        stream,
                        out: Vec::new(),
                    });
                }
                continue;
            }
            let from = event.token().0;
            if event.is_writable()
                && let Some(peer) = peers.get_mut(from)
            {
                write_out(peer);
            }
            if !event.is_readable() {
                continue;
            }
            // Read until WouldBlock, copying each chunk to everyone else.
            let mut gone = false;
            while let Some(peer) = peers.get_mut(from) {
                match peer.stream.read(&mut buf) {
                    Ok(0) => {
                        gone = true;
                        break;
                    }
                    Ok(n) => {
                        for (key, other) in peers.iter_mut() {
                            if key != from {
                                other.out.extend_from_slice(&buf[..n]);
                                write_out(other);
                            }
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        gone = true;
                        break;
                    }
                }
            }
            if gone && peers.contains(from) {
                let mut peer = peers.remove(from);
                let _ = poll.registry().deregister(&mut peer.stream);
            }
        }
    }
}

/// Write what the socket takes now; keep the rest for its WRITABLE event.
fn write_out(peer: &mut Peer) {
    let mut written = 0;
    while written < peer.out.len() {
        match peer.stream.write(&peer.out[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    peer.out.drain(..written);
}
