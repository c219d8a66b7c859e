//! A threaded-engine client's output queue: the bytes the kernel has not
//! taken yet, as a queue of chunks rather than one byte buffer.
//!
//! The App encodes each output once, as an `Arc<[u8]>`. A large one is
//! queued by reference, so a 1 KB line broadcast to a thousand clients is one
//! allocation held by a thousand queues, not a thousand copies; its memory
//! is counted once and freed when the last recipient has sent it. A small one
//! is copied, back to back with its neighbours, into a chunk of this queue's
//! own, so a queue of short lines costs about its bytes, not a queue slot
//! and a refcount per line.
//!
//! The writer hands the front chunks to one vectored `sendmsg` and advances
//! by what the kernel took. `len()` is what `--sendq` limits: bytes not yet
//! taken by the kernel, exactly like the poll engine's `OutBuf::pending`.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

/// Outputs at least this long are shared, not copied. Below it, a queue
/// slot and refcount traffic per line would cost about as much as the copy;
/// above it, copies to every recipient are what fill memory.
const SHARE_FROM: usize = 256;
/// Small outputs are appended to one copied chunk up to this size, then a
/// new chunk starts: a chunk's spare capacity stays small, and a part-sent
/// chunk keeps little already-sent data alive.
const COPY_CHUNK: usize = 4096;

/// One run of queued bytes.
#[derive(Debug)]
enum Chunk {
    /// A large output, shared with every other queue it went to.
    Shared(Arc<[u8]>),
    /// Small outputs, copied back to back.
    Copied(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(bytes) => bytes,
            Chunk::Copied(bytes) => bytes,
        }
    }
}

/// Bytes queued for one client, oldest first. Unallocated when empty.
#[derive(Debug, Default)]
pub(crate) struct ChunkQueue {
    /// The chunks, oldest first.
    chunks: VecDeque<Chunk>,
    /// How much of the front chunk the kernel has already taken.
    front_sent: usize,
    /// Bytes in `chunks` not yet taken: kept as a sum so `--sendq` checks
    /// are O(1).
    len: usize,
}

impl ChunkQueue {
    /// Bytes waiting for the kernel.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append one output: shared if large, copied if small.
    pub(crate) fn push(&mut self, bytes: &Arc<[u8]>) {
        if bytes.is_empty() {
            return;
        }
        self.len += bytes.len();
        if bytes.len() >= SHARE_FROM {
            self.chunks.push_back(Chunk::Shared(bytes.clone()));
            return;
        }
        if let Some(Chunk::Copied(tail)) = self.chunks.back_mut()
            && tail.len() + bytes.len() <= COPY_CHUNK
        {
            tail.extend_from_slice(bytes);
        } else {
            self.chunks.push_back(Chunk::Copied(bytes.to_vec()));
        }
    }

