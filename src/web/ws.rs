//! One browser's WebSocket, between the line framing above and the
//! connection's plaintext below (the socket, or the TLS session in front of
//! it): each text frame in is one line, each line out is one text frame.
//!
//! The two directions are built differently, on purpose:
//! - **In**, tungstenite's stream-less `WebSocketContext` does the protocol:
//!   unmasking, fragments, control frames, UTF-8 checks, the `--max-line`
//!   cap checked at each frame's header (before its payload is read), and
//!   the pong and close replies it queues by itself.
//! - **Out**, lines are framed here, straight from the slices the engine
//!   offers (the shared fan-out log and the client's private lines): a
//!   server's frame is a 2–10 byte header before the unmasked payload, so
//!   one `writev` carries a header and a payload slice per line, and
//!   nothing is copied per client. A frame the socket took only part of is
//!   finished first on the next write ([`Frame`]).
//!
//! The two meet on the wire, so tungstenite's own frames (pong, ping,
//! close) may only be written between ours: while one of ours is half
//! written, tungstenite is handed a stream that refuses writes, keeps its
//! frame queued, and we flush it as soon as ours is done.

use std::io::{self, IoSlice, Read, Write};

use tungstenite::error::{CapacityError, Error as WsError};

use tungstenite::protocol::frame::CloseFrame;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::{Message, Role, WebSocketConfig, WebSocketContext};

/// tungstenite's read buffer, allocated (and zero-filled) per connection
/// up front: its 128 KiB default is what an idle browser would cost.
/// Lines are short; a longer message just takes more reads.
const READ_BUFFER: usize = 4 * 1024;

/// Room for tungstenite's own frames (pong, ping, close: 127 bytes each at
/// most). It never buffers ours.
const CONTROL_BUFFER: usize = 1024;

/// Lines framed per `writev`.
const LINES_PER_WRITE: usize = 64;

/// Bytes of headers and short payloads staged per `writev`, on the stack.
const STAGED: usize = 4096;

/// Payloads up to this long are copied next to their header (a chat line
/// usually is); longer ones are their own slice.
const COPY_UP_TO: usize = 512;

/// Control frames (pings, pongs) one [`WebSocket::read`] handles before it
/// lets the others have a turn (`Interrupted`, which engines retry or
/// revisit): a peer that floods pings must not hold the loop, and flood
/// control only ever sees lines.
const CONTROL_FRAMES_PER_READ: usize = 16;

/// Pings the peer may leave unanswered before it is taken for gone.
pub const MISSED_PINGS: u8 = 2;

/// A server-side WebSocket on an upgraded connection.
pub struct WebSocket {
    ctx: WebSocketContext,
    /// Our data frame that the socket took only part of.
    frame: Frame,
    /// tungstenite may have a frame of its own queued (a pong after a ping,
    /// the close reply, our ping): flush it when no frame of ours is open.
    control_waiting: bool,
    /// No more data frames: a close was sent or received. What the engine
    /// still offers is dropped.
    closed: bool,
    /// A message longer than the reader's buffer: the rest, for its next
    /// read (rare: the engines read in chunks longer than `--max-line`).
    inbox: Vec<u8>,
    /// Pings sent with nothing heard since (see [`WebSocket::ping`]).
    unanswered_pings: u8,
    /// For the close reason of an oversized message.
    max_line: usize,
}

/// Where our current data frame stands. `header_left` bytes of `header`
/// (its last ones) and `payload_left` bytes of the line are still to go;
/// the line's bytes are the first ones the engine offers next.
#[derive(Default)]
struct Frame {
    header: [u8; 10],
    header_len: u8,
    header_left: u8,
    payload_left: usize,
}

impl Frame {
    fn is_open(&self) -> bool {
        self.header_left > 0 || self.payload_left > 0
    }
}

impl WebSocket {
    /// The connection was just upgraded; `already_read` is what followed the
    /// request head. Frames and messages are capped at `max_line`.
    pub fn new(already_read: Vec<u8>, max_line: usize) -> Self {
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(0)
            .max_write_buffer_size(CONTROL_BUFFER)
            .max_message_size(Some(max_line))
            .max_frame_size(Some(max_line));
        Self {
            ctx: WebSocketContext::from_partially_read(already_read, Role::Server, Some(config)),
            frame: Frame::default(),
            control_waiting: false,
            closed: false,
            inbox: Vec::new(),
            unanswered_pings: 0,
            max_line,
        }
    }

