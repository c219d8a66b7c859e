//! `pollchat bench --ws`: one bench connection as a WebSocket client, over
//! the connection's plaintext (the socket, or the TLS session in front of
//! it under `wss://`).
//!
//! Two stages, both driven by the swarm's mio loop:
//! 1. **Upgrading.** The request head goes out once TCP (and TLS) are up;
//!    the swarm hands every byte read to [`WsConn::receive_head`] until the
//!    server's `101 Switching Protocols` is complete and its
//!    `Sec-WebSocket-Accept` matches our key (derived as the server derives
//!    it, [`accept_key`]). This is part of connecting:
//!    it never shows up in fan-out latency.
//! 2. **Open.** Frames by hand (`ws_frames.rs`, which says why not
//!    tungstenite here): each text message in is one line; each line out
//!    is one masked text frame, without its `\n`.
//!
//! The rules of the loop (see `shared/guide/transports.md`): drain `read()`
//! to `WouldBlock`, and flush after every read batch, so that the pong
//! owed for a server's ping goes out.

use std::hash::{BuildHasher, Hasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::BenchError;
use super::swarm::WsPlan;
use super::ws_frames::{ClientFrames, Ended};
use crate::web::accept_key;

/// Longest response head accepted: a 101 is a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// Headers parsed at most.
const MAX_HEADERS: usize = 32;

/// One connection's WebSocket, from the request to the close.
pub struct WsConn {
    state: State,
}

enum State {
    /// The request is going out (`request[sent..]` is left), and the
    /// response head is coming in.
    Upgrading {
        upgrade: Upgrade,
        request: Vec<u8>,
        sent: usize,
    },
    Open(ClientFrames),
}

/// What came of reading an open WebSocket until the socket was drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    /// Payload bytes read, plus one per message (an empty line is data too).
    pub bytes: usize,
    /// The server closed it (a close frame, EOF, a reset, a protocol error).
    pub closed: bool,
}

impl WsConn {
    /// Start the upgrade: the request head waits to be sent.
    pub fn start(plan: &WsPlan) -> Result<Box<WsConn>, BenchError> {
        let upgrade = Upgrade::new(new_key());
        let request = upgrade.request(&plan.host, &plan.path);
        Ok(Box::new(WsConn {
            state: State::Upgrading {
                upgrade,
                request,
                sent: 0,
            },
        }))
    }

    /// The server's 101 has not arrived yet: our lines must wait.
    pub fn is_upgrading(&self) -> bool {
        matches!(self.state, State::Upgrading { .. })
    }

    /// Bytes wait for room in the socket (the request, or frames).
    pub fn wants_flush(&self) -> bool {
        match &self.state {
            State::Upgrading { request, sent, .. } => *sent < request.len(),
            State::Open(frames) => frames.wants_flush(),
        }
    }

    /// Send what waits: the rest of the request, or tungstenite's queued
    /// frames. `Ok(true)` when all is out, `Ok(false)` when the socket is
    /// full (the next WRITABLE edge calls again); `Err` ends the connection.
    pub fn flush(&mut self, link: &mut impl io::Write) -> io::Result<bool> {
        match &mut self.state {
            State::Upgrading { request, sent, .. } => {
                while *sent < request.len() {
                    match link.write(&request[*sent..]) {
                        Ok(0) => return Ok(false),
                        Ok(n) => *sent += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                        Err(e) => return Err(e),
                    }
                }
                Ok(true)
            }
            State::Open(frames) => frames.flush(link),
        }
    }

    /// Bytes read while upgrading. Once the head is complete and right, the
    /// WebSocket is open, and whatever followed the head is its first data.
    /// `Err` is the reason the handshake failed, in words.
    pub fn receive_head(&mut self, bytes: &[u8]) -> Result<(), String> {
        let State::Upgrading { upgrade, .. } = &mut self.state else {
            return Ok(());
        };
        let Some(tail) = upgrade.receive(bytes).map_err(|e| e.to_string())? else {
            return Ok(());
        };
        let seed = u32::from_le_bytes(new_key()[..4].try_into().unwrap_or_default());
        self.state = State::Open(ClientFrames::new(tail, seed));
        Ok(())
    }

    /// Queue `line` as one text message and write it out. `Ok(true)`: it
    /// went out; `Ok(false)`: it is taken but the socket is full, so send
    /// no more until [`flush`](Self::flush) says all is out. Only when open.
    pub fn send_line(&mut self, link: &mut impl io::Write, line: &[u8]) -> io::Result<bool> {
        let State::Open(frames) = &mut self.state else {
            return Ok(false);
        };
        frames.queue_text(line);
        frames.flush(link)
    }

    /// Read messages until the socket is drained, each text message to
    /// `on_line`, then flush (pongs, the answer to a close). Only when open.
    pub fn read_lines<S: io::Read + io::Write>(
        &mut self,
        link: &mut S,
        scratch: &mut [u8],
        mut on_line: impl FnMut(&[u8]),
    ) -> Batch {
        let mut batch = Batch {
            bytes: 0,
            closed: false,
        };
        let State::Open(frames) = &mut self.state else {
            return batch;
        };
        let read = frames.read(link, scratch, |message| {
            batch.bytes += message.len() + 1;
            on_line(message);
        });
        // The pongs owed, or (after a close) one try at the answer.
        let flushed = frames.flush(link);
        batch.closed = !matches!(read, Ok(Ended::No)) || flushed.is_err();
        batch
    }
}

