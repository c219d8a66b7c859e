//! The bench's side of WebSocket framing (RFC 6455 section 5), by hand:
//! masked frames out, the server's unmasked frames in, and the pong and
//! close replies a client owes.
//!
//! Why not tungstenite, which the server uses: as a client it masks each
//! frame from `rand` (ChaCha and its thread-local state, about 50 KB in
//! every pollchat binary, the server's included), copies every message
//! into a buffer of its own and zero-fills its read buffer on each read.
//! The bench has to stay cheaper than the server it measures, and a
//! client's half is small: a server never masks, and the mask only has to
//! be unknown to proxies in a browser's world, which a load generator on
//! loopback is not (an xorshift does).

use std::io;

/// Longest message accepted from the server (a big `--payload` fits).
pub const MAX_MESSAGE: usize = 16 << 20;

/// One connection's frames: what waits to be sent, and what has arrived
/// of a frame or message not yet whole. An idle connection holds neither.
pub struct ClientFrames {
    /// Frames (ours, masked) the socket has not taken yet.
    out: Vec<u8>,
    /// The start of a frame whose end has not arrived.
    partial: Vec<u8>,
    /// A fragmented message so far, and whether it is text.
    fragments: Option<Vec<u8>>,
    /// The mask generator (xorshift32).
    mask: u32,
}

/// What one [`ClientFrames::read`] came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The socket is drained; more may come.
    No,
    /// The server closed it: a close frame (answered), its end of stream,
    /// or frames that break the protocol.
    Yes,
}

impl ClientFrames {
    /// Frames start after the 101; `already_read` is what followed it.
    pub fn new(already_read: Vec<u8>, seed: u32) -> Self {
        Self {
            out: Vec::new(),
            partial: already_read,
            fragments: None,
            mask: seed | 1,
        }
    }

