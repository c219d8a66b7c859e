//! The line framer: bytes in, complete lines out. Pure, no I/O.
//!
//! TCP is a byte stream: one `read()` may hold half a line or fifty. The
//! framer keeps the unfinished tail and hands out whole lines. Both `\n` and
//! `\r\n` end a line. A line longer than the limit is discarded up to its
//! newline and reported once as [`Frame::TooLong`] with its first `max_line`
//! bytes (the server drops them, the client shows them cut), so a peer that
//! never sends a newline cannot grow memory. The buffer is freed whenever it drains,
//! so an idle client holds no heap memory here.

/// What the framer hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// A complete line without its line end (raw bytes, not yet sanitised).
    Line(Vec<u8>),
    /// A line passed the limit; it is being dropped up to its newline.
    /// Carries the line's first `max_line` bytes, for callers that show it cut.
    TooLong(Vec<u8>),
}

/// Splits a byte stream into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineFramer {
    /// Bytes received but not yet handed out. Empty (unallocated) when idle.
    buf: Vec<u8>,
    /// How much of `buf` has already been handed out; compacted lazily.
    start: usize,
    /// How far into `buf` we already searched for `\n`, so a slow trickle of
    /// bytes is not rescanned from the start each time.
    scanned: usize,
    /// True while dropping the rest of an over-long line.
    discarding: bool,
    /// The longest line (without line end) we accept.
    max_line: usize,
}

impl LineFramer {
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            max_line,
        }
    }

    /// Append received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.reset_buffer();
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Nothing held and no over-long line being dropped.
    pub fn is_empty(&self) -> bool {
        self.buffered() == 0 && !self.discarding
    }

    /// Bytes held that have not been handed out yet.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete line or `TooLong` report; `None` means "need more
    /// bytes", which is normal, not an error.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            let pending = &self.buf[self.start..];
            let Some(nl) = pending[self.scanned..].iter().position(|&b| b == b'\n') else {
                return self.check_overflow();
            };
            let end = self.scanned + nl;
            let was_discarding = self.discarding;
            let line = if was_discarding {
                Vec::new()
            } else {
                let mut line = &pending[..end];
                if line.last() == Some(&b'\r') {
                    line = &line[..line.len() - 1];
                }
                line.to_vec()
            };
            self.consume(end + 1);
            self.discarding = false;
            if was_discarding {
                continue;
            }
            if line.len() > self.max_line {
                let mut head = line;
                head.truncate(self.max_line);
                return Some(Frame::TooLong(head));
            }
            return Some(Frame::Line(line));
        }
    }

    /// The peer closed: hand out an unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        let frame = match self.next_frame() {
            Some(frame) => return Some(frame),
            None if self.discarding || self.buffered() == 0 => None,
            None => {
                let mut line = self.buf[self.start..].to_vec();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(Frame::Line(line))
            }
        };
        self.reset_buffer();
        self.discarding = false;
        frame
    }

    /// No newline in what we hold: if it is already too long, drop it and
    /// report once, handing out its head in the buffer we already hold.
    fn check_overflow(&mut self) -> Option<Frame> {
        let pending = self.buffered();
        // +1 leaves room for a `\r` that may precede the coming `\n`.
        if pending > self.max_line + 1 {
            let report = !self.discarding;
            self.discarding = true;
            let mut head = std::mem::take(&mut self.buf);
            head.drain(..self.start);
            head.truncate(self.max_line);
            self.reset_buffer();
            return report.then_some(Frame::TooLong(head));
        }
        self.scanned = pending;
        if self.buffered() == 0 {
            self.reset_buffer();
        }
        None
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
        if self.start == self.buf.len() {
            self.reset_buffer();
        }
    }

    /// Forget everything and give the memory back.
    fn reset_buffer(&mut self) {
        self.buf = Vec::new();
        self.start = 0;
        self.scanned = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(f: &mut LineFramer) -> Vec<Frame> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    fn line(s: &str) -> Frame {
        Frame::Line(s.as_bytes().to_vec())
    }

    #[test]
    fn splits_on_lf_and_crlf() {
        let mut f = LineFramer::new(100);
        f.push(b"one\ntwo\r\nthr");
        assert_eq!(lines(&mut f), vec![line("one"), line("two")]);
        f.push(b"ee\n");
        assert_eq!(lines(&mut f), vec![line("three")]);
        assert_eq!(f.buffered(), 0);
    }

    #[test]
    fn byte_at_a_time_gives_same_lines() {
        let mut f = LineFramer::new(100);
        let mut got = Vec::new();
        for b in b"ab\r\ncd\n\nef\n" {
            f.push(&[*b]);
            got.extend(lines(&mut f));
        }
        assert_eq!(got, vec![line("ab"), line("cd"), line(""), line("ef")]);
    }

    #[test]
    fn overlong_line_is_reported_once_and_dropped_to_newline() {
        let mut f = LineFramer::new(4);
        f.push(b"abcdefgh");
        assert_eq!(lines(&mut f), vec![Frame::TooLong(b"abcd".to_vec())]);
        f.push(b"ijklmnop");
        assert_eq!(lines(&mut f), vec![]);
        f.push(b"qr\nok\n");
        assert_eq!(lines(&mut f), vec![line("ok")]);
    }

    #[test]
    fn overlong_line_with_newline_in_same_chunk() {
        let mut f = LineFramer::new(4);
        f.push(b"abcdef\nok\n");
        assert_eq!(
            lines(&mut f),
            vec![Frame::TooLong(b"abcd".to_vec()), line("ok")]
        );
    }

    #[test]
    fn exactly_max_line_with_crlf_is_accepted() {
        let mut f = LineFramer::new(4);
        f.push(b"abcd\r");
        assert_eq!(lines(&mut f), vec![]);
        f.push(b"\n");
        assert_eq!(lines(&mut f), vec![line("abcd")]);
    }

    #[test]
    fn memory_stays_bounded_without_newline() {
        let mut f = LineFramer::new(2048);
        let chunk = vec![b'x'; 4096];
        let mut reports = 0;
        for _ in 0..1000 {
            f.push(&chunk);
            reports += lines(&mut f).len();
            assert!(f.buffered() <= 2048 + chunk.len());
        }
        assert_eq!(reports, 1);
    }

    #[test]
    fn finish_yields_unterminated_tail() {
        let mut f = LineFramer::new(100);
        f.push(b"a\nhi");
        assert_eq!(f.finish(), Some(line("a")));
        assert_eq!(f.finish(), Some(line("hi")));
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn finish_drops_tail_of_discarded_line() {
        let mut f = LineFramer::new(2);
        f.push(b"abcdef");
        assert_eq!(f.next_frame(), Some(Frame::TooLong(b"ab".to_vec())));
        assert_eq!(f.finish(), None);
    }

    #[test]
    fn drained_framer_holds_no_allocation() {
        let mut f = LineFramer::new(100);
        f.push(b"hello\n");
        assert_eq!(lines(&mut f), vec![line("hello")]);
        assert_eq!(f.buf.capacity(), 0);
    }
}
