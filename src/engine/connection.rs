//! One threaded-engine client: its blocking socket and its bounded output
//! queue, shared by three parties:
//! - the room, which queues output for it under the room lock ([`offer`]);
//! - its writer thread, which empties the queue onto the socket
//!   ([`run_writer`]);
//! - its reader thread, which owns the client's life and, at the end, waits
//!   for the writer ([`wait_writer`]).
//!
//! This is the piece the tutorial's `broadcast()` lacks. There, the sending
//! client's thread calls `send()` on every other socket in turn, so one
//! client that stops reading blocks the sender, and everyone behind it. Here,
//! queueing is a memcpy under a lock nobody holds while writing; the blocking
//! `write()` happens on the recipient's own writer thread; and a queue that
//! would pass `--sendq` gets its client cut off instead of growing.
//!
//! Locking: this queue's mutex is only ever taken on its own or *after* the
//! room lock, never the other way round, and never held across a socket call
//! that can wait.
//!
//! [`offer`]: Connection::offer
//! [`run_writer`]: Connection::run_writer
//! [`wait_writer`]: Connection::wait_writer

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::debug;

use super::rules::fits_sendq;

/// Most bytes the writer takes from the queue at once. `--sendq` counts
/// only what is still queued, not the batch being written: the writer
/// learns what the socket took only when its `write()` returns, and on a
/// busy machine that can be long after the client has read it, so counting
/// the batch would cut off readers for bytes they already have. A stalled
/// client therefore holds at most `--sendq` plus this much; kept small so
/// the threaded engine cuts it off within 16 KiB of where the poll engine
/// (which counts exactly) would.
const WRITE_BATCH: usize = 16 * 1024;

/// A client's socket and output queue. See the module docs.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The one socket (no `try_clone`: one fd per client). Reader and writer
    /// use it through `&TcpStream`, which implements `Read` and `Write`.
    stream: TcpStream,
    /// The queue and the flags the three parties coordinate on.
    state: Mutex<Outgoing>,
    /// Wakes the writer: output was queued, or the connection is ending.
    to_writer: Condvar,
    /// Wakes the reader: the writer finished, or the connection is ending
    /// while the reader sleeps out a flood pause.
    to_reader: Condvar,
}

/// What [`Connection::offer`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    /// Queued; the writer is busy or already due to be woken.
    Queued,
    /// Queued, and the writer sleeps: wake it when done queueing.
    WakeWriter,
    /// Not queued: it would pass `--sendq`.
    TooSlow,
}

/// Everything behind [`Connection::state`].
#[derive(Debug, Default)]
struct Outgoing {
    /// Output not yet taken by the writer: what `--sendq` limits.
    /// Unallocated while idle: when the writer takes all of it, an empty
    /// queue is left behind.
    queued: VecDeque<u8>,
    /// No more output will come: the writer hangs up once the queue is empty.
    closing: bool,
    /// Hang up now: the queue was dropped and the socket shut down.
    aborted: bool,
    /// The writer is waiting on `to_writer` and nobody has promised to wake
    /// it yet (a busy writer picks new output up by itself).
    writer_idle: bool,
    /// The writer thread has finished with the socket.
    writer_done: bool,
}