    /// tungstenite has a frame of its own to send: ask for WRITABLE.
    pub fn wants_write(&self) -> bool {
        self.control_waiting
    }

    /// A close was sent or received: no more lines go out.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Send tungstenite's queued frames, unless a frame of ours is half
    /// written (the engine finishes that first). True once nothing of its
    /// own is waiting.
    pub fn send(&mut self, io: &mut (impl Read + Write)) -> io::Result<bool> {
        if !self.control_waiting {
            return Ok(true);
        }
        if self.frame.is_open() {
            return Ok(false);
        }
        match self.ctx.flush(io) {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            // Our close reply went (a server ends the connection then).
            Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => self.closed = true,
            Err(WsError::Io(e)) => return Err(e),
            Err(e) => return Err(io::Error::other(e)),
        }
        self.control_waiting = false;
        Ok(true)
    }

    /// Every 30 s: ping, so idle proxies keep the connection and a peer that
    /// is gone is noticed. False if the last [`MISSED_PINGS`] pings went
    /// unanswered (nothing at all heard since): the engine drops it.
    pub fn ping(&mut self, io: &mut (impl Read + Write)) -> bool {
        if self.unanswered_pings >= MISSED_PINGS {
            return false;
        }
        self.unanswered_pings += 1;
        if !self.closed {
            let _ = self.ctx.write(
                &mut Guarded::new(io, &self.frame),
                Message::Ping(Default::default()),
            );
            self.control_waiting = true;
        }
        true
    }

    /// Start the close handshake (once), code 1000 and `reason`: the close
    /// frame is queued, to go after any frame of ours that is half written;
    /// then [`send`](Self::send) it.
    pub fn close_normally(&mut self, io: &mut (impl Read + Write), reason: &str) {
        self.close(io, CloseCode::Normal, reason);
    }

    /// Hanging up now (cut off as too slow, say): `words` as one text frame,
    /// then the close frame, each as far as the socket takes them without
    /// waiting. Not the words if one of our frames is half written: they
    /// would become the rest of its payload; nor then the close, which may
    /// only follow a whole frame.
    pub fn last_words(&mut self, io: &mut (impl Read + Write), words: &[u8]) {
        if self.frame.is_open() {
            return;
        }
        if !words.is_empty() {
            let _ = self.write(io, &[IoSlice::new(words)]);
        }
        self.close_normally(io, "");
        let _ = self.send(io);
    }

    fn close(&mut self, io: &mut (impl Read + Write), code: CloseCode, reason: &str) {
        if self.closed {
            return;
        }
        self.closed = true;
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self
            .ctx
            .close(&mut Guarded::new(io, &self.frame), Some(frame));
        self.control_waiting = true;
    }

    /// The next line(s) in, each ending in `\n`. `Ok(0)` is the end: a close
    /// frame, end of stream, or a message refused (binary, too long, not
    /// UTF-8, broken framing), which is answered with a close frame that
    /// says why. `WouldBlock` means a frame is incomplete.
    pub fn read(&mut self, io: &mut (impl Read + Write), buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each pass returns, or consumes one control frame, and
        // CONTROL_FRAMES_PER_READ of those return too.
        for _ in 0..CONTROL_FRAMES_PER_READ {
            if !self.inbox.is_empty() {
                let n = buf.len().min(self.inbox.len());
                buf[..n].copy_from_slice(&self.inbox[..n]);
                self.inbox.drain(..n);
                return Ok(n);
            }
            let message = self.ctx.read(&mut Guarded::new(io, &self.frame));
            if message.is_ok() {
                self.unanswered_pings = 0;
            }
            match message {
                Ok(Message::Text(text)) => {
                    let n = self.deliver(text.as_bytes(), buf);
                    if n > 0 {
                        return Ok(n);
                    }
                    // Longer than `buf`: the next pass hands it out from
                    // `inbox` (returning 0 here would read as the end).
                }
                Ok(Message::Binary(_)) => {
                    self.close(io, CloseCode::Unsupported, "binary frames are not accepted");
                    return Ok(0);
                }
                // tungstenite queued the pong itself.
                Ok(Message::Ping(_)) => self.control_waiting = true,
                Ok(Message::Pong(_) | Message::Frame(_)) => {}
                // The peer's close: tungstenite queued the reply.
                Ok(Message::Close(_)) => {
                    self.closed = true;
                    self.control_waiting = true;
                    return Ok(0);
                }
                Err(WsError::Io(e)) => return Err(e),
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => {
                    self.closed = true;
                    return Ok(0);
                }
                // End of stream without a close frame: a plain hang-up.
                Err(WsError::Protocol(
                    tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                )) => {
                    self.closed = true;
                    return Ok(0);
                }
                Err(WsError::Capacity(CapacityError::MessageTooLong { .. })) => {
                    let why = format!("message too big: at most {} bytes", self.max_line);
                    self.close(io, CloseCode::Size, &why);
                    return Ok(0);
                }
                Err(WsError::Utf8(_)) => {
                    self.close(io, CloseCode::Invalid, "text frames must be UTF-8");
                    return Ok(0);
                }
                Err(e) => {
                    let why = e.to_string();
                    self.close(io, CloseCode::Protocol, crate::sanitize::cut(&why, 120));
                    return Ok(0);
                }
            }
        }
        Err(io::ErrorKind::Interrupted.into())
    }