/// The client's half of the HTTP upgrade, sans-IO: the request to send,
/// and the response head as it arrives.
#[derive(Debug)]
pub struct Upgrade {
    /// `Sec-WebSocket-Key`: base64 of 16 random bytes.
    key: String,
    /// The response so far (the head, and possibly what followed it).
    head: Vec<u8>,
}

/// Why the server's answer to the upgrade is not a WebSocket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadError {
    /// No complete head within [`MAX_HEAD`] bytes.
    TooLarge,
    /// Not an HTTP response at all (a line chat port's greeting, say).
    NotHttp(String),
    /// A status other than 101 (the path is wrong, the Origin refused...).
    Status { code: u16, reason: String },
    /// A 101 whose `Sec-WebSocket-Accept` is missing or not for our key.
    BadAccept,
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebSocket handshake failed: ")?;
        match self {
            HeadError::TooLarge => write!(f, "the response head is over {MAX_HEAD} bytes"),
            HeadError::NotHttp(e) => write!(
                f,
                "the reply is not HTTP (is this the server's web port?): {e}"
            ),
            HeadError::Status { code, reason } => write!(
                f,
                "the server answered {code} {reason}, not 101 (is the URL's path its WebSocket?)"
            ),
            HeadError::BadAccept => {
                f.write_str("the 101's Sec-WebSocket-Accept is missing or not for our key")
            }
        }
    }
}

impl Upgrade {
    /// An upgrade with this key (16 bytes, sent as base64).
    pub fn new(key: [u8; 16]) -> Upgrade {
        Upgrade {
            key: crate::web::base64(&key),
            head: Vec::new(),
        }
    }

    /// The request head. `host` is the URL's `host:port`. No Origin: a
    /// browser's Origin is what a server checks, and this is no browser.
    pub fn request(&self, host: &str, path: &str) -> Vec<u8> {
        format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            self.key
        )
        .into_bytes()
    }

    /// More of the response. `Ok(None)`: the head is not complete yet;
    /// `Ok(Some(tail))`: a good 101, and `tail` is what followed its head
    /// (the first WebSocket bytes, often empty).
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, HeadError> {
        self.head.extend_from_slice(bytes);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(&self.head) {
            Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
            Ok(httparse::Status::Partial) if self.head.len() < MAX_HEAD => return Ok(None),
            Ok(_) | Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(e) => return Err(HeadError::NotHttp(e.to_string())),
        };
        if response.code != Some(101) {
            return Err(HeadError::Status {
                code: response.code.unwrap_or(0),
                reason: response.reason.unwrap_or("").to_string(),
            });
        }
        let want = accept_key(&self.key);
        let accept = response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
        if accept.is_none_or(|h| h.value.trim_ascii() != want.as_bytes()) {
            return Err(HeadError::BadAccept);
        }
        Ok(Some(self.head.split_off(len)))
    }
}

