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
//! queueing is a pointer copy (or a short memcpy, see `chunks.rs`) under a
//! lock nobody holds while writing; the writing happens on the recipient's
//! own writer thread; and a queue that would pass `--sendq` gets its client
//! cut off instead of growing.
//!
//! `--sendq` counts what the poll engine counts: every byte the kernel has
//! not taken yet, including what the writer is holding. So the writer never
//! sits in a blocking `write()`, which would hide how much of its batch the
//! kernel took until it returns: it offers the queue to the kernel with a
//! non-blocking `sendmsg`, keeps what was not taken at the front of the
//! queue (still counted), and, when the socket buffer is full, waits in
//! `poll()` until there is room again — the poll engine's `WRITABLE` wait,
//! on a thread of its own.
//!
//! Locking: this queue's mutex is only ever taken on its own or *after* the
//! room lock, never the other way round, and never held across a socket call
//! that can wait.
//!
//! [`offer`]: Connection::offer
//! [`run_writer`]: Connection::run_writer
//! [`wait_writer`]: Connection::wait_writer

use std::io::{self, IoSlice};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use log::debug;
use rustix::event::{PollFd, PollFlags, poll};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendFlags, send, sendmsg};

use super::chunks::ChunkQueue;
use super::rules::fits_sendq;

/// Most chunks one `sendmsg` is given. Their `IoSlice`s live on the
/// writer's small stack (16 bytes each); small outputs are packed into
/// chunks of up to 4 KiB, so this is up to 256 KiB of short lines per call,
/// and 64 lines when each is large enough to be shared.
const WRITE_SLICES: usize = 64;
/// Every write: never wait (the writer waits in `poll()` instead, so the
/// queue always says how much the kernel has taken), and no SIGPIPE on a
/// peer that is gone (an error is returned instead).
const SEND_FLAGS: SendFlags = SendFlags::DONTWAIT.union(SendFlags::NOSIGNAL);