    /// Frames wait for room in the socket.
    pub fn wants_flush(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queue `payload` as one text frame.
    pub fn queue_text(&mut self, payload: &[u8]) {
        self.queue(0x1, payload);
    }

    fn queue(&mut self, opcode: u8, payload: &[u8]) {
        let len = payload.len();
        self.out.push(0x80 | opcode);
        if len < 126 {
            self.out.push(0x80 | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            self.out.push(0x80 | 126);
            self.out.extend_from_slice(&short.to_be_bytes());
        } else {
            self.out.push(0x80 | 127);
            self.out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let mask = self.mask.to_be_bytes();
        self.out.extend_from_slice(&mask);
        self.out
            .extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
    }

    /// Write what waits; true once all of it is out.
    pub fn flush(&mut self, w: &mut impl io::Write) -> io::Result<bool> {
        let mut sent = 0;
        let result = loop {
            if sent == self.out.len() {
                break Ok(true);
            }
            match w.write(&self.out[sent..]) {
                Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
                Err(e) => break Err(e),
            }
        };
        self.out.drain(..sent);
        if self.out.is_empty() {
            self.out = Vec::new(); // an idle connection keeps no buffer
        }
        result
    }

    /// Read until `WouldBlock`, each whole text (or binary) message to
    /// `on_message`; pings are answered and a close is answered, both
    /// queued for [`flush`](Self::flush).
    /// `chunk` is the caller's read buffer (the swarm's one for all).
    pub fn read(
        &mut self,
        r: &mut impl io::Read,
        chunk: &mut [u8],
        mut on_message: impl FnMut(&[u8]),
    ) -> io::Result<Ended> {
        // Frames that came with the 101.
        if !self.partial.is_empty() {
            let mut first = std::mem::take(&mut self.partial);
            if self.frames(&mut first, &mut on_message)? == Ended::Yes {
                return Ok(Ended::Yes);
            }
        }
        // Bounded: each pass reads, and a socket drains.
        loop {
            let have = self.partial.len();
            let n = match r.read(chunk) {
                Ok(0) => return Ok(Ended::Yes),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Ended::No),
                Err(e) => return Err(e),
            };
            let ended = if have == 0 {
                // The usual case: whole frames straight from the chunk.
                self.frames_in(&chunk[..n], &mut on_message)?
            } else {
                let mut joined = std::mem::take(&mut self.partial);
                joined.extend_from_slice(&chunk[..n]);
                self.frames(&mut joined, &mut on_message)?
            };
            if ended == Ended::Yes {
                return Ok(Ended::Yes);
            }
        }
    }

    /// `frames` over a chunk, keeping only an unfinished tail (copied).
    fn frames_in(&mut self, bytes: &[u8], on_message: &mut impl FnMut(&[u8])) -> io::Result<Ended> {
        let (used, ended) = self.parse_all(bytes, on_message)?;
        if ended == Ended::No && used < bytes.len() {
            self.partial = bytes[used..].to_vec();
        }
        Ok(ended)
    }

    /// `frames` over a buffer of our own; its unfinished tail is kept.
    fn frames(
        &mut self,
        bytes: &mut Vec<u8>,
        on_message: &mut impl FnMut(&[u8]),
    ) -> io::Result<Ended> {
        let (used, ended) = self.parse_all(bytes, on_message)?;
        if ended == Ended::No && used < bytes.len() {
            bytes.drain(..used);
            self.partial = std::mem::take(bytes);
        }
        Ok(ended)
    }

    /// Every whole frame at the start of `bytes`: how many bytes they
    /// took, and whether the connection ended with one of them.
    fn parse_all(
        &mut self,
        bytes: &[u8],
        on_message: &mut impl FnMut(&[u8]),
    ) -> io::Result<(usize, Ended)> {
        let mut at = 0;
        while let Some(frame) = parse(&bytes[at..])? {
            at += frame.len;
            let payload = &bytes[at - frame.payload_len..at];
            if self.handle(frame, payload, on_message)? == Ended::Yes {
                return Ok((at, Ended::Yes));
            }
        }
        Ok((at, Ended::No))
    }

    fn handle(
        &mut self,
        frame: Header,
        payload: &[u8],
        on_message: &mut impl FnMut(&[u8]),
    ) -> io::Result<Ended> {
        match (frame.opcode, frame.fin) {
            // A whole text or binary message.
            (0x1 | 0x2, true) if self.fragments.is_none() => on_message(payload),
            // The first fragment of one.
            (0x1 | 0x2, false) if self.fragments.is_none() => {
                self.fragments = Some(payload.to_vec());
            }
            (0x0, fin) => {
                let Some(so_far) = self.fragments.as_mut() else {
                    return Err(protocol("a continuation frame with no message"));
                };
                if so_far.len() + payload.len() > MAX_MESSAGE {
                    return Err(protocol("a message over 16 MiB"));
                }
                so_far.extend_from_slice(payload);
                if fin {
                    let whole = self.fragments.take().unwrap_or_default();
                    on_message(&whole);
                }
            }
            (0x9, true) => self.queue(0xA, payload),
            (0xA, true) => {}
            (0x8, true) => {
                // Echo the status code, as RFC 6455 asks; then done.
                self.queue(0x8, &payload[..payload.len().min(2)]);
                return Ok(Ended::Yes);
            }
            _ => return Err(protocol("an unexpected frame")),
        }
        Ok(Ended::No)
    }
}

/// A frame's header: its opcode and FIN bit, how long it is in all, and
/// how much of that is payload (the payload ends the frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    fin: bool,
    opcode: u8,
    len: usize,
    payload_len: usize,
}

/// The frame at the start of `bytes`, if it has all arrived. A server's
/// frames are never masked; one that is, or that claims more than
/// [`MAX_MESSAGE`], breaks the protocol.
fn parse(bytes: &[u8]) -> io::Result<Option<Header>> {
    let [first, second, rest @ ..] = bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(protocol("a masked frame from the server"));
    }
    let (payload_len, header_len) = match second & 0x7F {
        126 => match rest {
            [a, b, ..] => (usize::from(u16::from_be_bytes([*a, *b])), 4),
            _ => return Ok(None),
        },
        127 => match rest.get(..8) {
            Some(len) => {
                let len = u64::from_be_bytes(len.try_into().unwrap_or_default());
                (usize::try_from(len).unwrap_or(usize::MAX), 10)
            }
            None => return Ok(None),
        },
        short => (usize::from(short), 2),
    };
    if payload_len > MAX_MESSAGE {
        return Err(protocol("a frame over 16 MiB"));
    }
    let len = header_len + payload_len;
    if bytes.len() < len {
        return Ok(None);
    }
    Ok(Some(Header {
        fin: first & 0x80 != 0,
        opcode: first & 0x0F,
        len,
        payload_len,
    }))
}