    /// A text message as one line: line breaks inside it become spaces (one
    /// frame is one line), then `\n`.
    fn deliver(&mut self, text: &[u8], buf: &mut [u8]) -> usize {
        let line = text
            .iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b })
            .chain([b'\n']);
        if text.len() < buf.len() {
            for (slot, b) in buf.iter_mut().zip(line) {
                *slot = b;
            }
            text.len() + 1
        } else {
            self.inbox.extend(line);
            0 // the loop in `read` hands it out from `inbox`
        }
    }

    /// Lines out, as text frames: see the module docs. Returns how many of
    /// the offered bytes were taken (a line's `\n` is taken with the end of
    /// its frame); `WouldBlock` if none could be.
    pub fn write(
        &mut self,
        io: &mut (impl Read + Write),
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let mut taken = 0;
        let mut lines = Offered::new(bufs);
        // Bounded by the input: each pass frames up to LINES_PER_WRITE lines
        // of it and writes them, and stops when the socket takes nothing.
        loop {
            if !self.frame.is_open() {
                if !self.send(io)? {
                    break;
                }
                if self.closed {
                    // After a close only the close may go: drop the rest.
                    return Ok(offered);
                }
            }
            if lines.is_done() {
                break;
            }
            let finishing = self.frame.is_open();
            // Headers, and payloads short enough to copy, go into `staged`
            // back to back: one slice for a run of short lines instead of
            // two per line (the kernel pays per slice). Long payloads are
            // written from where they are.
            let mut staged = [0u8; STAGED];
            let mut used = 0;
            let mut planned = [Planned::default(); LINES_PER_WRITE];
            let mut count = 0;
            for plan in planned.iter_mut() {
                if used + 10 + COPY_UP_TO > STAGED {
                    break;
                }
                let continuing = if finishing && count == 0 {
                    self.frame.payload_left
                } else {
                    0
                };
                let Some(line) = lines.next(continuing) else {
                    break;
                };
                let header = if finishing && count == 0 {
                    // Finishing a frame: the rest of its header, then the line.
                    let len = usize::from(self.frame.header_len);
                    let left = usize::from(self.frame.header_left);
                    staged[used..used + left].copy_from_slice(&self.frame.header[len - left..len]);
                    left
                } else {
                    let mut header = [0u8; 10];
                    let n = encode_header(&mut header, line.payload.len());
                    staged[used..used + n].copy_from_slice(&header[..n]);
                    n
                };
                *plan = Planned::new(used, header, line);
                used += header;
                if plan.copied {
                    staged[used..used + plan.payload.len()].copy_from_slice(plan.payload);
                    used += plan.payload.len();
                }
                count += 1;
            }
            if count == 0 {
                break;
            }
            let mut slices = [IoSlice::new(&[]); 2 * LINES_PER_WRITE + 1];
            let mut n_slices = 0;
            let mut run = 0;
            for plan in &planned[..count] {
                if !plan.copied {
                    let run_end = plan.header_at + plan.header;
                    slices[n_slices] = IoSlice::new(&staged[run..run_end]);
                    slices[n_slices + 1] = IoSlice::new(plan.payload);
                    n_slices += 2;
                    run = run_end;
                }
            }
            if run < used {
                slices[n_slices] = IoSlice::new(&staged[run..used]);
                n_slices += 1;
            }
            let mut written = write_vectored(io, &slices[..n_slices])?;
            if written == 0 {
                break;
            }
            for (i, plan) in planned[..count].iter().enumerate() {
                let frame_len = plan.header + plan.payload.len();
                if written >= frame_len {
                    written -= frame_len;
                    taken += plan.payload.len() + usize::from(plan.newline);
                    self.frame = Frame::default();
                    continue;
                }
                // The socket stopped inside this frame: remember the rest,
                // and offer the rest of the input again from there.
                let header_sent = written.min(plan.header);
                let payload_sent = written - header_sent;
                let left = (plan.header - header_sent) as u8;
                if !(finishing && i == 0) {
                    let mut header = [0u8; 10];
                    header[..plan.header]
                        .copy_from_slice(&staged[plan.header_at..plan.header_at + plan.header]);
                    self.frame = Frame {
                        header,
                        header_len: plan.header as u8,
                        ..Frame::default()
                    };
                }
                self.frame.header_left = left;
                self.frame.payload_left = plan.payload.len() - payload_sent;
                taken += payload_sent;
                lines = Offered::new(bufs);
                lines.skip(taken);
                break;
            }
        }
        // Nothing taken is "try again when writable", never `Ok(0)` (which
        // callers read as a peer that can take no more, ever).
        if taken == 0 && offered > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

/// A line to frame: its payload, and whether its `\n` was offered with it.
struct Line<'a> {
    payload: &'a [u8],
    newline: bool,
}

