//! Logging: `LEVEL [target] message` lines on stderr (level from `-v`/`-q`,
//! `RUST_LOG` overrides), which never block and never panic the thread that
//! logs.
//!
//! A write to stderr blocks once stderr is a pipe that nobody reads and its
//! 64 KiB are full: the poll engine's one thread would stop serving everyone
//! at its next log line. So logging only copies the line into a bounded
//! queue, and a thread of its own (`log`) writes the queue out, waiting for
//! stderr as long as it takes. When the queue is full, lines are dropped and
//! counted; once stderr takes lines again, one line says how many were lost.
//! (Setting O_NONBLOCK on fd 2 instead would change the file description the
//! shell and other processes share.)
//!
//! A closed stderr (`pollchat serve 2>&1 | head`, once `head` exits) is a
//! write error for the `log` thread, and those lines are simply lost.
//!
//! simple_logger still decides which records are wanted (the level, and
//! `RUST_LOG` read exactly as before); it no longer prints them, because it
//! prints with `eprintln!`, which blocks as above and panics on a closed
//! stderr.

use std::io::{self, Cursor, Write};
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::Duration;

use log::{LevelFilter, Log, Metadata, Record};
use rustix::event::{PollFd, PollFlags};
use simple_logger::SimpleLogger;

use crate::error::StartError;

/// Most bytes of log lines waiting for stderr (besides the batch the `log`
/// thread is writing). Enough for a burst such as a broadcast cutting off
/// a thousand slow clients (about 120 KB of warnings) while stderr is read,
/// so only a reader that has stopped (or fallen this far behind) loses lines.
/// The memory is held only while lines wait.
pub const QUEUE_BYTES: usize = 256 * 1024;

/// A batch buffer that grew past this is freed once written, so a burst's
/// memory is not kept for the rest of the run.
const KEEP_BYTES: usize = 16 * 1024;

/// The `log` thread's stack: it formats nothing and holds no buffers on it.
const LOG_STACK: usize = 64 * 1024;

/// At exit, how long [`Log::flush`] waits for stderr to take another batch
/// before giving up on the rest (a stopped reader must not stop the exit).
const FLUSH_PATIENCE: Duration = Duration::from_secs(1);

/// What the loggers and the `log` thread share, under one lock.
#[derive(Default)]
struct Queue {
    /// Formatted lines, `\n`-terminated, not yet taken by the `log` thread.
    pending: Vec<u8>,
    /// Lines dropped since the `log` thread last took `pending`.
    dropped: u64,
    /// The `log` thread is writing a batch.
    writing: bool,
    /// Batches written so far; [`Log::flush`] watches it move.
    written: u64,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    /// Wakes the `log` thread: lines are pending, or some were dropped.
    work: Condvar,
    /// Wakes [`Log::flush`]: a batch was written.
    done: Condvar,
}

impl Shared {
    /// Never poisoned in practice (nothing under the lock panics), but a
    /// logger must not panic if it were.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue one line, or count it as dropped. Never waits for stderr.
    fn push(&self, line: &[u8]) {
        let mut queue = self.lock();
        let was_idle = queue.pending.is_empty() && queue.dropped == 0;
        // Once one line is dropped, all are until the `log` thread takes the
        // queue: then the notice it writes after the batch marks the gap.
        if queue.dropped > 0 || queue.pending.len() + line.len() > QUEUE_BYTES {
            queue.dropped += 1;
        } else {
            queue.pending.extend_from_slice(line);
        }
        drop(queue);
        if was_idle {
            self.work.notify_one();
        }
    }
}

/// The `log` thread: take what is queued, write it, repeat.
fn write_queued(shared: &Shared) {
    let mut batch = Vec::new();
    let mut out = Stderr { mid_line: false };
    loop {
        let dropped = {
            let mut queue = shared.lock();
            while queue.pending.is_empty() && queue.dropped == 0 {
                queue = shared
                    .work
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut queue.pending, &mut batch);
            queue.writing = true;
            std::mem::take(&mut queue.dropped)
        };
        out.put(&batch);
        if dropped > 0 {
            // Formatted on the stack: a notice needs no allocation.
            let mut notice = [0u8; 128];
            let mut cursor = Cursor::new(&mut notice[..]);
            let _ = writeln!(
                cursor,
                "WARN  [{}] {dropped} log lines dropped: stderr was not being read",
                module_path!()
            );
            let len = usize::try_from(cursor.position()).unwrap_or(0);
            out.put(&notice[..len]);
        }
        batch.clear();
        if batch.capacity() > KEEP_BYTES {
            batch = Vec::new();
        }
        let mut queue = shared.lock();
        queue.writing = false;
        queue.written += 1;
        drop(queue);
        shared.done.notify_all();
    }
}

/// fd 2 as the `log` thread writes it (`main` writes its one-line errors
/// itself, after a flush).
struct Stderr {
    /// A write error cut a line short: start the next write on a new line.
    mid_line: bool,
}

