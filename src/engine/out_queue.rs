//! One client's output: its cursor into the shared [`FanoutLog`], the room
//! whose broadcasts it hears, and a small private queue for what is meant
//! for it alone (the welcome, replies, errors). Both engines keep one per
//! client.
//!
//! Each private line is tagged with the log position it was queued at, so
//! it goes out after every broadcast said before it and before every one
//! said after: a reply never overtakes the chat that preceded it. A write is
//! one gather of slices straight from the shared segments and the private
//! lines, in that interleaved order ([`OutQueue::gather`]); what the socket
//! takes moves the cursor and the queue on ([`OutQueue::advance`]), and what
//! it refuses stays where it is: nothing is copied per client.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::time::{Duration, Instant};

use super::fanout_log::FanoutLog;
use crate::app::RoomId;

/// Room moves a client may have pending, owed lines of rooms it left.
pub(crate) const MAX_MOVES: usize = 16;

/// Slices gathered into one `writev` at most. A tick rarely owes a client
/// more than a few; a client owed more gets the rest on its next write.
pub(crate) const MAX_SLICES: usize = 64;

/// A line (or run of lines) for this client alone.
#[derive(Debug)]
struct Private {
    /// The log position it follows.
    at: u64,
    bytes: Vec<u8>,
    /// How much of `bytes` the socket has taken.
    sent: usize,
}

#[derive(Debug)]
pub(crate) struct OutQueue {
    /// The next log byte this client has not been given.
    cursor: u64,
    /// Where its share of the log ends: the head when it left the room (it
    /// still hears what was said before), `u64::MAX` while it is in it.
    until: u64,
    /// The room whose broadcasts it is owed (`Output::Enter` changes it).
    room: RoomId,
    /// Rooms it left while still owed some of their lines, oldest first:
    /// `(at, room)` means the log bytes before `at` (and after the entry
    /// before it) are judged by `room`, the one it was in then. Boxed and
    /// only while some are pending, like `private`: the box keeps an idle
    /// client's share at one pointer, where a bare `Vec` would cost three.
    #[expect(
        clippy::box_collection,
        reason = "one pointer per idle client, not a Vec's three"
    )]
    moves: Option<Box<Vec<(u64, RoomId)>>>,
    /// Its private lines; boxed and only while there are some, so an idle
    /// client pays one pointer for them.
    private: Option<Box<PrivateQueue>>,
    /// Since when it has been owed output its socket would not take; `None`
    /// while it keeps up. Behind this long without progress is a stall.
    behind_since: Option<Instant>,
}

#[derive(Debug, Default)]
struct PrivateQueue {
    /// Oldest first.
    lines: VecDeque<Private>,
    /// Their unsent bytes, for `--sendq` and the memory budget.
    bytes: usize,
}

/// How a write went: what the caller does next depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wrote {
    /// Everything owed was written.
    Drained,
    /// The socket refused some: wait until it is writable.
    Refused,
    /// The socket took all it was offered, but more is owed than one write
    /// carries (`MAX_SLICES`): write again without waiting for an event.
    More,
}

/// What one write offers: the slices, and how many bytes they hold.
pub(crate) struct Gathered<'a> {
    pub slices: [IoSlice<'a>; MAX_SLICES],
    pub count: usize,
    pub bytes: usize,
}

impl OutQueue {
    /// A newcomer: owed only what is broadcast from `head` on.
    pub(crate) fn new(head: u64) -> Self {
        Self {
            cursor: head,
            until: u64::MAX,
            room: RoomId::LOBBY,
            moves: None,
            private: None,
            behind_since: None,
        }
    }

    pub(crate) fn cursor(&self) -> u64 {
        self.cursor
    }

    pub(crate) fn private_bytes(&self) -> usize {
        self.private.as_ref().map_or(0, |p| p.bytes)
    }

