//! Probe lines and the tokens that identify them.
//!
//! Every probe carries `~B` + eight decimal digits + `~` + sixteen hex
//! digits + `~` (e.g. `~B00000042~00001a2b3c4d5e6f~`): its sequence number
//! and its send time, in nanoseconds of the monotonic clock that every
//! process on one machine shares. So it can be recognised whatever the
//! server wraps around it (`<user3> `, `[('127.0.0.1', 5000)] `, ...), and a
//! bench worker that did not send it still knows how old it is. A token cut
//! in half by a server that does not frame lines is lost.

use std::time::Instant;

/// `~B` + 8 digits + `~` + 16 hex digits + `~`.
pub const TOKEN_LEN: usize = 28;
/// The largest sequence number eight digits can carry.
pub const MAX_SEQ: u32 = 99_999_999;
/// Where the send time starts in a token.
const STAMP_AT: usize = 11;

/// One probe found in a line: which, and when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub seq: u32,
    /// Monotonic nanoseconds (see [`MonoClock`]).
    pub sent_ns: u64,
}

/// The machine's monotonic clock as numbers a line can carry.
///
/// `Instant` is `CLOCK_MONOTONIC` on Linux, but it cannot be printed. One
/// reading of that clock, taken beside an `Instant`, ties the two: after
/// that every `Instant` maps to nanoseconds and back by addition, in any
/// process on the machine.
#[derive(Debug, Clone, Copy)]
pub struct MonoClock {
    instant: Instant,
    ns: u64,
}

impl MonoClock {
    pub fn new() -> Self {
        let instant = Instant::now();
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let ns = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000
            + u64::try_from(ts.tv_nsec).unwrap_or(0);
        Self { instant, ns }
    }

    /// `at` as monotonic nanoseconds.
    pub fn stamp(&self, at: Instant) -> u64 {
        let after = at.saturating_duration_since(self.instant).as_nanos();
        let before = self.instant.saturating_duration_since(at).as_nanos();
        let after = u64::try_from(after).unwrap_or(u64::MAX);
        let before = u64::try_from(before).unwrap_or(u64::MAX);
        self.ns.saturating_add(after).saturating_sub(before)
    }

    /// Monotonic nanoseconds (from any process) as an `Instant` here.
    pub fn instant(&self, ns: u64) -> Instant {
        use std::time::Duration;
        if ns >= self.ns {
            self.instant + Duration::from_nanos(ns - self.ns)
        } else {
            self.instant
                .checked_sub(Duration::from_nanos(self.ns - ns))
                .unwrap_or(self.instant)
        }
    }
}

impl Default for MonoClock {
    fn default() -> Self {
        Self::new()
    }
}

/// Append one probe line for `seq`, sent at `sent_ns`, to `buf`: the token,
/// padding up to `payload` bytes (never shorter than the token), then `\n`.
pub fn write_probe(buf: &mut Vec<u8>, seq: u32, sent_ns: u64, payload: usize) {
    use std::io::Write;
    debug_assert!(seq <= MAX_SEQ);
    let _ = write!(buf, "~B{seq:08}~{sent_ns:016x}~");
    let pad = payload.saturating_sub(TOKEN_LEN);
    buf.extend(std::iter::repeat_n(b'x', pad));
    buf.push(b'\n');
}

/// Every probe in one received line, in order.
pub fn tokens_in(line: &[u8]) -> impl Iterator<Item = Seen> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while from + TOKEN_LEN <= line.len() {
            let at = from + memchr::memchr(b'~', &line[from..])?;
            from = at + 1;
            if let Some(seen) = parse_token(&line[at..]) {
                from = at + TOKEN_LEN;
                return Some(seen);
            }
        }
        None
    })
}

/// The probe if `bytes` starts with a whole token.
fn parse_token(bytes: &[u8]) -> Option<Seen> {
    let token = bytes.get(..TOKEN_LEN)?;
    if &token[..2] != b"~B" || token[STAMP_AT - 1] != b'~' || token[TOKEN_LEN - 1] != b'~' {
        return None;
    }
    let seq = token[2..STAMP_AT - 1].iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })?;
    let sent_ns = token[STAMP_AT..TOKEN_LEN - 1]
        .iter()
        .try_fold(0u64, |acc, &d| {
            char::from(d)
                .to_digit(16)
                .map(|v| (acc << 4) | u64::from(v))
        })?;
    Some(Seen { seq, sent_ns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn seqs(line: &[u8]) -> Vec<u32> {
        tokens_in(line).map(|s| s.seq).collect()
    }

    #[test]
    fn probe_has_token_stamp_padding_and_newline() {
        let mut buf = Vec::new();
        write_probe(&mut buf, 42, 0x1a2b, 32);
        assert_eq!(buf, b"~B00000042~0000000000001a2b~xxxx\n");
        buf.clear();
        write_probe(&mut buf, 7, u64::MAX, 0);
        assert_eq!(buf, b"~B00000007~ffffffffffffffff~\n");
        let found: Vec<Seen> = tokens_in(&buf).collect();
        assert_eq!(
            found,
            vec![Seen {
                seq: 7,
                sent_ns: u64::MAX
            }]
        );
    }

    #[test]
    fn token_is_found_whatever_the_prefix() {
        let mut line = b"<user3> ".to_vec();
        write_probe(&mut line, 42, 99, 40);
        let found: Vec<Seen> = tokens_in(&line).collect();
        assert_eq!(
            found,
            vec![Seen {
                seq: 42,
                sent_ns: 99
            }]
        );
        let mut line = b"\r[('127.0.0.1', 5)] ".to_vec();
        write_probe(&mut line, 1, 5, 0);
        line.pop();
        write_probe(&mut line, 2, 6, 0);
        assert_eq!(seqs(&line), vec![1, 2]);
    }

    #[test]
    fn broken_or_partial_tokens_are_not_deliveries() {
        assert_eq!(tokens_in(b"~B00000042~00000000").count(), 0);
        assert_eq!(
            tokens_in(b"~B0000[prefix] 0042~0000000000000001~").count(),
            0
        );
        assert_eq!(tokens_in(b"~B00000042~000000000000000g~").count(), 0);
        assert_eq!(
            seqs(b"~B0000004x~0000000000000000~ ~~B00000009~0000000000000000~"),
            vec![9]
        );
        assert_eq!(tokens_in(b"* user7 joined").count(), 0);
    }

    /// Two processes each tie the clock once, at different moments: a stamp
    /// taken in one names the same moment in the other (up to the few
    /// hundred nanoseconds between the two readings of each anchor).
    #[test]
    fn a_stamp_from_another_process_names_the_same_instant() {
        let sender = MonoClock::new();
        let sent = Instant::now();
        let stamp = sender.stamp(sent);
        std::thread::sleep(Duration::from_millis(5));
        let receiver = MonoClock::new();
        let seen = receiver.instant(stamp);
        let error = seen
            .saturating_duration_since(sent)
            .max(sent.saturating_duration_since(seen));
        assert!(error < Duration::from_millis(1), "{error:?}");
        // And both directions agree within one clock.
        assert_eq!(receiver.stamp(receiver.instant(stamp)), stamp);
        let earlier = sender.stamp(sent - Duration::from_millis(3));
        assert_eq!(stamp - earlier, 3_000_000);
    }
}