impl Stderr {
    /// All of `bytes`, however long stderr makes us wait; after an error
    /// (closed pipe, full disk) the rest is lost.
    fn put(&mut self, bytes: &[u8]) {
        if self.mid_line {
            self.mid_line = false;
            self.put(b"\n");
        }
        let stderr = io::stderr();
        let mut stderr = stderr.lock();
        let mut rest = bytes;
        while !rest.is_empty() {
            match stderr.write(rest) {
                Ok(0) => break,
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Someone else made the shared file description
                // non-blocking: wait for room as a blocking write would.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(&stderr, PollFlags::OUT)];
                    match rustix::event::poll(&mut fds, None) {
                        Ok(_) | Err(rustix::io::Errno::INTR) => {}
                        Err(_) => break,
                    }
                }
                Err(_) => break,
            }
        }
        if !rest.is_empty() && rest.len() < bytes.len() {
            self.mid_line = bytes[..bytes.len() - rest.len()].last() != Some(&b'\n');
        }
    }
}

/// The installed logger: simple_logger's filter, this module's queue.
struct Logger {
    filter: SimpleLogger,
    shared: Arc<Shared>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // Formatting runs the arguments' Display code: outside the lock (a
        // Display that logged would deadlock) and with its panics caught.
        if let Ok(line) = panic::catch_unwind(AssertUnwindSafe(|| format_line(record))) {
            self.shared.push(line.as_bytes());
        }
    }

    /// Wait until what was logged so far is written, unless stderr takes
    /// nothing for [`FLUSH_PATIENCE`]. `main` calls this before exiting.
    fn flush(&self) {
        let mut queue = self.shared.lock();
        while !queue.pending.is_empty() || queue.dropped > 0 || queue.writing {
            let before = queue.written;
            queue = match self
                .shared
                .done
                .wait_timeout_while(queue, FLUSH_PATIENCE, |q| q.written == before)
            {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
            if queue.written == before {
                return;
            }
        }
    }
}

/// simple_logger's format without colours or timestamps:
/// `INFO  [pollchat] listening on 127.0.0.1:9009 (engine: poll)`.
fn format_line(record: &Record) -> String {
    let target = if record.target().is_empty() {
        record.module_path().unwrap_or_default()
    } else {
        record.target()
    };
    format!(
        "{:<5} [{target}] {}\n",
        record.level().as_str(),
        record.args()
    )
}

/// Install the process-wide logger and start its `log` thread (once; later
/// calls change nothing).
pub fn init(level: LevelFilter) -> Result<(), StartError> {
    let filter = SimpleLogger::new().with_level(level).env();
    let max_level = filter.max_level();
    let shared = Arc::new(Shared::default());
    let logger = Logger {
        filter,
        shared: Arc::clone(&shared),
    };
    if log::set_boxed_logger(Box::new(logger)).is_err() {
        return Ok(());
    }
    thread::Builder::new()
        .name("log".into())
        .stack_size(LOG_STACK)
        .spawn(move || write_queued(&shared))
        .map_err(StartError::Logging)?;
    log::set_max_level(max_level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Level;

    fn line(level: Level, target: &str, message: &str) -> String {
        format_line(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        )
    }

    /// The README's example lines, byte for byte.
    #[test]
    fn format_is_simple_loggers() {
        assert_eq!(
            line(
                Level::Info,
                "pollchat",
                "listening on 127.0.0.1:9010 (engine: poll)"
            ),
            "INFO  [pollchat] listening on 127.0.0.1:9010 (engine: poll)\n"
        );
        assert_eq!(line(Level::Warn, "t", "m"), "WARN  [t] m\n");
        assert_eq!(line(Level::Error, "t", "m"), "ERROR [t] m\n");
        assert_eq!(line(Level::Debug, "t", "m"), "DEBUG [t] m\n");
    }

    /// A full queue drops and counts, and keeps dropping until the `log`
    /// thread has taken it, so the notice marks where the gap is.
    #[test]
    fn full_queue_drops_and_counts() {
        let shared = Shared::default();
        let half = vec![b'x'; QUEUE_BYTES / 2];
        shared.push(&half);
        shared.push(&half);
        shared.push(b"one too many\n");
        shared.push(b"short\n");
        let queue = shared.lock();
        assert_eq!(queue.pending.len(), QUEUE_BYTES);
        assert_eq!(queue.dropped, 2);
    }

    /// A line longer than the whole queue is dropped too, and still wakes
    /// the `log` thread to say so (its wait ends on `dropped` alone).
    #[test]
    fn oversized_line_is_dropped() {
        let shared = Shared::default();
        shared.push(&vec![b'x'; QUEUE_BYTES + 1]);
        let queue = shared.lock();
        assert!(queue.pending.is_empty());
        assert_eq!(queue.dropped, 1);
    }
}