impl Connection {
    pub(crate) fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            state: Mutex::default(),
            to_writer: Condvar::new(),
            to_reader: Condvar::new(),
        }
    }

    /// The socket, for the reader's `read()`.
    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// A panicking thread must not take the others down with it: the state
    /// is a few flags and a byte queue, valid after any partial update.
    fn state(&self) -> MutexGuard<'_, Outgoing> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    // ----- the room's side (called under the room lock) ---------------------

    /// Queue bytes for the writer, unless that would pass `sendq`: then
    /// nothing is queued and the caller cuts the client off. Never waits.
    ///
    /// The writer is not woken here: `Offer::WakeWriter` asks the caller to
    /// call [`Connection::wake_writer`] once it has queued everything it is
    /// about to (the poll engine's "one write per client per tick"). Waking
    /// at once would let a writer on another core take one line at a time
    /// while the room is still queueing the rest of the batch.
    pub(crate) fn offer(&self, bytes: &[u8], sendq: usize) -> Offer {
        let mut state = self.state();
        if state.closing || state.aborted {
            return Offer::Queued; // leaving already; it has nowhere to go
        }
        if !fits_sendq(state.queued.len(), bytes.len(), sendq) {
            return Offer::TooSlow;
        }
        state.queued.extend(bytes);
        if state.writer_idle {
            state.writer_idle = false;
            return Offer::WakeWriter;
        }
        Offer::Queued
    }

    /// Wake the writer after an `Offer::WakeWriter`.
    pub(crate) fn wake_writer(&self) {
        self.to_writer.notify_one();
    }

    /// No more output: the writer sends what is queued, then hangs up. The
    /// reader's blocked `read()` returns at once (end of stream), so the
    /// reader thread notices the client has left the room.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closing = true;
        self.to_writer.notify_one();
        self.to_reader.notify_one();
        drop(state);
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Hang up now: drop what is queued, send `last_words` only if the
    /// socket takes them without waiting, and shut the socket down, which
    /// also wakes a reader or writer blocked on it.
    pub(crate) fn cut_off(&self, last_words: &[u8]) {
        let mut state = self.state();
        state.aborted = true;
        state.queued = VecDeque::new();
        self.to_writer.notify_one();
        self.to_reader.notify_one();
        drop(state);
        if !last_words.is_empty() {
            // Non-blocking for this one write: its socket buffer is probably
            // full, and the room lock may be held. The client is going, so
            // the flag's effect on the reader's reads does not matter.
            let _ = self.stream.set_nonblocking(true);
            let _ = (&self.stream).write(last_words);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    // ----- the reader's side ------------------------------------------------

    /// Flood control: sleep until `until`, unless the connection ends first.
    /// Returns false if it ended.
    pub(crate) fn pause_until(&self, until: Instant) -> bool {
        let pause = until.saturating_duration_since(Instant::now());
        let state = self
            .to_reader
            .wait_timeout_while(self.state(), pause, |s| !s.closing && !s.aborted)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        !state.closing && !state.aborted
    }

    /// Wait for the writer to finish, at most `grace`; if it has not by
    /// then (the client stopped reading), hang up, which ends the writer.
    pub(crate) fn wait_writer(&self, grace: Duration) {
        let state = self
            .to_reader
            .wait_timeout_while(self.state(), grace, |s| !s.writer_done)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        if !state.writer_done {
            drop(state);
            self.cut_off(b"");
        }
    }

    // ----- the writer thread ------------------------------------------------

    /// The writer thread's whole life: take what is queued (up to
    /// `WRITE_BATCH`), write it with blocking writes, repeat; after a close,
    /// hang up once drained. A write
    /// error (reset, broken pipe) hangs up too, which wakes the reader, and
    /// the reader tells the room.
    pub(crate) fn run_writer(&self) {
        while let Some(batch) = self.next_batch() {
            // Blocks for as long as the client is slow. No lock is held
            // meanwhile, so the room keeps queueing (up to `--sendq`).
            if let Err(e) = (&self.stream).write_all(&batch) {
                debug!("write failed: {e}");
                break;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.state().writer_done = true;
        self.to_reader.notify_one();
    }

    /// Wait for output; `None` when there will be no more to write.
    fn next_batch(&self) -> Option<Vec<u8>> {
        let mut state = self.state();
        loop {
            if state.aborted {
                return None;
            }
            let queued = state.queued.len();
            if queued > WRITE_BATCH {
                return Some(state.queued.drain(..WRITE_BATCH).collect());
            }
            if queued > 0 {
                // All of it: the queue's buffer becomes the batch, no copy.
                return Some(Vec::from(std::mem::take(&mut state.queued)));
            }
            if state.closing {
                return None;
            }
            state.writer_idle = true;
            state = self
                .to_writer
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.writer_idle = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::mpsc;

    /// A loopback pair: (our side as a Connection, the peer's socket).
    fn pair() -> (Arc<Connection>, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let (ours, _) = listener.accept().unwrap();
        (Arc::new(Connection::new(ours)), peer)
    }

    fn read_all(mut peer: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        peer.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn sendq_refuses_what_would_not_fit_and_close_flushes_then_hangs_up() {
        let (conn, peer) = pair();
        assert_eq!(conn.offer(b"abc", 4), Offer::Queued);
        assert_eq!(conn.offer(b"de", 4), Offer::TooSlow, "5 bytes with sendq 4");
        assert_eq!(conn.offer(b"\n", 4), Offer::Queued);
        let writer = std::thread::spawn({
            let conn = conn.clone();
            move || conn.run_writer()
        });
        conn.close();
        assert_eq!(read_all(peer), b"abc\n");
        writer.join().unwrap();
        assert_eq!(conn.state().queued.capacity(), 0, "idle queue holds memory");
        assert!(conn.state().writer_done);
    }

    #[test]
    fn the_writer_takes_one_batch_at_a_time_and_sendq_counts_the_rest() {
        let (conn, _peer) = pair();
        let sendq = 3 * WRITE_BATCH;
        let big = vec![b'x'; WRITE_BATCH + 10];
        assert_eq!(conn.offer(&big, sendq), Offer::Queued);
        assert_eq!(conn.next_batch().map(|b| b.len()), Some(WRITE_BATCH));
        assert_eq!(conn.state().queued.len(), 10);
        let rest = vec![b'y'; sendq - 10];
        assert_eq!(conn.offer(&rest, sendq), Offer::Queued);
        assert_eq!(conn.offer(b"z", sendq), Offer::TooSlow);
    }

    #[test]
    fn cut_off_drops_the_queue_says_last_words_and_ends_a_flood_pause() {
        let (conn, peer) = pair();
        assert_eq!(conn.offer(b"never sent\n", 1024), Offer::Queued);
        let (paused, woke) = mpsc::channel();
        std::thread::spawn({
            let conn = conn.clone();
            move || {
                let until = Instant::now() + Duration::from_secs(60);
                paused.send(conn.pause_until(until)).unwrap();
            }
        });
        conn.cut_off(b"bye\n");
        let still_open = woke.recv_timeout(Duration::from_secs(20)).unwrap();
        assert!(!still_open);
        assert_eq!(read_all(peer), b"bye\n");
        conn.run_writer(); // ends at once: nothing may be written any more
    }
}
