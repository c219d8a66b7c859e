//! An outbound byte queue: a poll-engine client's output, and what
//! `pollchat connect` has not yet sent to the server.
//!
//! Outputs are appended as they happen during a tick and written with one
//! `write()` at the end of it, so ten broadcasts in one tick cost one
//! syscall. The Vec is allocated on first use and freed when it drains, so an
//! idle client holds no buffer.

use std::io::{self, Write};

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

    pub fn push(&mut self, bytes: &[u8]) {
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
    pub fn write_once(&mut self, w: &mut impl Write) -> io::Result<usize> {
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
            self.clear();
        }
        Ok(n)
    }

    /// Drop everything and give the memory back.
    pub fn clear(&mut self) {
        self.buf = Vec::new();
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
        let mut w = Trickle {
            got: Vec::new(),
            cap: 3,
        };
        q.push(b"hello\n");
        q.write_once(&mut w).unwrap();
        q.push(b"world\n");
        while q.pending() > 0 {
            q.write_once(&mut w).unwrap();
        }
        assert_eq!(w.got, b"hello\nworld\n");
        assert_eq!(q.buf.capacity(), 0);
    }
}
