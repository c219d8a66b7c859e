//! One client's input pipeline, shared by both engines: framing, flood
//! control and sanitising, in that order. Pure; `now` is passed in.
//!
//! The engine pushes whatever it read, then pulls [`Step`]s until it gets
//! `NeedMore` (read again) or `Throttled` (stop reading until then).

use std::time::Instant;

use crate::flood::{BURST_BYTES, BYTES_PER_LINE, TokenBucket};
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

/// Framer + flood buckets for one client.
#[derive(Debug)]
pub struct Inbound {
    framer: LineFramer,
    /// Lines: `--rate` per second after a burst of `--burst`.
    lines: TokenBucket,
    /// Bytes: `BYTES_PER_LINE` per line of `--rate`, after `BURST_BYTES`.
    bytes: TokenBucket,
    /// The peer sent FIN: once the buffer drains, deliver the unterminated
    /// tail and report `End`.
    eof: bool,
}

impl Inbound {
    pub fn new(max_line: usize, rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            framer: LineFramer::new(max_line),
            lines: TokenBucket::new(rate, burst, now),
            bytes: TokenBucket::new(rate.saturating_mul(BYTES_PER_LINE), BURST_BYTES, now),
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
        self.framer.is_empty() && !self.eof && self.lines.is_full(now) && self.bytes.is_full(now)
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
            let ready = self.lines.ready(now).and_then(|()| self.bytes.ready(now));
            if let Err(ready_at) = ready {
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
                        self.lines.spend(1);
                        self.bytes
                            .spend(u32::try_from(raw.len()).unwrap_or(u32::MAX));
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

    /// Long lines run out of bytes before they run out of lines: a paste
    /// of 40 lines of 2,000 bytes goes through `BURST_BYTES` at once (the
    /// line that crosses it included), and the rest at the byte rate.
    #[test]
    fn a_paste_of_long_lines_is_paced_by_its_bytes() {
        let t0 = Instant::now();
        let mut inb = Inbound::new(2048, 10, 50, t0);
        let line = [b'x'; 1999];
        for _ in 0..40 {
            inb.push(&line);
            inb.push(b"\n");
        }
        let steps = drain(&mut inb, t0);
        // A line's cost is its length without the newline.
        let at_once = (BURST_BYTES as usize).div_ceil(line.len());
        assert_eq!(steps.len(), at_once + 1);
        let Step::Throttled(at) = steps[at_once] else {
            panic!("{:?}", steps.last())
        };
        // In debt by 1,999 * 33 - 65,536 bytes, repaid (to one whole token)
        // at 10 KiB/s.
        let debt = (line.len() * at_once) as f64 - f64::from(BURST_BYTES) + 1.0;
        let wait = Duration::from_secs_f64(debt / f64::from(10 * BYTES_PER_LINE));
        assert!(at >= t0 + wait && at <= t0 + wait + Duration::from_micros(1));
        let mut delivered = at_once;
        let mut now = at;
        for _ in 0..40 {
            let steps = drain(&mut inb, now);
            delivered += steps.iter().filter(|s| matches!(s, Step::Line(_))).count();
            match steps.last() {
                Some(Step::Throttled(next)) => now = *next,
                _ => break,
            }
        }
        assert_eq!(delivered, 40, "paced, never dropped");
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