    /// Point `slices` at the unsent bytes, front first; returns how many
    /// were filled (at most `slices.len()`).
    pub(crate) fn slices<'a>(&'a self, slices: &mut [IoSlice<'a>]) -> usize {
        let mut skip = self.front_sent;
        let mut filled = 0;
        for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
            *slot = IoSlice::new(&chunk.bytes()[skip..]);
            skip = 0;
            filled += 1;
        }
        filled
    }

    /// The kernel took `n` bytes from the front: drop them, and free the
    /// queue's memory once it is empty.
    pub(crate) fn advance(&mut self, mut n: usize) {
        debug_assert!(n <= self.len, "advanced past the queue");
        self.len -= n;
        while n > 0 {
            let Some(front) = self.chunks.front() else {
                break;
            };
            let left = front.bytes().len() - self.front_sent;
            if n < left {
                self.front_sent += n;
                break;
            }
            n -= left;
            self.front_sent = 0;
            self.chunks.pop_front();
        }
        if self.chunks.is_empty() {
            *self = Self::default();
        }
    }

    /// Put `front` (taken out of this queue earlier, part-sent) back before
    /// whatever was queued since.
    pub(crate) fn put_back(&mut self, mut front: ChunkQueue) {
        if front.is_empty() {
            return;
        }
        debug_assert_eq!(self.front_sent, 0, "only the front may be part-sent");
        front.chunks.append(&mut self.chunks);
        front.len += self.len;
        *self = front;
    }

    /// Memory held for chunk slots (not the bytes), for tests.
    #[cfg(test)]
    pub(crate) fn slots_allocated(&self) -> usize {
        self.chunks.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(text: &str) -> Arc<[u8]> {
        Arc::from(text.as_bytes())
    }

    /// Everything still queued, front first, through `slices`.
    fn unsent(q: &ChunkQueue) -> Vec<u8> {
        let mut slices = [IoSlice::new(&[]); 64];
        let n = q.slices(&mut slices);
        slices[..n].iter().flat_map(|s| s.iter().copied()).collect()
    }

    #[test]
    fn small_outputs_are_copied_together_and_large_ones_shared() {
        let mut q = ChunkQueue::default();
        let big: Arc<[u8]> = Arc::from(vec![b'x'; SHARE_FROM]);
        q.push(&out("a\n"));
        q.push(&out("b\n"));
        q.push(&big);
        q.push(&out("c\n"));
        assert_eq!(q.chunks.len(), 3, "a+b copied together, big shared, c");
        assert_eq!(Arc::strong_count(&big), 2, "queued by reference");
        assert_eq!(q.len(), 6 + SHARE_FROM);
        let mut want = b"a\nb\n".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"c\n");
        assert_eq!(unsent(&q), want);
    }

    #[test]
    fn copied_chunks_stop_growing_at_the_chunk_size() {
        let mut q = ChunkQueue::default();
        let line = out(&"y".repeat(SHARE_FROM - 1));
        for _ in 0..3 * COPY_CHUNK / line.len() {
            q.push(&line);
        }
        assert!(q.chunks.iter().all(|c| c.bytes().len() <= COPY_CHUNK));
        assert!(q.chunks.len() >= 3);
    }

    #[test]
    fn advance_keeps_order_across_part_sent_chunks_and_frees_when_drained() {
        let mut q = ChunkQueue::default();
        let big: Arc<[u8]> = Arc::from(vec![b'x'; SHARE_FROM]);
        q.push(&out("hello\n"));
        q.push(&big);
        q.advance(3);
        assert_eq!(&unsent(&q)[..3], b"lo\n");
        q.advance(3 + 10);
        assert_eq!(unsent(&q), vec![b'x'; SHARE_FROM - 10]);
        q.push(&out("end\n"));
        q.advance(SHARE_FROM - 10);
        assert_eq!(unsent(&q), b"end\n");
        q.advance(4);
        assert!(q.is_empty());
        assert_eq!(q.slots_allocated(), 0, "an empty queue holds memory");
        assert_eq!(Arc::strong_count(&big), 1, "the shared chunk was released");
    }

    #[test]
    fn put_back_goes_before_what_was_queued_meanwhile() {
        let mut q = ChunkQueue::default();
        q.push(&out("first\n"));
        let mut taken = std::mem::take(&mut q);
        taken.advance(2);
        q.push(&out("second\n"));
        q.put_back(taken);
        assert_eq!(q.len(), 4 + 7);
        assert_eq!(unsent(&q), b"rst\nsecond\n");
        // Nothing left to put back: the queue is unchanged.
        q.put_back(ChunkQueue::default());
        assert_eq!(unsent(&q), b"rst\nsecond\n");
    }

    #[test]
    fn slices_stop_at_the_space_given() {
        let mut q = ChunkQueue::default();
        for _ in 0..3 {
            q.push(&Arc::from(vec![b'z'; SHARE_FROM]));
        }
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(q.slices(&mut slices), 2);
    }
}
