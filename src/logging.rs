//! Logging: simple_logger on stderr (level from `-v`/`-q`, `RUST_LOG`
//! overrides), wrapped so that writing a log line can never panic.
//!
//! simple_logger prints with `eprintln!`, which panics when stderr is gone
//! (`pollchat serve 2>&1 | head`, once `head` exits). The poll engine's one
//! thread would die with it; a server must not stop because nobody reads
//! its log, so a failed log line is simply lost.

use std::panic::{self, AssertUnwindSafe};

use log::{LevelFilter, Log, Metadata, Record};
use simple_logger::SimpleLogger;

/// Any logger, with its panics caught.
struct NeverPanics<L>(L);

impl<L: Log> Log for NeverPanics<L> {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| self.0.log(record)));
    }

    fn flush(&self) {
        let _ = panic::catch_unwind(AssertUnwindSafe(|| self.0.flush()));
    }
}

/// Install the process-wide logger (once; later calls change nothing).
pub fn init(level: LevelFilter) {
    let logger = SimpleLogger::new().with_level(level).env();
    let max_level = logger.max_level();
    if log::set_boxed_logger(Box::new(NeverPanics(logger))).is_ok() {
        log::set_max_level(max_level);
    }
}
