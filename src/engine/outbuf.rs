//! An outbound byte queue: a poll-engine client's output, and what
//! `pollchat connect` has not yet sent to the server.
//!
//! Outputs are appended as they happen during a tick and written with one
//! `write()` at the end of it, so ten broadcasts in one tick cost one
//! syscall. A queue holds a buffer only while it has bytes, so an idle client
//! holds none; drained buffers go back to a small shared [`BufferPool`], so a
//! busy client does not allocate and free its queue every tick.

use std::io::{self, Write};

/// Total capacity the pool keeps: enough for a busy room of a few hundred
/// clients, a fixed cost however many are connected.
const POOL_BYTES: usize = 256 * 1024;
/// Buffers the pool keeps at most (a join storm drains thousands of tiny ones).
const POOL_BUFFERS: usize = 1024;
/// Bigger buffers (a slow reader's backlog) are freed, not kept.
const POOLED_MAX: usize = 16 * 1024;

/// Drained queue buffers kept for reuse, bounded by `POOL_BYTES`.
#[derive(Debug, Default)]
pub struct BufferPool {
    /// Empty buffers with capacity, ready to be handed out.
    free: Vec<Vec<u8>>,
    /// Sum of their capacities.
    held: usize,
}

impl BufferPool {
    fn take(&mut self) -> Vec<u8> {
        let buf = self.free.pop().unwrap_or_default();
        self.held -= buf.capacity();
        buf
    }

    fn give(&mut self, mut buf: Vec<u8>) {
        let capacity = buf.capacity();
        if capacity == 0
            || capacity > POOLED_MAX
            || self.held + capacity > POOL_BYTES
            || self.free.len() == POOL_BUFFERS
        {
            return; // dropped: the memory goes back to the allocator
        }
        buf.clear();
        self.held += capacity;
        self.free.push(buf);
    }
}

#[derive(Debug, Default)]
pub struct OutBuf {
    /// Queued bytes; `buf[pos..]` is still to be written.
    buf: Vec<u8>,
    /// How much of `buf` the socket has already taken.
    pos: usize,
}

impl OutBuf {
    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn push(&mut self, bytes: &[u8], pool: &mut BufferPool) {
        if self.buf.capacity() == 0 {
            self.buf = pool.take();
        }
        // Reclaim the written prefix before growing, so a queue that is
        // always half-written does not creep upward.
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// One `write()` of what is pending (retried only on `Interrupted`).
    /// `WouldBlock` is returned as an error for the caller to treat as "later".
    pub fn write_once(&mut self, w: &mut impl Write, pool: &mut BufferPool) -> io::Result<usize> {
        let n = loop {
            match w.write(&self.buf[self.pos..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other?,
            }
        };
        if n == 0 && self.pending() > 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        self.pos += n;
        if self.pos == self.buf.len() {
            self.clear(pool);
        }
        Ok(n)
    }

    /// Drop everything; the buffer goes back to the pool.
    pub fn clear(&mut self, pool: &mut BufferPool) {
        pool.give(std::mem::take(&mut self.buf));
        self.pos = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `cap` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        cap: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let n = b.len().min(self.cap);
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_free_when_drained() {
        let mut q = OutBuf::default();
        let mut pool = BufferPool::default();
        let mut w = Trickle {
            got: Vec::new(),
            cap: 3,
        };
        q.push(b"hello\n", &mut pool);
        q.write_once(&mut w, &mut pool).unwrap();
        q.push(b"world\n", &mut pool);
        while q.pending() > 0 {
            q.write_once(&mut w, &mut pool).unwrap();
        }
        assert_eq!(w.got, b"hello\nworld\n");
        assert_eq!(q.buf.capacity(), 0, "a drained queue holds no buffer");
        // The drained buffer was kept, and the next push reuses it.
        assert_eq!(pool.free.len(), 1);
        q.push(b"again\n", &mut pool);
        assert!(pool.free.is_empty());
        assert!(q.buf.capacity() >= 12);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut pool = BufferPool::default();
        pool.give(Vec::with_capacity(POOLED_MAX + 1));
        assert!(pool.free.is_empty(), "a backlog-sized buffer is freed");
        for _ in 0..2 * POOL_BUFFERS {
            pool.give(Vec::with_capacity(64));
        }
        assert_eq!(pool.free.len(), POOL_BUFFERS);
        let mut big = BufferPool::default();
        for _ in 0..100 {
            big.give(Vec::with_capacity(POOLED_MAX));
        }
        assert_eq!(big.held, POOL_BYTES);
    }
}
