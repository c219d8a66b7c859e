//! An outbound byte queue: a poll-engine client's output, and what
//! `pollchat connect` has not yet sent to the server.
//!
//! Outputs are appended as they happen during a tick and written with one
//! `write()` at the end of it, so ten broadcasts in one tick cost one
//! syscall. A queue holds a buffer only while it has bytes, so an idle client
//! holds none; drained buffers go back to a small shared [`BufferPool`], so a
//! busy client does not allocate and free its queue every tick.

use std::io::{self, IoSlice, Write};

/// Total capacity the pool keeps: enough for a busy room of a few hundred
/// clients, a fixed cost however many are connected.
const POOL_BYTES: usize = 256 * 1024;
/// Buffers the pool keeps at most (a join storm drains thousands of tiny ones).
const POOL_BUFFERS: usize = 1024;
/// Bigger buffers (a slow reader's backlog) are freed, not kept.
const POOLED_MAX: usize = 16 * 1024;

/// Slices gathered into one `writev` at most; further ones wait for the
/// next write (a tick rarely has more than a few broadcasts per client).
const MAX_SLICES: usize = 64;

/// The outcome of [`OutBuf::write_with`].
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// This many bytes were written; the rest, if any, is queued.
    Written(usize),
    /// This many bytes were written: all one `writev` could carry (see
    /// `MAX_SLICES`), but more is queued. The socket took everything, so no
    /// WRITABLE event will say it has room: the caller must write again.
    NotAllOffered(usize),
    /// What the socket did not take would pass the cap; not queued.
    OverCap,
}

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

    /// One `write()` (a gather `writev`) of what is pending followed by
    /// `extra`, in that order; whatever the socket does not take of `extra`
    /// is copied into this queue. `extra` is how the poll engine hands a
    /// client the tick's shared broadcasts without copying them first.
    ///
    /// `WouldBlock` counts as nothing written. If what would be left queued
    /// passes `cap`, nothing of `extra` is copied and `OverCap` is returned:
    /// the caller decides what an overfull queue means.
    pub fn write_with<'a, I>(
        &mut self,
        w: &mut impl Write,
        extra: I,
        cap: usize,
        pool: &mut BufferPool,
    ) -> io::Result<Flushed>
    where
        I: Iterator<Item = &'a [u8]> + Clone,
    {
        let offered = self.pending() + extra.clone().map(<[u8]>::len).sum::<usize>();
        if offered == 0 {
            return Ok(Flushed::Written(0));
        }
        let (written, gathered) = match (self.pending(), only(extra.clone())) {
            // The usual tick: nothing left over, one broadcast owed. No
            // gathering: the plain `send()` path is also cheaper than `writev`.
            (0, Some(bytes)) => (send(|| w.write(bytes))?, bytes.len()),
            _ => self.send_gathered(w, extra.clone())?,
        };
        // Our own bytes went first; then skip what was taken of `extra` and
        // queue the rest.
        let own = written.min(self.pending());
        self.pos += own;
        if offered - written > cap {
            return Ok(Flushed::OverCap);
        }
        let mut taken = written - own;
        for bytes in extra {
            if taken >= bytes.len() {
                taken -= bytes.len();
            } else {
                self.push(&bytes[taken..], pool);
                taken = 0;
            }
        }
        if self.pending() == 0 {
            self.clear(pool);
        } else if written == gathered {
            return Ok(Flushed::NotAllOffered(written));
        }
        Ok(Flushed::Written(written))
    }

    /// One `writev` of what is pending followed by `extra` (at most
    /// `MAX_SLICES` slices; the caller queues the rest). Returns the bytes
    /// written and the bytes offered to the socket.
    fn send_gathered<'a>(
        &self,
        w: &mut impl Write,
        extra: impl Iterator<Item = &'a [u8]>,
    ) -> io::Result<(usize, usize)> {
        let mut slices = [IoSlice::new(&[]); MAX_SLICES];
        let mut count = 0;
        if self.pending() > 0 {
            slices[0] = IoSlice::new(&self.buf[self.pos..]);
            count = 1;
        }
        for bytes in extra.filter(|b| !b.is_empty()) {
            if count == MAX_SLICES {
                break;
            }
            slices[count] = IoSlice::new(bytes);
            count += 1;
        }
        let gathered = slices[..count].iter().map(|s| s.len()).sum();
        let written = send(|| match count {
            1 => w.write(&slices[0]),
            _ => w.write_vectored(&slices[..count]),
        })?;
        Ok((written, gathered))
    }

    /// Drop everything; the buffer goes back to the pool.
    pub fn clear(&mut self, pool: &mut BufferPool) {
        pool.give(std::mem::take(&mut self.buf));
        self.pos = 0;
    }
}