/// One line of a `writev`: its header bytes (at `header_at` in the staged
/// bytes), and its payload, copied after them or sent from where it is.
#[derive(Clone, Copy, Default)]
struct Planned<'a> {
    header_at: usize,
    header: usize,
    payload: &'a [u8],
    copied: bool,
    newline: bool,
}

impl<'a> Planned<'a> {
    fn new(header_at: usize, header: usize, line: Line<'a>) -> Self {
        Self {
            header_at,
            header,
            payload: line.payload,
            copied: line.payload.len() <= COPY_UP_TO,
            newline: line.newline,
        }
    }
}

/// The offered slices, line by line. Lines never straddle slices (the log
/// keeps whole broadcasts in a segment, private lines are whole), so a
/// slice's end without `\n` ends a frame too.
struct Offered<'b> {
    bufs: &'b [IoSlice<'b>],
    at: usize,
    offset: usize,
}

impl<'b> Offered<'b> {
    fn new(bufs: &'b [IoSlice<'b>]) -> Self {
        Self {
            bufs,
            at: 0,
            offset: 0,
        }
    }

    /// Nothing more is offered.
    fn is_done(&self) -> bool {
        let mut rest = self.bufs.iter().skip(self.at);
        rest.next().is_none_or(|first| first.len() == self.offset) && rest.all(|b| b.is_empty())
    }

    /// Start `n` bytes in.
    fn skip(&mut self, mut n: usize) {
        while let Some(buf) = self.bufs.get(self.at) {
            let rest = buf.len() - self.offset;
            if n < rest {
                self.offset += n;
                return;
            }
            n -= rest;
            self.at += 1;
            self.offset = 0;
        }
    }

    /// The next line; a frame half sent continues with exactly `continuing`
    /// payload bytes (they come first).
    fn next(&mut self, continuing: usize) -> Option<Line<'b>> {
        while self.at < self.bufs.len() {
            let buf: &'b [u8] = &self.bufs[self.at];
            let rest = &buf[self.offset..];
            if rest.is_empty() {
                self.at += 1;
                self.offset = 0;
                continue;
            }
            let len = if continuing > 0 {
                continuing.min(rest.len())
            } else {
                memchr::memchr(b'\n', rest).unwrap_or(rest.len())
            };
            let newline = rest.get(len) == Some(&b'\n');
            self.offset += len + usize::from(newline);
            return Some(Line {
                payload: &rest[..len],
                newline,
            });
        }
        None
    }
}