    fn private_lines(&self) -> impl Iterator<Item = &Private> {
        self.private.iter().flat_map(|p| p.lines.iter())
    }

    /// How far behind the head it is, in log bytes (counting those not
    /// meant for it), plus its private queue: how much it is costing.
    pub(crate) fn lag(&self, log: &FanoutLog) -> u64 {
        self.end(log).saturating_sub(self.cursor) + self.private_bytes() as u64
    }

    /// Since when it has been behind without progress, if it is.
    pub(crate) fn behind_since(&self) -> Option<Instant> {
        self.behind_since
    }

    /// Behind, with no progress for `timeout`.
    pub(crate) fn stalled(&self, now: Instant, timeout: Duration) -> bool {
        self.behind_since
            .is_some_and(|since| now.saturating_duration_since(since) >= timeout)
    }

    fn end(&self, log: &FanoutLog) -> u64 {
        self.until.min(log.head())
    }

    /// Queue bytes for this client alone, after everything broadcast so far.
    pub(crate) fn push_private(&mut self, log: &FanoutLog, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let at = log.head();
        let private = self.private.get_or_insert_with(Box::default);
        private.bytes += bytes.len();
        match private.lines.back_mut() {
            Some(last) if last.at == at => last.bytes.extend_from_slice(bytes),
            _ => private.lines.push_back(Private {
                at,
                bytes: bytes.to_vec(),
                sent: 0,
            }),
        }
    }

    /// From now on it hears `room`. What it is still owed of its old room
    /// stays owed, in place: the move is remembered at the log's head, so
    /// the bytes before it are judged by the old room and those after by
    /// the new one. Nothing is copied, and nothing counts against
    /// `--sendq`. A client that types `/join` has nearly always read
    /// everything, and then nothing is remembered either. False if it has
    /// [`MAX_MOVES`] moves pending already (it changes rooms far faster
    /// than it reads): its engine cuts it off as too slow.
    pub(crate) fn enter(&mut self, log: &FanoutLog, key: usize, room: RoomId) -> bool {
        // Step over what is not for it: a prompt reader is then at the end.
        self.advance(log, key, 0);
        if self.cursor < self.end(log) {
            let moves = self.moves.get_or_insert_with(Box::default);
            if moves.len() >= MAX_MOVES {
                return false;
            }
            moves.push((log.head(), self.room));
        }
        self.room = room;
        true
    }