/// The only item `it` yields, if it yields exactly one.
fn only<'a>(mut it: impl Iterator<Item = &'a [u8]>) -> Option<&'a [u8]> {
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Run one non-empty write: retried on `Interrupted`; `WouldBlock` is 0
/// bytes taken (the caller queues them for later).
fn send(mut write: impl FnMut() -> io::Result<usize>) -> io::Result<usize> {
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

    fn trickle(cap: usize) -> Trickle {
        Trickle {
            got: Vec::new(),
            cap,
        }
    }

    /// Write everything queued, one call at a time.
    fn drain(q: &mut OutBuf, w: &mut impl Write, pool: &mut BufferPool) {
        while q.pending() > 0 {
            q.write_with(w, std::iter::empty(), usize::MAX, pool)
                .unwrap();
        }
    }

    #[test]
    fn partial_writes_keep_order_and_free_when_drained() {
        let mut q = OutBuf::default();
        let mut pool = BufferPool::default();
        let mut w = trickle(3);
        q.push(b"hello\n", &mut pool);
        let written = q.write_with(&mut w, std::iter::empty(), usize::MAX, &mut pool);
        assert_eq!(written.unwrap(), Flushed::Written(3));
        q.push(b"world\n", &mut pool);
        drain(&mut q, &mut w, &mut pool);
        assert_eq!(w.got, b"hello\nworld\n");
        assert_eq!(q.buf.capacity(), 0, "a drained queue holds no buffer");
        // The drained buffer was kept, and the next push reuses it.
        assert_eq!(pool.free.len(), 1);
        q.push(b"again\n", &mut pool);
        assert!(pool.free.is_empty());
        assert!(q.buf.capacity() >= 12);
    }

    #[test]
    fn extra_slices_follow_the_queue_and_only_what_is_refused_is_copied() {
        let mut q = OutBuf::default();
        let mut pool = BufferPool::default();
        let mut w = trickle(5);
        q.push(b"ab", &mut pool);
        let extra: [&[u8]; 2] = [b"cde", b"fgh"];
        let written = q.write_with(&mut w, extra.iter().copied(), usize::MAX, &mut pool);
        // Trickle's default `write_vectored` takes the first slice only.
        assert_eq!(written.unwrap(), Flushed::Written(2));
        assert_eq!(q.pending(), 6, "both extra slices were refused and queued");
        drain(&mut q, &mut w, &mut pool);
        assert_eq!(w.got, b"abcdefgh");

        // An empty queue with everything taken copies nothing at all.
        let mut roomy = trickle(100);
        let extra: [&[u8]; 1] = [b"xyz"];
        let written = q.write_with(&mut roomy, extra.iter().copied(), usize::MAX, &mut pool);
        assert_eq!(written.unwrap(), Flushed::Written(3));
        assert_eq!(q.buf.capacity(), 0);
    }

    #[test]
    fn a_rest_over_the_cap_is_not_queued() {
        let mut q = OutBuf::default();
        let mut pool = BufferPool::default();
        let mut w = trickle(2);
        let extra: [&[u8]; 1] = [b"0123456789"];
        let flushed = q.write_with(&mut w, extra.iter().copied(), 7, &mut pool);
        assert_eq!(flushed.unwrap(), Flushed::OverCap);
        assert_eq!(q.pending(), 0);
        let flushed = q.write_with(&mut w, extra.iter().copied(), 8, &mut pool);
        assert_eq!(flushed.unwrap(), Flushed::Written(2));
        assert_eq!(q.pending(), 8);
    }

    #[test]
    fn slices_past_one_writev_wait_in_the_queue() {
        let mut q = OutBuf::default();
        let mut pool = BufferPool::default();
        let parts: Vec<Vec<u8>> = (0..MAX_SLICES + 10)
            .map(|i| vec![b'a' + (i % 26) as u8])
            .collect();
        let mut w = Gather::default();
        let written = q.write_with(
            &mut w,
            parts.iter().map(Vec::as_slice),
            usize::MAX,
            &mut pool,
        );
        assert_eq!(written.unwrap(), Flushed::NotAllOffered(MAX_SLICES));
        assert_eq!(q.pending(), 10);
        drain(&mut q, &mut w, &mut pool);
        assert_eq!(w.0, parts.concat());
    }

    /// A writer that takes every slice of a `writev`.
    #[derive(Default)]
    struct Gather(Vec<u8>);

    impl Write for Gather {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.extend_from_slice(b);
            Ok(b.len())
        }
        fn write_vectored(&mut self, slices: &[IoSlice<'_>]) -> io::Result<usize> {
            slices.iter().map(|s| self.write(s)).sum()
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
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