/// A server frame's header for a text payload of `len` bytes: FIN + text,
/// unmasked, with the shortest length encoding. Returns its size.
fn encode_header(out: &mut [u8; 10], len: usize) -> usize {
    out[0] = 0x81;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(short) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// One `writev`, `Interrupted` retried, `WouldBlock` as nothing written.
fn write_vectored(io: &mut impl Write, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    loop {
        match io.write_vectored(slices) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// The stream tungstenite reads and writes through: writes are refused
/// (`WouldBlock`, so it keeps its frame queued) while a frame of ours is
/// half written.
struct Guarded<'a, S> {
    io: &'a mut S,
    hold_writes: bool,
}

impl<'a, S> Guarded<'a, S> {
    fn new(io: &'a mut S, frame: &Frame) -> Self {
        Self {
            io,
            hold_writes: frame.is_open(),
        }
    }
}

impl<S: Read> Read for Guarded<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.io.read(buf)
    }
}

impl<S: Write> Write for Guarded<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.hold_writes {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.io.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.hold_writes {
            return Ok(());
        }
        self.io.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::io::Cursor;

    /// Our side of a connection in memory: what the peer sent, what we
    /// wrote, and how much more the "socket" takes (then `WouldBlock`).
    #[derive(Default)]
    struct Wire {
        input: VecDeque<u8>,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Wire {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.input.len());
            for (slot, b) in buf.iter_mut().zip(self.input.drain(..n)) {
                *slot = b;
            }
            Ok(n)
        }
    }

    impl Write for Wire {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.output.extend_from_slice(&buf[..n]);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn wire() -> Wire {
        Wire {
            room: usize::MAX,
            ..Wire::default()
        }
    }

    /// Read-only stream over what the server wrote, for a client context.
    struct Received(Cursor<Vec<u8>>);

    impl Read for Received {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match self.0.read(buf)? {
                0 => Err(io::ErrorKind::WouldBlock.into()),
                n => Ok(n),
            }
        }
    }

    impl Write for Received {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Every message in `bytes`, decoded as a browser would.
    fn messages(bytes: &[u8]) -> Vec<Message> {
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut stream = Received(Cursor::new(bytes.to_vec()));
        let mut got = Vec::new();
        loop {
            match client.read(&mut stream) {
                Ok(m) => got.push(m),
                Err(WsError::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => return got,
                Err(e) => panic!("the client could not read what was sent: {e} after {got:?}"),
            }
        }
    }

    fn texts(bytes: &[u8]) -> Vec<String> {
        messages(bytes)
            .into_iter()
            .filter_map(|m| match m {
                Message::Text(t) => Some(t.as_str().to_owned()),
                _ => None,
            })
            .collect()
    }

    /// Frames a browser would send (masked).
    fn from_browser(messages: &[Message]) -> Vec<u8> {
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut out = wire();
        for m in messages {
            client.write(&mut out, m.clone()).unwrap();
        }
        client.flush(&mut out).unwrap();
        out.output
    }

    #[test]
    fn each_line_out_is_one_text_frame() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        let long = "x".repeat(300); // a 16-bit length
        let first = format!("<alice> hi\n* bob joined\n{long}\n");
        let bufs = [IoSlice::new(first.as_bytes()), IoSlice::new(b"! private\n")];
        let offered = first.len() + 10;
        assert_eq!(ws.write(&mut io, &bufs).unwrap(), offered);
        assert_eq!(
            texts(&io.output),
            ["<alice> hi", "* bob joined", long.as_str(), "! private"]
        );
    }

    /// Whatever the socket takes at a time, every frame arrives whole and in
    /// order, and what is taken is always what the frames carried.
    #[test]
    fn frames_survive_a_socket_that_takes_a_few_bytes_at_a_time() {
        // Short lines (copied next to their headers) and, every seventh,
        // one long enough to go from where it is.
        let lines: Vec<String> = (0..40)
            .map(|i| {
                let len = if i % 7 == 3 { 1500 } else { i * 37 % 200 };
                format!("<n{i}> {}", "y".repeat(len))
            })
            .collect();
        let all: String = lines.iter().map(|l| format!("{l}\n")).collect();
        for room in [1, 2, 3, 5, 7, 64, 129, 1000] {
            let mut ws = WebSocket::new(Vec::new(), 4096);
            let mut io = wire();
            let mut at = 0;
            let mut rounds = 0;
            while at < all.len() {
                rounds += 1;
                assert!(rounds < 100_000, "no progress with room {room}");
                io.room = room;
                match ws.write(&mut io, &[IoSlice::new(&all.as_bytes()[at..])]) {
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            io.room = usize::MAX;
            assert!(ws.send(&mut io).unwrap());
            assert_eq!(texts(&io.output), lines, "room {room}");
        }
    }

    /// A ping that arrives while one of our frames is half written is
    /// answered after that frame, never inside it.
    #[test]
    fn a_pong_waits_for_our_half_written_frame() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        let line = format!("{}\n", "z".repeat(500));
        io.room = 100;
        let taken = ws.write(&mut io, &[IoSlice::new(line.as_bytes())]).unwrap();
        assert!(taken < line.len());
        io.input
            .extend(from_browser(&[Message::Ping(b"p".to_vec().into())]));
        io.room = usize::MAX;
        let mut buf = [0u8; 64];
        let err = ws.read(&mut io, &mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(ws.wants_write());
        assert!(!ws.send(&mut io).unwrap(), "our frame goes first");
        let rest = ws
            .write(&mut io, &[IoSlice::new(&line.as_bytes()[taken..])])
            .unwrap();
        assert_eq!(taken + rest, line.len());
        assert!(ws.send(&mut io).unwrap());
        let got = messages(&io.output);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(matches!(&got[0], Message::Text(t) if t.len() == 500));
        assert!(matches!(&got[1], Message::Pong(p) if &p[..] == b"p"));
    }

    #[test]
    fn each_text_frame_in_is_one_line() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        io.input.extend(from_browser(&[
            Message::text("hello"),
            Message::text("two\nlines\r\nin one"),
            Message::Pong(Default::default()),
            Message::text("x".repeat(100)),
        ]));
        let mut got = Vec::new();
        let mut buf = [0u8; 64]; // shorter than the last message
        loop {
            match ws.read(&mut io, &mut buf) {
                Ok(0) => panic!("the end of input, after {got:?}"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let want = format!("hello\ntwo lines  in one\n{}\n", "x".repeat(100));
        assert_eq!(String::from_utf8(got).unwrap(), want);
    }

    /// The peer's close: the end of its input, answered with a close, and
    /// nothing more is written after it.
    #[test]
    fn a_close_ends_input_and_is_answered() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        io.input.extend(from_browser(&[Message::Close(None)]));
        assert_eq!(ws.read(&mut io, &mut [0u8; 64]).unwrap(), 0);
        assert!(ws.is_closed());
        assert_eq!(ws.write(&mut io, &[IoSlice::new(b"late\n")]).unwrap(), 5);
        assert!(ws.send(&mut io).unwrap());
        let got = messages(&io.output);
        assert!(matches!(got.as_slice(), [Message::Close(_)]), "{got:?}");
    }

    fn close_code(bytes: &[u8]) -> (u16, String) {
        match messages(bytes).pop() {
            Some(Message::Close(Some(f))) => (f.code.into(), f.reason.as_str().to_owned()),
            other => panic!("no close frame: {other:?}"),
        }
    }

    /// What a peer that sent `input` hears back: the end of its input, and
    /// a close frame's code and reason.
    fn refused(input: &[u8]) -> (u16, String) {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        io.input.extend(input);
        assert_eq!(ws.read(&mut io, &mut [0u8; 64]).unwrap(), 0);
        assert!(ws.send(&mut io).unwrap());
        close_code(&io.output)
    }

    #[test]
    fn binary_frames_are_refused_with_a_reason() {
        let (code, reason) = refused(&from_browser(&[Message::binary(vec![1, 2, 3])]));
        assert_eq!(code, 1003);
        assert!(reason.contains("binary"), "{reason}");
    }

    /// A 10 MB frame is refused at its header: no payload is needed (none is
    /// sent here) and none is buffered.
    #[test]
    fn an_oversized_frame_is_refused_at_its_header() {
        let len: u64 = 10 * 1024 * 1024;
        let mut header = vec![0x81, 0x80 | 127];
        header.extend(len.to_be_bytes());
        header.extend([1, 2, 3, 4]); // the mask
        let (code, reason) = refused(&header);
        assert_eq!(code, 1009);
        assert!(reason.contains("2048"), "{reason}");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        // A text frame, masked with zeros, holding a lone continuation byte.
        assert_eq!(refused(&[0x81, 0x81, 0, 0, 0, 0, 0x80]).0, 1007);
    }

    #[test]
    fn bytes_that_followed_the_head_are_read_first() {
        let early = from_browser(&[Message::text("early")]);
        let mut ws = WebSocket::new(early, 2048);
        let mut io = wire();
        let mut buf = [0u8; 64];
        assert_eq!(ws.read(&mut io, &mut buf).unwrap(), 6);
        assert_eq!(&buf[..6], b"early\n");
    }

    /// A flood of pings is handled a slice at a time: each read returns
    /// after a bounded number of control frames, and the line behind them
    /// arrives once they are through.
    #[test]
    fn a_ping_flood_gives_way_to_the_others() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        let mut flood: Vec<Message> = (0..100)
            .map(|_| Message::Ping(Default::default()))
            .collect();
        flood.push(Message::text("after the flood"));
        io.input.extend(from_browser(&flood));
        let mut buf = [0u8; 64];
        let mut interrupted = 0;
        let line = loop {
            match ws.read(&mut io, &mut buf) {
                Ok(n) => break buf[..n].to_vec(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => interrupted += 1,
                Err(e) => panic!("{e}"),
            }
            assert!(interrupted <= 100, "never gave way");
        };
        assert_eq!(line, b"after the flood\n");
        assert_eq!(interrupted, 100 / CONTROL_FRAMES_PER_READ);
    }

    #[test]
    fn a_peer_that_answers_no_pings_is_given_up() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        assert!(ws.ping(&mut io));
        assert!(ws.ping(&mut io));
        assert!(!ws.ping(&mut io), "two pings unanswered");
        // Anything heard resets the count.
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        assert!(ws.ping(&mut io));
        assert!(ws.ping(&mut io));
        io.input
            .extend(from_browser(&[Message::Pong(Default::default())]));
        let _ = ws.read(&mut io, &mut [0u8; 8]);
        assert!(ws.ping(&mut io));
        assert!(ws.send(&mut io).unwrap());
        let pings = messages(&io.output)
            .iter()
            .filter(|m| matches!(m, Message::Ping(_)))
            .count();
        assert!(pings >= 3, "{pings}");
    }

    /// Last words are a whole frame and a close; with a frame of ours half
    /// written they are left out, so the half frame is never garbled.
    #[test]
    fn last_words_never_land_inside_a_half_written_frame() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        ws.last_words(&mut io, b"! too slow\n");
        let got = messages(&io.output);
        assert!(
            matches!(&got[0], Message::Text(t) if t.as_str() == "! too slow"),
            "{got:?}"
        );
        assert!(matches!(&got[1], Message::Close(_)), "{got:?}");

        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        let line = format!("{}\n", "q".repeat(200));
        io.room = 50;
        let taken = ws.write(&mut io, &[IoSlice::new(line.as_bytes())]).unwrap();
        assert!(taken < 200);
        io.room = usize::MAX;
        ws.last_words(&mut io, b"! too slow\n");
        assert_eq!(io.output.len(), 50, "nothing after the half frame");
    }

    #[test]
    fn our_close_goes_after_the_frame_in_flight() {
        let mut ws = WebSocket::new(Vec::new(), 2048);
        let mut io = wire();
        let line = format!("{}\n", "q".repeat(200));
        io.room = 50;
        let taken = ws.write(&mut io, &[IoSlice::new(line.as_bytes())]).unwrap();
        ws.close_normally(&mut io, "bye");
        io.room = usize::MAX;
        let rest = ws
            .write(&mut io, &[IoSlice::new(&line.as_bytes()[taken..])])
            .unwrap();
        assert_eq!(taken + rest, line.len());
        assert!(ws.send(&mut io).unwrap());
        let got = messages(&io.output);
        assert!(
            matches!(&got[0], Message::Text(t) if t.len() == 200),
            "{got:?}"
        );
        assert!(matches!(&got[1], Message::Close(Some(f)) if f.reason == "bye"));
    }
}
