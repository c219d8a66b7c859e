//! The room's fan-out log: every broadcast is appended here once, and every
//! client reads it through a cursor of its own (`out_queue.rs`).
//!
//! ```text
//! log:   [seg @0][seg @120][seg @4216][seg @4300] ...   positions only grow
//!          ^ tail (oldest byte kept)                ^ head (next byte)
//! client A's cursor ─────┘          client B's cursor ───────┘
//! ```
//!
//! Why not a queue per client: then a 2 MB paste read by 100 clients on slow
//! links is 200 MB, and a cap on each queue cuts off people who read promptly
//! through a small window. Here the paste is kept once, a client that is
//! behind costs only a cursor that has not moved, and the log keeps what the
//! slowest cursor still needs, up to `cap` bytes (Kafka's consumer offsets,
//! Redis Streams). A cursor that the cap leaves behind the tail belongs to a
//! client too slow to keep: its engine disconnects it.
//!
//! Positions count every byte appended, whoever it was for: a chat line is
//! for the rest of its speaker's room, and the speaker's cursor, like every
//! cursor of another room, simply steps over it. One log serves every room:
//! a broadcast is still appended once, and the cap (`--log-cap`) bounds the
//! memory of all of them together. Both engines use this type: the poll engine directly, the threaded
//! one behind a lock shared by the room and every writer.

use std::collections::VecDeque;

use super::rules;
use crate::app::{Recipients, RoomId};

/// Consecutive broadcasts to the same recipients share a segment up to this
/// size: a flood is then one `writev` slice per 16 KiB, not one per line,
/// while a segment stays small enough to be freed soon after it is read.
const SEGMENT_BYTES: usize = 16 * 1024;

/// Segment slots a drained log keeps allocated: a busy room's every tick
/// would otherwise free and allocate the ring again.
const KEPT_SEGMENTS: usize = 16;

/// One run of broadcast bytes, all for the same recipients.
#[derive(Debug)]
struct Segment {
    /// Position of `bytes[0]`.
    start: u64,
    /// `All`, a room, or a room but the speaker.
    to: Recipients,
    bytes: Vec<u8>,
}

impl Segment {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }
}

#[derive(Debug)]
pub(crate) struct FanoutLog {
    segments: VecDeque<Segment>,
    /// The position after the last byte appended.
    head: u64,
    /// Most bytes kept (`--log-cap`); past it the oldest segments go, even
    /// if some cursor still needs them.
    cap: usize,
    /// Bytes held in `segments` (their lengths; capacity is at most twice).
    retained: usize,
}

