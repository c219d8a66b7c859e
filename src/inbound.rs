//! One client's input pipeline, shared by both engines: framing, flood
//! control and sanitising, in that order. Pure; `now` is passed in.
//!
//! The engine pushes whatever it read, then pulls [`Step`]s until it gets
//! `NeedMore` (read again) or `Throttled` (stop reading until then).

use std::time::Instant;

use crate::flood::TokenBucket;
use crate::framing::{Frame, LineFramer};
use crate::sanitize::sanitize;

/// What to do next with a client's input.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// A sanitised, non-empty line for the App.
    Line(String),
    /// A line went over `--max-line` and is being dropped; tell the sender.
    TooLong,
    /// Out of flood tokens: don't read or process more before this instant.
    Throttled(Instant),
    /// Everything buffered is handled; read more from the socket.
    NeedMore,
    /// The peer closed its side and every line it sent has been handed out.
    End,
}

/// Framer + token bucket for one client.
#[derive(Debug)]
pub struct Inbound {
    framer: LineFramer,
    bucket: TokenBucket,
    /// The peer sent FIN: once the buffer drains, deliver the unterminated
    /// tail and report `End`.
    eof: bool,
}

impl Inbound {
    pub fn new(max_line: usize, rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            framer: LineFramer::new(max_line),
            bucket: TokenBucket::new(rate, burst, now),
            eof: false,
        }
    }

    /// Bytes just read from the socket.
    pub fn push(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
    }

    /// The socket reported end of stream.
    pub fn push_eof(&mut self) {
        self.eof = true;
    }

    pub fn is_eof(&self) -> bool {
        self.eof
    }

    /// Nothing buffered, no line being dropped, no pause pending: this state
    /// is the same as a fresh `Inbound`, so an engine may free it (an idle
    /// client then holds no input state at all) and make a new one later.
    pub fn is_idle(&self, now: Instant) -> bool {
        self.framer.is_empty() && !self.eof && self.bucket.is_full(now)
    }

    /// Bytes held but not yet turned into lines.
    pub fn buffered(&self) -> usize {
        self.framer.buffered()
    }

    /// The next thing to do. Call until `NeedMore`, `Throttled` or `End`.
    pub fn next_step(&mut self, now: Instant) -> Step {
        loop {
            if self.framer.buffered() == 0 {
                return if self.eof { Step::End } else { Step::NeedMore };
            }
            if let Err(ready_at) = self.bucket.ready(now) {
                return Step::Throttled(ready_at);
            }
            let frame = match self.framer.next_frame() {
                Some(frame) => frame,
                None if self.eof => match self.framer.finish() {
                    Some(frame) => frame,
                    None => return Step::End,
                },
                None => return Step::NeedMore,
            };
            match frame {
                Frame::TooLong(_) => return Step::TooLong,
                Frame::Line(raw) => {
                    let text = sanitize(&raw);
                    if !text.trim().is_empty() {
                        self.bucket.spend();
                        return Step::Line(text);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn drain(inb: &mut Inbound, now: Instant) -> Vec<Step> {
        let mut steps = Vec::new();
        loop {
            let s = inb.next_step(now);
            let stop = matches!(s, Step::NeedMore | Step::Throttled(_) | Step::End);
            steps.push(s);
            if stop {
                return steps;
            }
        }
    }

    #[test]
    fn empty_and_blank_lines_are_ignored() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(100, 0, 1, t0);
        inb.push(b"\n  \r\n\x1b[0m\nhi\n");
        assert_eq!(
            drain(&mut inb, t0),
            vec![Step::Line("hi".into()), Step::NeedMore]
        );
    }

    #[test]
    fn throttled_lines_wait_and_none_are_lost() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(100, 10, 2, t0);
        inb.push(b"a\nb\nc\n");
        let steps = drain(&mut inb, t0);
        assert_eq!(steps[..2], [Step::Line("a".into()), Step::Line("b".into())]);
        let Step::Throttled(at) = steps[2] else {
            panic!("{steps:?}")
        };
        assert_eq!(at, t0 + Duration::from_millis(100));
        assert_eq!(
            drain(&mut inb, at),
            vec![Step::Line("c".into()), Step::NeedMore]
        );
    }

    #[test]
    fn idle_only_when_nothing_is_pending() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(4, 10, 1, t0);
        assert!(inb.is_idle(t0));
        inb.push(b"abc");
        assert!(!inb.is_idle(t0), "partial line buffered");
        inb.push(b"\n");
        assert_eq!(inb.next_step(t0), Step::Line("abc".into()));
        assert!(!inb.is_idle(t0), "bucket not yet refilled");
        assert!(inb.is_idle(t0 + Duration::from_millis(100)));
        inb.push(b"toolongline");
        assert_eq!(inb.next_step(t0 + Duration::from_secs(1)), Step::TooLong);
        assert!(
            !inb.is_idle(t0 + Duration::from_secs(2)),
            "still dropping the long line"
        );
    }

    #[test]
    fn eof_delivers_tail_then_ends() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(100, 0, 1, t0);
        inb.push(b"one\ntwo");
        inb.push_eof();
        assert_eq!(
            drain(&mut inb, t0),
            vec![
                Step::Line("one".into()),
                Step::Line("two".into()),
                Step::End
            ]
        );
    }

    #[test]
    fn too_long_is_reported_and_next_line_flows() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(3, 0, 1, t0);
        inb.push(b"abcdefg\nok\n");
        assert_eq!(
            drain(&mut inb, t0),
            vec![Step::TooLong, Step::Line("ok".into()), Step::NeedMore]
        );
    }
}
