//! This tick's broadcasts, kept once for everyone (poll engine).
//!
//! A chat line goes to every other client. Copying it into a hundred
//! per-client queues costs a hundred copies and a hundred buffers, most of
//! them freed a moment later when the sockets take the bytes. Instead the
//! poll engine keeps the tick's broadcasts here, once, and at the end of the
//! tick gives each client's socket one `writev` that points straight at
//! them (`OutBuf::write_with`). Only what a socket refuses is copied into
//! that client's own queue.
//!
//! A client that joins mid-tick must not receive what was said before it
//! arrived, so each client holds a *cursor*: the first segment it is owed.
//! Taking a cursor seals the last segment, so anything said afterwards goes
//! into a new segment, which the newcomer is owed.

use super::rules;
use crate::app::Recipients;

/// Consecutive broadcasts to the same recipients (one speaker's lines, say)
/// share a segment, so a flood is one slice per recipient.
#[derive(Debug)]
struct Segment {
    /// `All`, or `AllBut` the speaker.
    to: Recipients,
    bytes: Vec<u8>,
}

/// Segments a tick keeps its allocation for; a busier tick's extra slots
/// are freed when it ends.
const KEPT_SEGMENTS: usize = 64;

#[derive(Debug, Default)]
pub struct Broadcasts {
    segments: Vec<Segment>,
    /// A cursor points past the last segment: it must not grow any more.
    sealed: bool,
}

impl Broadcasts {
    /// The cursor of a client that gets no more broadcasts (it has left).
    pub const OWED_NOTHING: u32 = u32::MAX;

    /// Queue `bytes` for every open client among `to` (`All` or `AllBut`;
    /// a reply to one client goes to its own queue instead).
    pub fn push(&mut self, to: Recipients, bytes: &[u8]) {
        match self.segments.last_mut() {
            Some(last) if !self.sealed && last.to == to => {
                last.bytes.extend_from_slice(bytes);
            }
            _ => {
                self.segments.push(Segment {
                    to,
                    bytes: bytes.to_vec(),
                });
                self.sealed = false;
            }
        }
    }

    /// A cursor for a client that is owed only what is broadcast from now on.
    pub fn cursor(&mut self) -> u32 {
        self.sealed = true;
        // A tick's segments are bounded by its outputs, far below u32::MAX.
        u32::try_from(self.segments.len()).unwrap_or(u32::MAX)
    }

    /// What client `key` is owed from `cursor` on, in order. A cursor past
    /// the end (such as [`Broadcasts::OWED_NOTHING`]) is owed nothing.
    pub fn owed(&self, key: usize, cursor: u32) -> impl Iterator<Item = &[u8]> + Clone {
        let from = self.segments.get(cursor as usize..).unwrap_or_default();
        from.iter()
            .filter(move |s| rules::is_recipient(s.to, key))
            .map(|s| s.bytes.as_slice())
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The tick is over: every cursor starts again at 0.
    pub fn clear(&mut self) {
        self.segments.clear();
        self.segments.shrink_to(KEPT_SEGMENTS);
        self.sealed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::ClientId;

    fn all_but(key: usize) -> Recipients {
        Recipients::AllBut(ClientId(key))
    }

    fn owed(b: &Broadcasts, key: usize, cursor: u32) -> Vec<u8> {
        b.owed(key, cursor).flatten().copied().collect()
    }

    #[test]
    fn the_speaker_is_left_out_and_runs_share_a_segment() {
        let mut b = Broadcasts::default();
        b.push(all_but(1), b"a1\n");
        b.push(all_but(1), b"a2\n");
        b.push(Recipients::All, b"all\n");
        assert_eq!(b.segments.len(), 2);
        assert_eq!(owed(&b, 1, 0), b"all\n");
        assert_eq!(owed(&b, 2, 0), b"a1\na2\nall\n");
    }

    #[test]
    fn a_newcomer_gets_only_what_follows_its_cursor() {
        let mut b = Broadcasts::default();
        b.push(all_but(1), b"before\n");
        let newcomer = b.cursor();
        // Same speaker again: without the seal this would join "before".
        b.push(all_but(1), b"after\n");
        assert_eq!(owed(&b, 7, newcomer), b"after\n");
        assert_eq!(owed(&b, 7, 0), b"before\nafter\n");
        assert_eq!(owed(&b, 7, Broadcasts::OWED_NOTHING), b"");
    }

    #[test]
    fn clearing_starts_a_new_tick() {
        let mut b = Broadcasts::default();
        for key in 0..2 * KEPT_SEGMENTS {
            b.push(all_but(key), b"x\n");
        }
        b.cursor();
        b.clear();
        assert!(b.is_empty());
        assert!(b.segments.capacity() <= KEPT_SEGMENTS);
        b.push(Recipients::All, b"next\n");
        assert_eq!(owed(&b, 0, 0), b"next\n");
    }
}