/// A client's socket and output queue. See the module docs.
#[derive(Debug)]
pub(crate) struct Connection {
    /// The one socket (no `try_clone`: one fd per client), blocking for the
    /// reader's `read()` through `&TcpStream`; the writer never waits on it
    /// except in `poll()` (see `SEND_FLAGS`).
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
    /// Output waiting for the writer. Unallocated while idle.
    queued: ChunkQueue,
    /// Bytes the writer has taken out of `queued` for its current
    /// `sendmsg`: not yet taken by the kernel, so `--sendq` counts them.
    with_writer: usize,
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
    pub(crate) fn offer(&self, bytes: &Arc<[u8]>, sendq: usize) -> Offer {
        let mut state = self.state();
        if state.closing || state.aborted || state.writer_done {
            // Leaving already, or its writer failed and is gone (the reader
            // is about to tell the room): it has nowhere to go.
            return Offer::Queued;
        }
        let unsent = state.queued.len() + state.with_writer;
        if !fits_sendq(unsent, bytes.len(), sendq) {
            return Offer::TooSlow;
        }
        state.queued.push(bytes);
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
        let dropped = std::mem::take(&mut state.queued);
        self.to_writer.notify_one();
        self.to_reader.notify_one();
        drop(state);
        drop(dropped);
        if !last_words.is_empty() {
            // Its socket buffer is probably full, and the room lock may be
            // held: never wait for this one.
            let _ = send(&self.stream, last_words, SEND_FLAGS);
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

    /// The writer thread's whole life: take what is queued, offer it to the
    /// kernel without waiting, put back what it did not take, and wait in
    /// `poll()` while the socket buffer is full; after a close, hang up
    /// once drained. A write error (reset, broken pipe) hangs up too, which
    /// wakes the reader, and the reader tells the room.
    pub(crate) fn run_writer(&self) {
        while let Some(mut taken) = self.take_queued() {
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES];
            let filled = taken.slices(&mut slices);
            let sent = sendmsg(
                &self.stream,
                &slices[..filled],
                &mut SendAncillaryBuffer::default(),
                SEND_FLAGS,
            );
            let (sent, full) = match sent {
                Ok(0) => {
                    debug!("write failed: the socket took nothing");
                    break;
                }
                Ok(n) => (n, false),
                Err(Errno::AGAIN) => (0, true),
                Err(Errno::INTR) => (0, false),
                Err(e) => {
                    debug!("write failed: {}", io::Error::from(e));
                    break;
                }
            };
            taken.advance(sent);
            if !self.put_back(taken) {
                break; // cut off meanwhile: nothing more may be written
            }
            if full && !self.wait_writable() {
                break;
            }
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        let mut state = self.state();
        state.writer_done = true;
        let undeliverable = std::mem::take(&mut state.queued);
        self.to_reader.notify_one();
        drop(state);
        drop(undeliverable);
    }

    /// Wait for output and take all of it (it still counts for `--sendq`
    /// until put back); `None` when there will be no more to write.
    fn take_queued(&self) -> Option<ChunkQueue> {
        let mut state = self.state();
        loop {
            if state.aborted {
                return None;
            }
            if !state.queued.is_empty() {
                state.with_writer = state.queued.len();
                return Some(std::mem::take(&mut state.queued));
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

    /// Return what the kernel did not take to the front of the queue.
    /// False if the connection was cut off meanwhile (it is dropped).
    fn put_back(&self, rest: ChunkQueue) -> bool {
        let mut state = self.state();
        state.with_writer = 0;
        if state.aborted {
            drop(state);
            drop(rest);
            return false;
        }
        state.queued.put_back(rest);
        true
    }

    /// Sleep until the socket has room again (or is shut down: a cut-off
    /// wakes this at once). False if `poll()` itself failed.
    fn wait_writable(&self) -> bool {
        loop {
            let mut fds = [PollFd::new(&self.stream, PollFlags::OUT)];
            match poll(&mut fds, None) {
                Ok(_) => return true,
                Err(Errno::INTR) => {}
                Err(e) => {
                    debug!("poll failed: {}", io::Error::from(e));
                    return false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
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

    fn out(bytes: &[u8]) -> Arc<[u8]> {
        Arc::from(bytes)
    }

    /// Run the writer on a thread; the receiver hears when it has ended.
    fn spawn_writer(conn: &Arc<Connection>) -> mpsc::Receiver<()> {
        let (done, ended) = mpsc::channel();
        let conn = conn.clone();
        std::thread::spawn(move || {
            conn.run_writer();
            let _ = done.send(());
        });
        ended
    }

    #[test]
    fn sendq_refuses_what_would_not_fit_and_close_flushes_then_hangs_up() {
        let (conn, peer) = pair();
        assert_eq!(conn.offer(&out(b"abc"), 4), Offer::Queued);
        assert_eq!(
            conn.offer(&out(b"de"), 4),
            Offer::TooSlow,
            "5 bytes with sendq 4"
        );
        assert_eq!(conn.offer(&out(b"\n"), 4), Offer::Queued);
        let writer = spawn_writer(&conn);
        conn.close();
        assert_eq!(read_all(peer), b"abc\n");
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
        assert_eq!(
            conn.state().queued.slots_allocated(),
            0,
            "idle queue holds memory"
        );
        assert!(conn.state().writer_done);
    }

    /// What the writer holds counts until the kernel has taken it, and what
    /// the kernel did not take goes back to the front.
    #[test]
    fn sendq_counts_what_the_writer_holds_until_the_kernel_takes_it() {
        let (conn, _peer) = pair();
        assert_eq!(conn.offer(&out(b"0123456789"), 16), Offer::Queued);
        let mut taken = conn.take_queued().unwrap();
        assert_eq!(conn.state().queued.len(), 0);
        assert_eq!(conn.offer(&out(b"abcdefg"), 16), Offer::TooSlow);
        assert_eq!(conn.offer(&out(b"abcdef"), 16), Offer::Queued);
        taken.advance(4); // the kernel took "0123"
        assert!(conn.put_back(taken));
        assert_eq!(conn.state().queued.len(), 6 + 6);
        assert_eq!(conn.offer(&out(b"xyzuvw"), 16), Offer::TooSlow);
        assert_eq!(conn.offer(&out(b"xyzu"), 16), Offer::Queued);
    }

    /// A reader slower than the writer: the socket fills again and again,
    /// the writer waits for room each time, and every byte arrives in order.
    #[test]
    fn a_slow_reader_gets_every_byte_in_order() {
        let (conn, mut peer) = pair();
        let mut want = Vec::new();
        for i in 0..20_000usize {
            // Short lines (copied) and long ones (shared) mixed.
            let line = format!("{i} {}\n", "x".repeat(i % 7 * 150));
            want.extend_from_slice(line.as_bytes());
            assert_eq!(conn.offer(&out(line.as_bytes()), usize::MAX), Offer::Queued);
        }
        let writer = spawn_writer(&conn);
        conn.wake_writer();
        let mut got = vec![0; want.len()];
        for piece in got.chunks_mut(64 * 1024) {
            peer.read_exact(piece).unwrap();
        }
        assert!(got == want, "bytes lost, duplicated or reordered");
        conn.close();
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
    }

    /// A writer waiting for room on a client that never reads ends as soon
    /// as the client is cut off.
    #[test]
    fn a_cut_off_wakes_a_writer_waiting_for_room() {
        let (conn, peer) = pair();
        socket2::SockRef::from(&peer)
            .set_recv_buffer_size(1)
            .unwrap();
        let writer = spawn_writer(&conn);
        let line = out(&[b'z'; 64 * 1024]);
        // Far more than the kernel buffers, offered until the writer has
        // put some back: it found the socket full and now waits for room.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if conn.offer(&line, usize::MAX) == Offer::WakeWriter {
                conn.wake_writer();
            }
            let state = conn.state();
            if state.with_writer == 0 && state.queued.len() > line.len() {
                break;
            }
            drop(state);
            assert!(Instant::now() < deadline, "the socket never filled");
            std::thread::yield_now();
        }
        conn.cut_off(b"");
        writer.recv_timeout(Duration::from_secs(20)).unwrap();
    }

    /// A writer that failed is gone: what is offered afterwards is dropped,
    /// not held, so a client that is already gone costs no memory and is
    /// not also reported too slow.
    #[test]
    fn after_a_write_error_offers_are_dropped() {
        let (conn, _peer) = pair();
        conn.stream().shutdown(Shutdown::Write).unwrap();
        assert_eq!(conn.offer(&out(b"lost\n"), 8), Offer::Queued);
        conn.run_writer(); // EPIPE: ends at once
        assert!(conn.state().writer_done);
        assert_eq!(conn.offer(&out(b"past sendq\n"), 8), Offer::Queued);
        assert!(conn.state().queued.is_empty());
    }

    #[test]
    fn cut_off_drops_the_queue_says_last_words_and_ends_a_flood_pause() {
        let (conn, peer) = pair();
        assert_eq!(conn.offer(&out(b"never sent\n"), 1024), Offer::Queued);
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