    /// The stretches of `[from, to)`, each with the room it is judged by.
    fn stretches(&self, from: u64, to: u64) -> impl Iterator<Item = (u64, u64, RoomId)> + '_ {
        let mut start = from;
        let moves = self.moves.iter().flat_map(|m| m.iter().copied());
        moves
            .chain([(u64::MAX, self.room)])
            .filter_map(move |(at, room)| {
                if start >= to || at <= start {
                    return None;
                }
                let stretch = (start, at.min(to), room);
                start = stretch.1;
                Some(stretch)
            })
    }

    /// What it is owed of `[from, to)`, as slices of the shared segments.
    fn owed<'a>(
        &'a self,
        log: &'a FanoutLog,
        key: usize,
        from: u64,
        to: u64,
    ) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.stretches(from, to)
            .flat_map(move |(from, to, room)| log.owed(key, room, from, to))
    }

    /// [`FanoutLog::advance`] from the cursor towards `bound`, stretch by
    /// stretch (see `moves`).
    fn advance_in_log(
        &self,
        log: &FanoutLog,
        key: usize,
        bound: u64,
        mut written: usize,
    ) -> (u64, usize) {
        let mut used = 0;
        for (from, to, room) in self.stretches(self.cursor, bound) {
            let (pos, took) = log.advance(key, room, from, to, written);
            written -= took;
            used += took;
            if pos < to {
                return (pos, used);
            }
        }
        (self.cursor.max(bound), used)
    }

    /// It left the room: it is owed what was said until now, and no more.
    pub(crate) fn stop_at_head(&mut self, log: &FanoutLog) {
        self.until = self.until.min(log.head());
    }

    /// It is being cut off: nothing more will be written.
    pub(crate) fn clear(&mut self, log: &FanoutLog) {
        self.private = None;
        self.until = self.cursor.min(log.head());
        self.behind_since = None;
    }

    /// Nothing is owed: neither log bytes meant for it nor private lines.
    pub(crate) fn is_drained(&self, log: &FanoutLog, key: usize) -> bool {
        self.private.is_none()
            && self
                .owed(log, key, self.cursor, self.end(log))
                .next()
                .is_none()
    }

    /// The slices of one write, in order: log bytes up to each private
    /// line's position, the line, and so on, then the rest of the log.
    pub(crate) fn gather<'a>(&'a self, log: &'a FanoutLog, key: usize) -> Gathered<'a> {
        let mut g = Gathered {
            slices: [IoSlice::new(&[]); MAX_SLICES],
            count: 0,
            bytes: 0,
        };
        self.in_order(log, key, MAX_SLICES, |bytes| {
            g.slices[g.count] = IoSlice::new(bytes);
            g.count += 1;
            g.bytes += bytes.len();
        });
        g
    }

    /// The first `most` slices of what is owed, in the order they are
    /// due: log bytes up to each private line's position, the line, and
    /// so on, then the rest of the log.
    fn in_order<'a>(
        &'a self,
        log: &'a FanoutLog,
        key: usize,
        most: usize,
        mut f: impl FnMut(&'a [u8]),
    ) {
        let mut count = 0;
        let mut add = |bytes: &'a [u8]| {
            if count < most {
                count += 1;
                f(bytes);
            }
        };
        let mut from = self.cursor;
        for p in self.private_lines() {
            let upto = p.at.min(self.end(log)).max(from);
            self.owed(log, key, from, upto).for_each(&mut add);
            add(&p.bytes[p.sent..]);
            from = upto;
        }
        self.owed(log, key, from, self.end(log)).for_each(&mut add);
    }

    /// What is owed, if it is one slice of the log and nothing private.
    fn only_slice<'a>(&'a self, log: &'a FanoutLog, key: usize) -> Option<&'a [u8]> {
        if self.private.is_some() {
            return None;
        }
        let mut owed = self.owed(log, key, self.cursor, self.end(log));
        let first = owed.next()?;
        owed.next().is_none().then_some(first)
    }

    /// The socket took `written` bytes of what [`OutQueue::gather`]
    /// offered: move on by that much. With nothing written, this still
    /// steps the cursor over broadcasts that were not meant for it.
    pub(crate) fn advance(&mut self, log: &FanoutLog, key: usize, mut written: usize) {
        let progressed = written > 0;
        let end = self.end(log);
        loop {
            let front_at = self.private_lines().next().map(|p| p.at);
            let bound = front_at.map_or(end, |at| at.min(end).max(self.cursor));
            let (pos, used) = self.advance_in_log(log, key, bound, written);
            self.cursor = pos;
            written -= used;
            if pos < bound {
                break; // stopped inside the log
            }
            let Some(front) = self.private.as_mut().and_then(|p| p.lines.front_mut()) else {
                break;
            };
            let take = written.min(front.bytes.len() - front.sent);
            front.sent += take;
            written -= take;
            let line_done = front.sent == front.bytes.len();
            if let Some(private) = self.private.as_mut() {
                private.bytes -= take;
                if line_done {
                    private.lines.pop_front();
                }
                if private.lines.is_empty() {
                    self.private = None;
                }
            }
            if !line_done {
                break;
            }
        }
        // Moves the cursor has passed are settled.
        let cursor = self.cursor;
        if let Some(moves) = self.moves.as_mut() {
            moves.retain(|&(at, _)| at > cursor);
            if moves.is_empty() {
                self.moves = None;
            }
        }
        if progressed || self.is_drained(log, key) {
            self.behind_since = None;
        }
    }

    /// One write of what is owed to `w` (a non-blocking socket): gather,
    /// write once, move on by what was taken. `WouldBlock` is nothing
    /// taken; `Interrupted` is retried. Returns the bytes written and how
    /// the write went.
    pub(crate) fn write_to(
        &mut self,
        log: &FanoutLog,
        key: usize,
        w: &mut impl Write,
        now: Instant,
    ) -> io::Result<(usize, Wrote)> {
        let (written, offered) = match self.only_slice(log, key) {
            // The usual tick: one broadcast owed and nothing of its own. No
            // gathering: a plain `send()` is also cheaper than `writev`.
            Some(bytes) => (write_once(|| w.write(bytes))?, bytes.len()),
            None => {
                let g = self.gather(log, key);
                let slices = &g.slices[..g.count];
                let written = match g.count {
                    0 => 0,
                    1 => write_once(|| w.write(&slices[0]))?,
                    _ => write_once(|| w.write_vectored(slices))?,
                };
                (written, g.bytes)
            }
        };
        self.advance(log, key, written);
        let wrote = if written < offered {
            self.behind_since.get_or_insert(now);
            Wrote::Refused
        } else if self.is_drained(log, key) {
            Wrote::Drained
        } else {
            Wrote::More
        };
        Ok((written, wrote))
    }
}