impl FanoutLog {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            segments: VecDeque::new(),
            head: 0,
            cap,
            retained: 0,
        }
    }

    /// Where the next broadcast will start: a newcomer's cursor, and the tag
    /// of a private line queued now (it follows everything before it).
    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    /// The oldest position still kept. A cursor before it has fallen off.
    pub(crate) fn tail(&self) -> u64 {
        self.segments.front().map_or(self.head, |s| s.start)
    }

    /// Bytes held for cursors that have not read them yet.
    pub(crate) fn retained(&self) -> usize {
        self.retained
    }

    /// Append one broadcast (`All`, `Room` or `RoomBut`; a reply to one
    /// client goes to its private queue instead).
    pub(crate) fn push(&mut self, to: Recipients, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        match self.segments.back_mut() {
            Some(last) if last.to == to && last.bytes.len() + bytes.len() <= SEGMENT_BYTES => {
                last.bytes.extend_from_slice(bytes);
            }
            _ => self.segments.push_back(Segment {
                start: self.head,
                to,
                bytes: bytes.to_vec(),
            }),
        }
        self.head += bytes.len() as u64;
        self.retained += bytes.len();
    }

    /// Forget what every cursor has passed (`oldest` is the lowest cursor,
    /// or `head()` when nobody is behind).
    pub(crate) fn trim_to(&mut self, oldest: u64) {
        while let Some(first) = self.segments.front() {
            if first.end() > oldest {
                break;
            }
            self.pop_front();
        }
        if self.segments.is_empty() {
            // Nobody is behind: what a burst grew goes back.
            self.segments.shrink_to(KEPT_SEGMENTS);
        }
    }

    /// Hold at most `cap` bytes: drop the oldest segments past it, but none
    /// that reaches past `written` (what some client not yet written to is
    /// owed: it is not too slow, just not served yet). Returns true if any
    /// went; cursors before `tail()` have then fallen off.
    pub(crate) fn enforce_cap(&mut self, written: u64) -> bool {
        let mut dropped = false;
        while self.retained > self.cap
            && self.segments.len() > 1
            && self.segments.front().is_some_and(|s| s.end() <= written)
        {
            self.pop_front();
            dropped = true;
        }
        dropped
    }

    fn pop_front(&mut self) {
        if let Some(seg) = self.segments.pop_front() {
            self.retained -= seg.bytes.len();
        }
    }

    /// The segments overlapping `[from, to)`, in order (none if it is empty).
    fn overlapping(&self, from: u64, to: u64) -> impl Iterator<Item = &Segment> {
        // A cursor before the tail lost bytes: its client must have been cut
        // off by the output limits, not served what is left.
        debug_assert!(
            from >= to || from >= self.tail(),
            "cursor {from} fell off the log"
        );
        let first = self.segments.partition_point(|s| s.end() <= from);
        self.segments
            .range(first..)
            .take_while(move |s| s.start < to && from < to)
    }

    /// What client `key` in `room` is owed of `[from, to)`, as slices of
    /// the shared segments, in order.
    pub(crate) fn owed(
        &self,
        key: usize,
        room: RoomId,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = &[u8]> {
        self.overlapping(from, to)
            .filter(move |s| rules::is_recipient(s.to, key, room))
            .map(move |s| {
                let lo = from.max(s.start) - s.start;
                let hi = to.min(s.end()) - s.start;
                &s.bytes[lo as usize..hi as usize]
            })
    }

    /// Move client `key`'s (in `room`) cursor from `from` over `written`
    /// bytes it was owed, stepping over what was not meant for it, never
    /// past `to`. Returns the new position and how many of `written` were
    /// used.
    pub(crate) fn advance(
        &self,
        key: usize,
        room: RoomId,
        from: u64,
        to: u64,
        written: usize,
    ) -> (u64, usize) {
        let mut pos = from;
        let mut left = written as u64;
        for s in self.overlapping(from, to) {
            let start = pos.max(s.start);
            let end = to.min(s.end());
            if !rules::is_recipient(s.to, key, room) {
                pos = end;
                continue;
            }
            let take = left.min(end - start);
            left -= take;
            pos = start + take;
            if pos < end {
                return (pos, written - left as usize);
            }
        }
        // Everything owed in the range was taken (or there was none).
        (to.max(pos), written - left as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ClientId;

    const LOBBY: RoomId = RoomId::LOBBY;

    fn all_but(key: usize) -> Recipients {
        Recipients::RoomBut(LOBBY, ClientId(key))
    }

    fn owed(log: &FanoutLog, key: usize, from: u64) -> Vec<u8> {
        log.owed(key, LOBBY, from, log.head())
            .flatten()
            .copied()
            .collect()
    }

    #[test]
    fn a_broadcast_is_kept_once_and_the_speaker_steps_over_it() {
        let mut log = FanoutLog::new(1 << 20);
        log.push(all_but(1), b"a1\n");
        log.push(all_but(1), b"a2\n");
        log.push(Recipients::All, b"all\n");
        assert_eq!(log.segments.len(), 2, "one speaker's run shares a segment");
        assert_eq!(owed(&log, 1, 0), b"all\n");
        assert_eq!(owed(&log, 2, 0), b"a1\na2\nall\n");
        // The speaker's cursor moves over its own lines with nothing written.
        assert_eq!(log.advance(1, LOBBY, 0, log.head(), 0), (6, 0));
        assert_eq!(log.advance(1, LOBBY, 0, log.head(), 4), (10, 4));
    }

    /// Rooms share the log: each cursor is owed only its own room's lines
    /// (and what is for everyone), and steps over the rest.
    #[test]
    fn a_cursor_is_owed_only_its_rooms_broadcasts() {
        let rust = RoomId(7);
        let mut log = FanoutLog::new(1 << 20);
        log.push(Recipients::Room(rust), b"rust\n");
        log.push(all_but(1), b"lobby\n");
        log.push(Recipients::RoomBut(rust, ClientId(2)), b"mine\n");
        log.push(Recipients::All, b"all\n");
        let in_rust = |key| -> Vec<u8> {
            log.owed(key, rust, 0, log.head())
                .flatten()
                .copied()
                .collect()
        };
        assert_eq!(in_rust(2), b"rust\nall\n");
        assert_eq!(in_rust(3), b"rust\nmine\nall\n");
        assert_eq!(owed(&log, 3, 0), b"lobby\nall\n");
        // Room 7's reader moves over the lobby's line without writing it.
        assert_eq!(log.advance(2, rust, 0, log.head(), 5), (log.head() - 4, 5));
    }

    #[test]
    fn a_cursor_can_stop_mid_segment_and_resume() {
        let mut log = FanoutLog::new(1 << 20);
        log.push(Recipients::All, b"hello\n");
        log.push(all_but(3), b"world\n");
        let (pos, used) = log.advance(2, LOBBY, 0, log.head(), 8);
        assert_eq!((pos, used), (8, 8));
        assert_eq!(owed(&log, 2, pos), b"rld\n");
        // A newcomer at the head is owed only what follows.
        let newcomer = log.head();
        log.push(all_but(3), b"next\n");
        assert_eq!(owed(&log, 9, newcomer), b"next\n");
        // `to` bounds what is owed: a client that left hears no more.
        assert_eq!(log.owed(2, LOBBY, pos, newcomer).flatten().count(), 4);
        assert_eq!(log.advance(2, LOBBY, pos, newcomer, 100), (newcomer, 4));
    }

    #[test]
    fn trimming_keeps_what_the_slowest_cursor_needs() {
        let mut log = FanoutLog::new(1 << 20);
        for i in 0..10 {
            log.push(all_but(i), &[b'x'; 100]);
        }
        log.trim_to(450);
        assert_eq!(log.tail(), 400, "the segment holding 450 stays");
        assert_eq!(log.retained(), 600);
        log.trim_to(log.head());
        assert_eq!(log.retained(), 0);
        assert_eq!(log.tail(), log.head());
        assert!(
            log.segments.capacity() <= KEPT_SEGMENTS,
            "a drained log holds little"
        );
    }

    #[test]
    fn the_cap_drops_the_oldest_and_leaves_slow_cursors_behind() {
        let mut log = FanoutLog::new(250);
        for i in 0..5 {
            log.push(all_but(i), &[b'x'; 100]);
        }
        // Nothing some client has not been written yet goes.
        assert!(log.enforce_cap(100));
        assert_eq!((log.tail(), log.retained()), (100, 400));
        assert!(log.enforce_cap(300));
        assert_eq!(log.tail(), 300);
        assert!(!log.enforce_cap(300));
        assert!(!log.enforce_cap(log.head()));
        assert_eq!(log.retained(), 200);
        // One segment bigger than the cap is still kept: it is the newest.
        let mut small = FanoutLog::new(10);
        small.push(Recipients::All, &[b'y'; 50]);
        assert!(!small.enforce_cap(small.head()));
        assert_eq!(small.retained(), 50);
    }

    #[test]
    fn segments_are_bounded_in_size() {
        let mut log = FanoutLog::new(usize::MAX);
        let line = [b'z'; 1000];
        for _ in 0..40 {
            log.push(Recipients::All, &line);
        }
        assert!(log.segments.iter().all(|s| s.bytes.len() <= SEGMENT_BYTES));
        assert_eq!(owed(&log, 0, 0).len(), 40_000);
    }
}
