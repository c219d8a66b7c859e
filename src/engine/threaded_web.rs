//! A threaded-engine browser client: its request head and answer, read and
//! written on the reader thread alone, and then, if it upgraded, its one
//! WebSocket, shared by its two threads.
//!
//! In the poll engine one thread owns a client's socket, its TLS session
//! and its WebSocket, and the three layers (`web::Lines` over
//! `tls::Plaintext` over the socket) are one call stack. Here the reader
//! and the writer both need the WebSocket: the reader to turn frames into
//! lines and to answer pings and closes (tungstenite queues the pong
//! itself, during the read), the writer to frame what the client is owed
//! and to finish a frame the socket took only part of. A WebSocket is one
//! state machine per direction that also shares the outgoing stream (a
//! pong must never land inside a half-written frame of ours), so, like the
//! TLS session, it sits behind one `Mutex` ([`SharedWebSocket`]), and no
//! call under that lock can wait:
//! - the reader does its blocking `read()` with no lock, then takes the
//!   lock and feeds what it read through [`Fed`]: a stream whose `read`
//!   yields just those bytes (then `WouldBlock`) and whose `write` is the
//!   socket without waiting, so a pong tungstenite writes during the read
//!   goes out at once, or waits in tungstenite for the writer;
//! - the writer frames and sends with the same non-blocking `sendmsg`, and
//!   lets go of the lock before it waits in `poll()` for room.
//!
//! Lock order: the room, then the log, then the connection's state, then
//! its WebSocket, then (wss) its TLS session. The writer holds the log and
//! its state while it writes (its cursor moves with what the frames took),
//! then the WebSocket and the session; the reader and the ping take the
//! WebSocket and then the session; nothing holding either takes any other
//! lock, and every wait for room happens with none held.
//!
//! Before the upgrade there is nothing to share: the request head is read
//! and answered on the reader thread, before the writer exists
//! ([`read_head`], [`send_all`], [`close_answered`]), like a TLS handshake.

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::connection::{Connection, NonBlocking};
use super::fanout_log::FanoutLog;
use super::out_queue::{OutQueue, Wrote, write_once};
use super::rules::LINGER;
use super::threaded_tls::{Sent, SharedSession};
use crate::inbound::Inbound;
use crate::tls::{Pipe, Plaintext, Session};
use crate::web::{Front, Lines, Progress, RequestHead, WebSocket};

/// Lines taken out of the WebSocket at a time, into a buffer on the
/// reader's stack (small for the reason `threaded_tls::PLAINTEXT_CHUNK`
/// gives: a stack page once touched stays in RSS). A longer message just
/// comes out in more pieces.
const LINES_CHUNK: usize = 1024;

/// One browser's WebSocket and the lock its two threads take turns on.
pub(crate) struct SharedWebSocket {
    ws: Mutex<WebSocket>,
}

impl std::fmt::Debug for SharedWebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWebSocket")
    }
}

/// The session of a wss client, locked (after its WebSocket).
type SessionGuard<'a> = MutexGuard<'a, Box<Session>>;

impl SharedWebSocket {
    pub(crate) fn new(ws: WebSocket) -> Self {
        Self { ws: Mutex::new(ws) }
    }