/// Run one non-empty write to a non-blocking socket: retried on
/// `Interrupted`; `WouldBlock` is 0 bytes taken (they stay owed); a write
/// of 0 bytes is an error (the peer can take no more, ever).
pub(crate) fn write_once(mut write: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
    loop {
        match write() {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{ClientId, Recipients};

    fn all_but(key: usize) -> Recipients {
        Recipients::RoomBut(RoomId::LOBBY, ClientId(key))
    }

    /// Write what is gathered into `out`, at most `cap` bytes.
    fn write(
        q: &mut OutQueue,
        log: &FanoutLog,
        key: usize,
        cap: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let g = q.gather(log, key);
        let mut left = cap;
        for s in &g.slices[..g.count] {
            let n = s.len().min(left);
            out.extend_from_slice(&s[..n]);
            left -= n;
        }
        let written = cap - left;
        q.advance(log, key, written);
        written
    }

    #[test]
    fn private_lines_keep_their_place_among_broadcasts() {
        let mut log = FanoutLog::new(1 << 20);
        let mut q = OutQueue::new(log.head());
        log.push(Recipients::All, b"one\n");
        q.push_private(&log, b"reply\n");
        log.push(all_but(5), b"two\n");
        log.push(all_but(1), b"mine\n");
        q.push_private(&log, b"err\n");
        let mut out = Vec::new();
        // Trickle three bytes at a time: order must hold across every cut.
        while write(&mut q, &log, 1, 3, &mut out) > 0 {}
        assert_eq!(out, b"one\nreply\ntwo\nerr\n");
        assert!(q.is_drained(&log, 1));
        assert_eq!(q.cursor(), log.head());
        assert_eq!(q.private_bytes(), 0);
        assert!(q.private.is_none(), "a drained queue holds nothing");
    }

    #[test]
    fn a_client_that_left_hears_only_what_was_said_before() {
        let mut log = FanoutLog::new(1 << 20);
        let mut q = OutQueue::new(log.head());
        log.push(Recipients::All, b"before\n");
        q.push_private(&log, b"* Bye!\n");
        q.stop_at_head(&log);
        log.push(Recipients::All, b"after\n");
        let mut out = Vec::new();
        write(&mut q, &log, 2, usize::MAX, &mut out);
        assert_eq!(out, b"before\n* Bye!\n");
        assert!(q.is_drained(&log, 2));
    }

    /// `/join`: what it was owed from its old room comes first, in order
    /// with its replies, then only the new room's lines; nothing copied.
    #[test]
    fn entering_a_room_keeps_what_was_owed_then_hears_the_new_room() {
        let rust = RoomId(3);
        let mut log = FanoutLog::new(1 << 20);
        let mut q = OutQueue::new(log.head());
        log.push(all_but(2), b"lobby1\n");
        q.push_private(&log, b"reply\n");
        log.push(Recipients::Room(rust), b"rust-before\n");
        log.push(all_but(2), b"lobby2\n");
        assert!(q.enter(&log, 1, rust));
        assert_eq!(q.private_bytes(), b"reply\n".len(), "nothing copied");
        log.push(all_but(2), b"lobby-after\n");
        log.push(Recipients::RoomBut(rust, ClientId(2)), b"rust-after\n");
        assert!(
            q.enter(&log, 1, RoomId::LOBBY),
            "a second move while behind"
        );
        log.push(all_but(2), b"lobby-again\n");
        let mut out = Vec::new();
        while write(&mut q, &log, 1, 5, &mut out) > 0 {}
        assert_eq!(out, b"lobby1\nreply\nlobby2\nrust-after\nlobby-again\n");
        assert!(q.is_drained(&log, 1));
        assert!(q.moves.is_none(), "settled moves are forgotten");
        // Caught up, or owed only what is not for it: nothing to remember.
        log.push(Recipients::Room(rust), b"not mine\n");
        assert!(q.enter(&log, 1, rust));
        assert!(q.moves.is_none());
    }

    /// One that moves far faster than it reads is cut off, not indulged.
    #[test]
    fn moves_pending_are_bounded() {
        let mut log = FanoutLog::new(1 << 20);
        let mut q = OutQueue::new(log.head());
        for i in 0..MAX_MOVES as u32 {
            log.push(Recipients::Room(q.room), b"owed\n");
            assert!(q.enter(&log, 1, RoomId(i + 1)));
        }
        log.push(Recipients::Room(q.room), b"owed\n");
        assert!(!q.enter(&log, 1, RoomId(99)));
        let mut out = Vec::new();
        while write(&mut q, &log, 1, 3, &mut out) > 0 {}
        assert_eq!(
            out,
            b"owed\n".repeat(MAX_MOVES + 1),
            "each room's line, once"
        );
    }

    #[test]
    fn lag_fall_off_and_stall() {
        let mut log = FanoutLog::new(100);
        let mut q = OutQueue::new(log.head());
        let t0 = Instant::now();
        for i in 0..3 {
            log.push(all_but(i + 10), &[b'x'; 60]);
        }
        assert_eq!(q.lag(&log), 180);
        let mut out = Vec::new();
        write(&mut q, &log, 1, 10, &mut out);
        q.behind_since = Some(t0);
        assert!(!q.stalled(t0, Duration::from_secs(30)));
        assert!(q.stalled(t0 + Duration::from_secs(30), Duration::from_secs(30)));
        // Progress resets the stall clock.
        q.advance(&log, 1, 5);
        assert!(!q.stalled(t0 + Duration::from_secs(60), Duration::from_secs(30)));
        assert_eq!(q.lag(&log), 165);
        // The cap drops what it was still owed: it has fallen off.
        assert!(log.enforce_cap(log.head()));
        assert!(q.cursor() < log.tail(), "the cap left it behind");
    }

    #[test]
    fn one_write_carries_at_most_max_slices() {
        let mut log = FanoutLog::new(usize::MAX);
        let mut q = OutQueue::new(log.head());
        for i in 0..MAX_SLICES + 5 {
            // Alternating speakers: every line is its own segment.
            log.push(all_but(100 + i % 2), b"l\n");
        }
        let g = q.gather(&log, 1);
        assert_eq!(g.count, MAX_SLICES);
        let bytes = g.bytes;
        q.advance(&log, 1, bytes);
        assert_eq!(q.lag(&log), 10);
    }
}