/// 16 bytes no two connections share. Unpredictable enough for a key whose
/// only job is to show that the server read this request (RFC 6455, 4.1):
/// std's `RandomState` is seeded randomly per thread, and a counter and the
/// clock tell connections apart. No `rand` crate for this.
fn new_key() -> [u8; 16] {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let count = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = std::collections::hash_map::RandomState::new();
    let mut key = [0u8; 16];
    for (half, out) in key.chunks_exact_mut(8).enumerate() {
        let mut h = seed.build_hasher();
        h.write_u64(count);
        h.write_u128(nanos);
        h.write_usize(half);
        out.copy_from_slice(&h.finish().to_le_bytes());
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455's example: this key, base64 of "the sample nonce".
    const NONCE: &[u8; 16] = b"the sample nonce";

    fn response(accept: &str, extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n{extra}"
        )
        .into_bytes()
    }

    #[test]
    fn key_is_base64_of_16_bytes() {
        use crate::web::base64;
        assert_eq!(base64(NONCE), "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_ne!(new_key(), new_key());
    }

    #[test]
    fn request_head_is_a_plain_upgrade() {
        let req = Upgrade::new(*NONCE).request("127.0.0.1:8080", "/ws");
        let text = String::from_utf8(req).unwrap();
        assert_eq!(
            text,
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n"
        );
        assert!(!text.to_ascii_lowercase().contains("origin"));
    }

    /// The RFC's accept value for its key, split across reads.
    #[test]
    fn good_101_in_pieces() {
        let mut up = Upgrade::new(*NONCE);
        let resp = response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "");
        let (a, b) = resp.split_at(20);
        assert_eq!(up.receive(a), Ok(None));
        assert_eq!(up.receive(b), Ok(Some(Vec::new())));
    }

    #[test]
    fn wrong_or_missing_accept_key_is_refused() {
        let mut up = Upgrade::new(*NONCE);
        let wrong = response("dGhlIHNhbXBsZSBub25jZQ==", "");
        assert_eq!(up.receive(&wrong), Err(HeadError::BadAccept));
        let mut up = Upgrade::new(*NONCE);
        let missing = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        assert_eq!(up.receive(missing), Err(HeadError::BadAccept));
    }

    #[test]
    fn other_status_is_refused_with_its_reason() {
        let mut up = Upgrade::new(*NONCE);
        let e = up
            .receive(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
            .unwrap_err();
        assert_eq!(
            e,
            HeadError::Status {
                code: 403,
                reason: "Forbidden".into()
            }
        );
        assert!(e.to_string().contains("403 Forbidden"), "{e}");
    }

    #[test]
    fn oversized_head_is_refused() {
        let mut up = Upgrade::new(*NONCE);
        assert_eq!(up.receive(b"HTTP/1.1 101 OK\r\n"), Ok(None));
        let filler = format!("X-Filler: {}\r\n", "a".repeat(1000));
        let mut result = Ok(None);
        for _ in 0..9 {
            result = up.receive(filler.as_bytes());
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(HeadError::TooLarge));
    }

    #[test]
    fn not_http_is_named() {
        let mut up = Upgrade::new(*NONCE);
        let e = up.receive(b"Welcome to pollchat!\n").unwrap_err();
        assert!(matches!(e, HeadError::NotHttp(_)), "{e:?}");
    }

    /// A server may send its first frame in the same segment as the 101:
    /// those bytes are the WebSocket's, not lost, and read as a message.
    #[test]
    fn bytes_after_the_head_are_kept() {
        // An unmasked text frame "hi" (server to client).
        let frame = [0x81, 0x02, b'h', b'i'];
        let mut resp = response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", "");
        resp.extend_from_slice(&frame);
        let mut up = Upgrade::new(*NONCE);
        assert_eq!(up.receive(&resp), Ok(Some(frame.to_vec())));

        let mut ws = WsConn {
            state: State::Upgrading {
                upgrade: Upgrade::new(*NONCE),
                request: Vec::new(),
                sent: 0,
            },
        };
        ws.receive_head(&resp).unwrap();
        assert!(!ws.is_upgrading());
        let mut lines = Vec::new();
        let batch = ws.read_lines(&mut Drained, &mut [0u8; 4096], |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"hi".to_vec()]);
        assert_eq!(
            batch,
            Batch {
                bytes: 3,
                closed: false
            }
        );
    }

    /// An open WebSocket over `sock`, as after a 101 with nothing after it.
    fn open() -> WsConn {
        let mut ws = WsConn {
            state: State::Upgrading {
                upgrade: Upgrade::new(*NONCE),
                request: Vec::new(),
                sent: 0,
            },
        };
        ws.receive_head(&response("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", ""))
            .unwrap();
        ws
    }

    /// A server's ping is answered within the same read batch: the pong
    /// (masked, as a client's frames are) is written before read_lines
    /// returns, though nothing else was sent.
    #[test]
    fn a_ping_is_answered_by_the_read_batch() {
        let mut ws = open();
        let mut sock = Scripted {
            input: vec![0x89, 0x02, b'h', b'b'],
            room: usize::MAX,
            written: Vec::new(),
        };
        let batch = ws.read_lines(&mut sock, &mut [0u8; 4096], |_| panic!("a ping is no line"));
        assert_eq!(
            batch,
            Batch {
                bytes: 0,
                closed: false
            }
        );
        // FIN + pong, masked, 2 bytes; then the 4-byte mask and the payload.
        assert_eq!(sock.written[..2], [0x8A, 0x82]);
        let mask = &sock.written[2..6];
        let payload: Vec<u8> = sock.written[6..]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        assert_eq!(payload, b"hb");
        assert!(!ws.wants_flush());
    }

    /// A line that meets a full socket is taken (its frame waits), says
    /// so, and goes out whole on the next flush.
    #[test]
    fn a_line_that_does_not_fit_goes_out_on_flush() {
        let mut ws = open();
        let mut sock = Scripted {
            input: Vec::new(),
            room: 3,
            written: Vec::new(),
        };
        assert!(!ws.send_line(&mut sock, b"hello").unwrap());
        assert!(ws.wants_flush());
        assert_eq!(sock.written.len(), 3);
        sock.room = usize::MAX;
        assert!(ws.flush(&mut sock).unwrap());
        assert!(!ws.wants_flush());
        // FIN + text, masked, 5 bytes: 2 + 4 (mask) + 5.
        assert_eq!(sock.written[..2], [0x81, 0x85]);
        assert_eq!(sock.written.len(), 11);
    }

    /// A socket with these bytes to read, then `WouldBlock`; it takes at
    /// most `room` bytes in all before blocking.
    struct Scripted {
        input: Vec<u8>,
        room: usize,
        written: Vec<u8>,
    }

    impl io::Read for Scripted {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl io::Write for Scripted {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room.saturating_sub(self.written.len()));
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A socket with nothing more to read and room for everything.
    struct Drained;

    impl io::Read for Drained {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl io::Write for Drained {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
}