    /// A panicking thread must not take the other down with it: between
    /// calls the WebSocket is consistent (a frame is open or not, a
    /// control frame waits or not).
    fn lock(&self) -> MutexGuard<'_, WebSocket> {
        self.ws.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The reader's side: `bytes`, just read from the socket (ciphertext,
    /// for wss), through the session and the WebSocket; each text frame
    /// they complete goes to `inbound` as one line. The end of its input
    /// (a close frame, or a message refused with a close frame of ours that
    /// says why) is `push_eof`. Then, as after every read batch, the
    /// WebSocket's own frames (a pong, the close reply) and the session's
    /// records are offered to the socket without waiting: `Waiting` if the
    /// socket would not take them all (the writer is to wait for room).
    ///
    /// Called with empty `bytes` right after the upgrade, it delivers the
    /// frames that came with the request head.
    ///
    /// Once the input has ended, what still arrives is not fed in (the
    /// poll engine stops reading there too): after refusing an oversized
    /// frame, tungstenite keeps its header and would buffer its payload.
    pub(crate) fn take_input(
        &self,
        tls: Option<&SharedSession>,
        sock: &TcpStream,
        bytes: &[u8],
        inbound: &mut Inbound,
    ) -> io::Result<Sent> {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(bytes, sock);
        let mut lines = [0u8; LINES_CHUNK];
        let mut failed = None;
        // Bounded: each pass hands out bytes of a message already decoded,
        // consumes fed bytes, or ends (fed bytes run out: `WouldBlock`; the
        // WebSocket closed: `Ok(0)`).
        while !inbound.is_eof() {
            let mut io = plaintext(&mut session, &mut fed);
            match ws.read(&mut io, &mut lines) {
                Ok(0) => {
                    inbound.push_eof();
                    break;
                }
                Ok(n) => inbound.push(&lines[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The TLS pipe's fairness cap: read on.
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        // Flush after reads, so pongs go out.
        let sent = flush(&mut ws, &mut session, &mut fed);
        match failed {
            Some(e) => Err(e),
            None => sent,
        }
    }

    /// The writer's side: one write of what client `key` is owed, as text
    /// frames (`WebSocket::write`, straight from the slices the queue
    /// offers), through the session for wss. First what the socket refused
    /// last time: the session's ciphertext, then the WebSocket's own frames
    /// (unless one of ours is half written: this write finishes it). Owed
    /// nothing more but with frames or ciphertext of its own still waiting
    /// is [`Wrote::Refused`]: wait for room, do not go to sleep.
    pub(crate) fn write_owed(
        &self,
        tls: Option<&SharedSession>,
        out: &mut OutQueue,
        log: &FanoutLog,
        key: usize,
        sock: &TcpStream,
        now: Instant,
    ) -> io::Result<(usize, Wrote)> {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(&[], sock);
        if let Some(session) = session.as_deref_mut() {
            session.send(&mut fed)?;
        }
        ws.send(&mut plaintext(&mut session, &mut fed))?;
        let (written, wrote) = out.write_to(
            log,
            key,
            &mut Lines::over(Some(&mut *ws), plaintext(&mut session, &mut fed)),
            now,
        )?;
        if wrote == Wrote::Drained && flush(&mut ws, &mut session, &mut fed)? == Sent::Waiting {
            return Ok((written, Wrote::Refused));
        }
        Ok((written, wrote))
    }

    /// The end of an orderly close, after everything owed: queue the close
    /// frame (code 1000; once, and none if the close handshake has begun
    /// already) and offer it. The TLS `close_notify` comes after it, from
    /// the caller.
    pub(crate) fn close(&self, tls: Option<&SharedSession>, sock: &TcpStream) -> io::Result<Sent> {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(&[], sock);
        ws.close_normally(&mut plaintext(&mut session, &mut fed), "");
        flush(&mut ws, &mut session, &mut fed)
    }

    /// Offer the WebSocket's waiting frames, then the session's ciphertext,
    /// without waiting.
    pub(crate) fn flush(&self, tls: Option<&SharedSession>, sock: &TcpStream) -> io::Result<Sent> {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(&[], sock);
        flush(&mut ws, &mut session, &mut fed)
    }

    /// Every `web::PING_INTERVAL`: ping, and offer it at once. `None` if the
    /// peer left `MISSED_PINGS` pings in a row unanswered (it is gone);
    /// else whether anything is left waiting for the writer.
    pub(crate) fn ping(&self, tls: Option<&SharedSession>, sock: &TcpStream) -> Option<Sent> {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(&[], sock);
        if !ws.ping(&mut plaintext(&mut session, &mut fed)) {
            return None;
        }
        // A failed write is the reader's and the writer's to notice.
        Some(flush(&mut ws, &mut session, &mut fed).unwrap_or(Sent::All))
    }

    /// Hanging up now: `last_words` as a text frame, the close frame, and
    /// for wss the `close_notify`, each only as far as the socket takes it
    /// without waiting (the poll engine's `last_words`).
    pub(crate) fn last_words(&self, tls: Option<&SharedSession>, sock: &TcpStream, words: &[u8]) {
        let mut ws = self.lock();
        let mut session = tls.map(SharedSession::lock);
        let mut fed = Fed::new(&[], sock);
        ws.last_words(&mut plaintext(&mut session, &mut fed), words);
        if let Some(session) = session.as_deref_mut() {
            session.close();
            let _ = session.send(&mut fed);
        }
    }
}

/// The connection's plaintext under the WebSocket: `fed` itself, or the
/// session in front of it.
fn plaintext<'a, 'f>(
    session: &'a mut Option<SessionGuard<'_>>,
    fed: &'a mut Fed<'f>,
) -> Plaintext<'a, Fed<'f>> {
    Plaintext::over(session.as_deref_mut().map(|s| &mut **s), fed)
}

/// The WebSocket's own frames, then the session's ciphertext, offered to
/// the socket: `Waiting` if either is left over.
fn flush(
    ws: &mut WebSocket,
    session: &mut Option<SessionGuard<'_>>,
    fed: &mut Fed<'_>,
) -> io::Result<Sent> {
    let frames = ws.send(&mut plaintext(session, fed))?;
    let ciphertext = match session.as_deref_mut() {
        Some(session) => session.send(fed)?,
        None => true,
    };
    Ok(Sent::from(frames && ciphertext))
}

/// What the WebSocket (or the session under it) reads and writes on this
/// engine: `read` yields the bytes the reader thread has just read from
/// the socket, then `WouldBlock` (never the socket: its blocking `read()`
/// happens with no lock held); `write` is the socket without waiting
/// (`NonBlocking`), so whatever is written under the lock never blocks.
pub(crate) struct Fed<'a> {
    input: &'a [u8],
    sock: NonBlocking<'a>,
}

impl<'a> Fed<'a> {
    pub(crate) fn new(input: &'a [u8], sock: &'a TcpStream) -> Self {
        Self {
            input,
            sock: NonBlocking(sock),
        }
    }
}

impl Read for Fed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(self.input.len());
        buf[..n].copy_from_slice(&self.input[..n]);
        self.input = &self.input[n..];
        Ok(n)
    }
}

impl Write for Fed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.sock.write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ----- before the upgrade: the reader thread alone -------------------------

/// `bytes`, just read from the socket (for https: ciphertext, the
/// handshake done), and whatever plaintext already waits in the session,
/// into the request head; its answer once it is complete. `NeedMore` when
/// the bytes run out first.
pub(crate) fn read_head(
    conn: &Connection,
    front: &Front,
    head: &mut RequestHead,
    bytes: &[u8],
) -> io::Result<Progress> {
    let mut session = conn.tls().map(SharedSession::lock);
    let mut fed = Fed::new(bytes, conn.stream());
    front.read_head(head, &mut plaintext(&mut session, &mut fed))
}

/// Write all of `bytes` (through the session for https), waiting for room
/// without any lock when the socket is full, but not past `deadline`
/// (then `TimedOut`): the answer to a request head, the page or the 101.
pub(crate) fn send_all(conn: &Connection, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let sock = conn.stream();
    // Bounded by `deadline`: each pass writes, or waits for room until it.
    loop {
        let done = match conn.tls() {
            None => {
                if !bytes.is_empty() {
                    let n = write_once(|| NonBlocking(sock).write(bytes))?;
                    bytes = &bytes[n..];
                }
                bytes.is_empty()
            }
            Some(tls) => {
                let mut session = tls.lock();
                let mut raw = NonBlocking(sock);
                if !bytes.is_empty() {
                    let mut pipe = Pipe {
                        session: &mut session,
                        sock: &mut raw,
                    };
                    let n = write_once(|| pipe.write(bytes))?;
                    bytes = &bytes[n..];
                }
                bytes.is_empty() && session.send(&mut raw)?
            }
        };
        if done {
            return Ok(());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !conn.wait_writable(left) {
            return Err(io::ErrorKind::TimedOut.into());
        }
    }
}

/// The page or an error was sent: close as any orderly close does, the
/// `close_notify` (https; waiting for room no later than `deadline`), then
/// our FIN, then what the client still sends is read and thrown away until
/// its own FIN or `LINGER`, so the answer is not lost to a reset.
pub(crate) fn close_answered(conn: &Connection, deadline: Instant) {
    let sock = conn.stream();
    if let Some(tls) = conn.tls() {
        let mut sent = tls.close(sock);
        // Bounded by `deadline`.
        while let Ok(Sent::Waiting) = sent {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !conn.wait_writable(left) {
                break;
            }
            sent = tls.flush(sock);
        }
    }
    let _ = sock.shutdown(Shutdown::Write);
    conn.drain_input(LINGER);
}

#[cfg(all(test, feature = "web"))]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    use tungstenite::Message;
    use tungstenite::protocol::{Role, WebSocketContext};

    use crate::app::{ClientId, Recipients};
    use crate::inbound::Step;

    const KEY: usize = 1;

    /// A loopback pair: ours as a `Connection` upgraded to a WebSocket, and
    /// the peer's socket, read with a timeout.
    fn pair() -> (Connection, TcpStream) {
        let (conn, peer) = super::super::connection::loopback_pair();
        conn.upgrade(WebSocket::new(Vec::new(), 2048));
        (conn, peer)
    }

    /// What a browser would send (masked frames).
    fn from_browser(messages: &[Message]) -> Vec<u8> {
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut out = io::Cursor::new(Vec::new());
        for m in messages {
            client.write(&mut out, m.clone()).unwrap();
        }
        client.flush(&mut out).unwrap();
        out.into_inner()
    }

    /// Every message the peer can read within a moment.
    fn received(peer: &mut TcpStream) -> Vec<Message> {
        peer.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut got = Vec::new();
        loop {
            match client.read(peer) {
                Ok(m) => got.push(m),
                Err(_) => return got,
            }
        }
    }

    /// The reader's bytes come out as lines, and the pong for a ping among
    /// them goes out during the same call, with no writer involved.
    #[test]
    fn fed_frames_become_lines_and_a_ping_is_answered_at_once() {
        let (conn, mut peer) = pair();
        let web = conn.websocket().unwrap();
        let bytes = from_browser(&[
            Message::text("hello"),
            Message::Ping(b"p".to_vec().into()),
            Message::text("/who"),
        ]);
        let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
        // In two pieces, split inside a frame: the first half waits.
        let (a, b) = bytes.split_at(5);
        let sent = web
            .take_input(None, conn.stream(), a, &mut inbound)
            .unwrap();
        assert_eq!(sent, Sent::All);
        let sent = web
            .take_input(None, conn.stream(), b, &mut inbound)
            .unwrap();
        assert_eq!(sent, Sent::All);
        let now = Instant::now();
        assert_eq!(inbound.next_step(now), Step::Line("hello".into()));
        assert_eq!(inbound.next_step(now), Step::Line("/who".into()));
        assert_eq!(inbound.next_step(now), Step::NeedMore);
        let got = received(&mut peer);
        assert!(
            matches!(got.as_slice(), [Message::Pong(p)] if &p[..] == b"p"),
            "{got:?}"
        );
    }

    /// The writer's frames and the reader's pong share the socket: a pong
    /// fed while the writer is mid-frame never lands inside that frame.
    /// Here the writer writes lines from the log while the reader feeds
    /// pings from another thread; the peer must decode every frame.
    #[test]
    fn pongs_and_lines_from_two_threads_never_interleave_inside_a_frame() {
        let (conn, mut peer) = pair();
        let conn = Arc::new(conn);
        let mut log = FanoutLog::new(usize::MAX);
        let line = format!("{}\n", "x".repeat(1500));
        for _ in 0..200 {
            log.push(
                Recipients::RoomBut(crate::app::RoomId::LOBBY, ClientId(0)),
                line.as_bytes(),
            );
        }
        let pinger = std::thread::spawn({
            let conn = conn.clone();
            move || {
                let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
                let ping = from_browser(&[Message::Ping(b"q".to_vec().into())]);
                let web = conn.websocket().unwrap();
                for _ in 0..200 {
                    let _ = web.take_input(None, conn.stream(), &ping, &mut inbound);
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let mut client = WebSocketContext::new(Role::Client, None);
            let (mut texts, mut pongs) = (0, 0);
            while texts < 200 {
                match client.read(&mut peer) {
                    Ok(Message::Text(t)) => {
                        assert_eq!(t.len(), 1500);
                        texts += 1;
                    }
                    Ok(Message::Pong(_)) => pongs += 1,
                    Ok(m) => panic!("unexpected {m:?}"),
                    Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("the peer could not decode the stream: {e}"),
                }
            }
            (texts, pongs)
        });
        let web = conn.websocket().unwrap();
        let mut out = OutQueue::new(0);
        // Bounded: 300 KB to a peer that reads.
        for _ in 0..1_000_000 {
            let (_, wrote) = web
                .write_owed(None, &mut out, &log, KEY, conn.stream(), Instant::now())
                .unwrap();
            match wrote {
                Wrote::Drained => break,
                Wrote::Refused => {
                    conn.wait_writable(Duration::from_secs(20));
                }
                Wrote::More => {}
            }
        }
        pinger.join().unwrap();
        // The last pongs may wait behind our frames: flush them too.
        let _ = web.flush(None, conn.stream());
        let (texts, _pongs) = reader.join().unwrap();
        assert_eq!(texts, 200);
    }

    /// An orderly close sends a close frame; a close frame from the peer
    /// ends its input.
    #[test]
    fn a_close_frame_each_way() {
        let (conn, mut peer) = pair();
        let web = conn.websocket().unwrap();
        let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
        let close = from_browser(&[Message::Close(None)]);
        web.take_input(None, conn.stream(), &close, &mut inbound)
            .unwrap();
        assert!(inbound.is_eof());
        // The close reply was sent after the read, and ours adds nothing.
        assert_eq!(web.close(None, conn.stream()).unwrap(), Sent::All);
        let got = received(&mut peer);
        assert!(matches!(got.as_slice(), [Message::Close(_)]), "{got:?}");
    }

    /// Regression: after refusing a frame whose header claims 10 MB, the
    /// reader went on feeding what arrived into tungstenite, which had kept
    /// that header: it buffered the payload, and in a debug build panicked
    /// (`read_in`'s assertion). Nothing is fed after the end of input.
    #[test]
    fn after_a_refused_frame_nothing_more_is_fed() {
        let (conn, mut peer) = pair();
        let web = conn.websocket().unwrap();
        let mut inbound = Inbound::new(usize::MAX, 0, 0, Instant::now());
        let mut header = vec![0x81, 0x80 | 127];
        header.extend((10u64 << 20).to_be_bytes());
        header.extend([7, 7, 7, 7]);
        web.take_input(None, conn.stream(), &header, &mut inbound)
            .unwrap();
        assert!(inbound.is_eof());
        for _ in 0..64 {
            web.take_input(None, conn.stream(), &[b'x'; 4096], &mut inbound)
                .unwrap();
        }
        let got = received(&mut peer);
        assert!(
            matches!(got.as_slice(), [Message::Close(Some(f))] if u16::from(f.code) == 1009),
            "{got:?}"
        );
    }

    /// The request head is read from fed bytes across several calls, and
    /// what followed it (a first frame) comes back with the 101.
    #[test]
    fn a_request_head_in_pieces_is_answered() {
        let (conn, _peer) = super::super::connection::loopback_pair();
        let front = Front::new(Default::default(), 2048).unwrap();
        let crate::web::Web::Head(mut head) = *front.connection() else {
            panic!("a new connection reads a head")
        };
        let request = "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
            Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        let mut bytes = request.as_bytes().to_vec();
        bytes.extend(from_browser(&[Message::text("early")]));
        let (a, b) = bytes.split_at(30);
        assert!(matches!(
            read_head(&conn, &front, &mut head, a).unwrap(),
            Progress::NeedMore
        ));
        let Progress::Answer(answer) = read_head(&conn, &front, &mut head, b).unwrap() else {
            panic!("the head is complete");
        };
        assert_eq!(answer.status, 101);
        assert!(answer.upgrade.is_some_and(|tail| !tail.is_empty()));
    }
}
