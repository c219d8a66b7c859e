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
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            // Reclaim the lines already handed out before growing: a steady
            // stream whose reads end mid-line never drains the buffer, and
            // would otherwise keep every byte it ever sent. Moving at most
            // as many bytes as were handed out keeps this O(1) per byte.
            self.buf.drain(..self.start);
            self.start = 0;
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
            // The rest of a line already reported as too long yields nothing.
            let frame = (!self.discarding).then(|| self.frame_of(&pending[..end]));
            self.consume(end + 1);
            self.discarding = false;
            if frame.is_some() {
                return frame;
            }
        }
    }

    /// The peer closed: hand out an unterminated last line, if any.
    pub fn finish(&mut self) -> Option<Frame> {
        let frame = match self.next_frame() {
            Some(frame) => return Some(frame),
            None if self.discarding || self.buffered() == 0 => None,
            // Judged like any other line: a tail of `max_line + 1` bytes is
            // not yet "too long" while waiting for a `\r\n`, but it is now.
            None => Some(self.frame_of(&self.buf[self.start..])),
        };
        self.reset_buffer();
        self.discarding = false;
        frame
    }

    /// One line (without its `\n`) as a frame: its `\r` dropped, and cut to
    /// a `TooLong` head if it is over the limit.
    fn frame_of(&self, line: &[u8]) -> Frame {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.len() > self.max_line {
            Frame::TooLong(line[..self.max_line].to_vec())
        } else {
            Frame::Line(line.to_vec())
        }
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

    /// Regression: the buffer was only reclaimed when it drained, so a
    /// steady stream whose reads always ended mid-line kept every byte it
    /// had ever sent (1 MB of heap after a 15 MB flood in 4 KiB reads).
    #[test]
    fn memory_stays_bounded_when_reads_never_end_on_a_line_end() {
        let mut f = LineFramer::new(2048);
        let text = "a line that is split across reads\n".repeat(1000);
        let mut handed_out = 0;
        // Odd-sized reads: one ends exactly on a line end only by chance.
        for read in text.as_bytes().chunks(333).cycle().take(50_000) {
            f.push(read);
            handed_out += lines(&mut f).len();
            assert!(f.buf.capacity() <= 2 * (2048 + 333), "{}", f.buf.capacity());
        }
        assert!(handed_out > 400_000);
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

    /// What the framer must hand out for `bytes`, by a plain definition:
    /// split on `\n`, drop one trailing `\r`, and cut anything over
    /// `max_line` down to a `TooLong` head. A last segment without `\n` is
    /// judged the same way (that is what `finish` delivers).
    fn reference_frames(bytes: &[u8], max_line: usize) -> Vec<Frame> {
        let mut segments: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if segments.last().is_some_and(|tail| tail.is_empty()) {
            segments.pop(); // the input ended with `\n`, or was empty
        }
        segments
            .into_iter()
            .map(|segment| {
                let line = segment.strip_suffix(b"\r").unwrap_or(segment);
                if line.len() > max_line {
                    Frame::TooLong(line[..max_line].to_vec())
                } else {
                    Frame::Line(line.to_vec())
                }
            })
            .collect()
    }

    /// Feed `bytes` in the given chunk sizes (cycled), taking frames after
    /// each push and at the end, while checking the memory bound.
    fn frames_fed_in_chunks(bytes: &[u8], sizes: &[usize], max_line: usize) -> Vec<Frame> {
        let mut f = LineFramer::new(max_line);
        let mut got = Vec::new();
        let mut rest = bytes;
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (chunk, tail) = rest.split_at(size.min(rest.len()));
            rest = tail;
            f.push(chunk);
            got.extend(lines(&mut f));
            // Whatever is held is at most one line (plus its `\r`) and the
            // last chunk: a peer that never sends `\n` cannot grow it.
            assert!(f.buffered() <= max_line + 1 + chunk.len());
        }
        got.extend(std::iter::from_fn(|| f.finish()));
        got
    }

    /// Bytes rich in line ends, so short lines, CRLF and over-long lines
    /// all turn up; any other byte value too.
    fn stream() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        prop::collection::vec(
            prop_oneof![
                4 => Just(b'\n'),
                3 => Just(b'\r'),
                10 => b'a'..=b'e',
                2 => any::<u8>(),
            ],
            0..300,
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Any stream, split into chunks any way, gives the frames the plain
        /// definition gives (so: the same as feeding it whole), no line
        /// over the limit, and no panic.
        #[test]
        fn chunking_never_changes_the_frames(
            bytes in stream(),
            sizes in proptest::collection::vec(1usize..40, 1..20),
            max_line in 1usize..12,
        ) {
            let want = reference_frames(&bytes, max_line);
            let whole = frames_fed_in_chunks(&bytes, &[bytes.len().max(1)], max_line);
            let chunked = frames_fed_in_chunks(&bytes, &sizes, max_line);
            proptest::prop_assert_eq!(&whole, &want);
            proptest::prop_assert_eq!(&chunked, &want);
            for frame in &chunked {
                let (Frame::Line(l) | Frame::TooLong(l)) = frame;
                proptest::prop_assert!(l.len() <= max_line);
            }
        }
    }

    /// Regression (found by `chunking_never_changes_the_frames`): a last
    /// line of `max_line + 1` bytes without a newline was handed out whole
    /// at end of stream, one byte over the limit.
    #[test]
    fn finish_refuses_a_tail_one_byte_over_the_limit() {
        let mut f = LineFramer::new(4);
        f.push(b"abcde");
        assert_eq!(f.next_frame(), None, "may still be `abcd\\r`");
        assert_eq!(f.finish(), Some(Frame::TooLong(b"abcd".to_vec())));
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