fn protocol(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("WebSocket: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server frame: FIN, `opcode`, unmasked.
    fn server_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xFFFF => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    /// A socket that hands out `input` `step` bytes at a time.
    struct Trickle {
        input: Vec<u8>,
        step: usize,
    }

    impl io::Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = self.step.min(buf.len()).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    fn unmask(frame: &[u8]) -> (u8, Vec<u8>) {
        assert_eq!(frame[1] & 0x80, 0x80, "a client's frames are masked");
        let (len, at) = match frame[1] & 0x7F {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            n => (usize::from(n), 2),
        };
        let mask = &frame[at..at + 4];
        let payload = frame[at + 4..at + 4 + len]
            .iter()
            .zip(mask.iter().cycle())
            .map(|(b, m)| b ^ m)
            .collect();
        (frame[0], payload)
    }

    /// Messages of every length encoding, one of them fragmented, arrive
    /// whole and in order however the socket splits them.
    #[test]
    fn messages_survive_any_split() {
        let long = vec![b'y'; 70_000];
        let mut input = server_frame(0x1, true, b"hi");
        input.extend(server_frame(0x1, true, &[b'x'; 300]));
        input.extend(server_frame(0x1, false, b"frag"));
        input.extend(server_frame(0xA, true, b"")); // a pong between fragments
        input.extend(server_frame(0x0, true, b"mented"));
        input.extend(server_frame(0x2, true, &long));
        for step in [1, 2, 3, 7, 100, 20_000, usize::MAX] {
            let mut frames = ClientFrames::new(Vec::new(), 7);
            let mut sock = Trickle {
                input: input.clone(),
                step,
            };
            let mut got: Vec<Vec<u8>> = Vec::new();
            assert_eq!(
                frames
                    .read(&mut sock, &mut [0u8; 4096], |m| got.push(m.to_vec()))
                    .unwrap(),
                Ended::No
            );
            assert_eq!(got.len(), 4, "step {step}");
            assert_eq!(got[0], b"hi");
            assert_eq!(got[1], vec![b'x'; 300]);
            assert_eq!(got[2], b"fragmented");
            assert_eq!(got[3], long);
            assert!(frames.partial.is_empty());
        }
    }

    #[test]
    fn frames_after_the_101_come_first() {
        let mut frames = ClientFrames::new(server_frame(0x1, true, b"early"), 7);
        let mut sock = Trickle {
            input: Vec::new(),
            step: 1,
        };
        let mut got = Vec::new();
        frames
            .read(&mut sock, &mut [0u8; 4096], |m| got.push(m.to_vec()))
            .unwrap();
        assert_eq!(got, [b"early".to_vec()]);
    }

    #[test]
    fn a_ping_is_answered_with_a_masked_pong_and_a_close_is_echoed() {
        let mut frames = ClientFrames::new(Vec::new(), 7);
        let mut input = server_frame(0x9, true, b"hb");
        input.extend(server_frame(0x8, true, &[0x03, 0xE8, b'b', b'y', b'e']));
        let mut sock = Trickle {
            input,
            step: usize::MAX,
        };
        assert_eq!(
            frames
                .read(&mut sock, &mut [0u8; 4096], |_| panic!("no message"))
                .unwrap(),
            Ended::Yes
        );
        let mut out = Vec::new();
        assert!(frames.flush(&mut out).unwrap());
        let (first, payload) = unmask(&out);
        assert_eq!((first, payload.as_slice()), (0x8A, &b"hb"[..]));
        let (first, payload) = unmask(&out[8..]);
        assert_eq!((first, payload.as_slice()), (0x88, &[0x03, 0xE8][..]));
    }

    #[test]
    fn our_text_frames_are_masked_with_a_changing_mask() {
        let mut frames = ClientFrames::new(Vec::new(), 7);
        frames.queue_text(b"hello");
        frames.queue_text(&[b'z'; 200]);
        let mut out = Vec::new();
        assert!(frames.flush(&mut out).unwrap());
        assert_eq!(unmask(&out), (0x81, b"hello".to_vec()));
        assert_eq!(unmask(&out[11..]), (0x81, vec![b'z'; 200]));
        assert_ne!(out[2..6], out[15..19], "each frame has its own mask");
    }

    #[test]
    fn broken_frames_end_the_connection() {
        for bad in [
            vec![0x81, 0x82, 1, 2, 3, 4, b'h', b'i'], // masked by the server
            [vec![0x81, 127], (1u64 << 40).to_be_bytes().to_vec()].concat(), // 1 TiB
            server_frame(0x0, true, b"orphan"),
            server_frame(0x3, true, b"reserved"),
        ] {
            let mut frames = ClientFrames::new(Vec::new(), 7);
            let mut sock = Trickle {
                input: bad.clone(),
                step: usize::MAX,
            };
            assert!(
                frames.read(&mut sock, &mut [0u8; 4096], |_| {}).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn end_of_stream_ends_it() {
        struct Eof;
        impl io::Read for Eof {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        let mut frames = ClientFrames::new(Vec::new(), 7);
        assert_eq!(
            frames.read(&mut Eof, &mut [0u8; 4096], |_| {}).unwrap(),
            Ended::Yes
        );
    }
}
