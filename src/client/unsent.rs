//! What `pollchat connect` has not yet sent to the server: a byte queue
//! written with one non-blocking `write()` per readiness event.
//!
//! It holds a buffer only while it has bytes, so an idle client holds none;
//! the written prefix is reclaimed before the buffer grows, so a queue that
//! is always half-written does not creep upward.

use std::io::{self, Write};

use crate::engine::write_once;

#[derive(Debug, Default)]
pub struct Unsent {
    /// Queued bytes; `buf[pos..]` is still to be written.
    buf: Vec<u8>,
    /// How much of `buf` the socket has already taken.
    pos: usize,
}

impl Unsent {
    /// Bytes waiting to be written.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.pos > 0 && self.pos >= self.buf.len() / 2 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// One `write()` of what is pending; returns how much the socket took
    /// (0 when it is full). A drained queue frees its buffer.
    pub fn write_to(&mut self, w: &mut impl Write) -> io::Result<usize> {
        if self.pending() == 0 {
            return Ok(0);
        }
        let written = write_once(|| w.write(&self.buf[self.pos..]))?;
        self.pos += written;
        if self.pending() == 0 {
            *self = Self::default();
        }
        Ok(written)
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
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order_and_free_when_drained() {
        let mut q = Unsent::default();
        let mut w = Trickle {
            got: Vec::new(),
            cap: 3,
        };
        q.push(b"hello\n");
        assert_eq!(q.write_to(&mut w).unwrap(), 3);
        q.push(b"world\n");
        while q.pending() > 0 {
            q.write_to(&mut w).unwrap();
        }
        assert_eq!(w.got, b"hello\nworld\n");
        assert_eq!(q.buf.capacity(), 0, "a drained queue holds no buffer");
        // A full socket takes nothing, and nothing is lost.
        let mut full = Trickle {
            got: Vec::new(),
            cap: 0,
        };
        q.push(b"later\n");
        assert_eq!(q.write_to(&mut full).unwrap(), 0);
        assert_eq!(q.pending(), 6);
    }
}
