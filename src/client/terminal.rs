//! The terminal settings of an interactive session, through rustix's safe
//! termios calls (no `unsafe` here).
//!
//! In its normal (canonical) mode the terminal collects a line and echoes it
//! itself, so a program cannot know the half-typed line to redraw it. We turn
//! that off while we run, with echo and the signal keys: the line editor then
//! sees every key, Ctrl-C included, as a byte. The old settings are put back
//! when [`RawKeys`] is dropped, on every way out of the session; SIGTERM and
//! SIGHUP are caught by the event loop for the same reason.

use std::io;

use rustix::termios::{
    LocalModes, OptionalActions, SpecialCodeIndex, Termios, tcgetattr, tcgetwinsize, tcsetattr,
};

/// Keys arrive one by one, unechoed, while this value lives.
pub struct RawKeys {
    /// The settings to restore.
    saved: Termios,
}

impl RawKeys {
    /// Switch stdin's terminal to key-at-a-time input. Output processing
    /// (`\n` → `\r\n`) is left on.
    pub fn enable() -> io::Result<RawKeys> {
        let stdin = io::stdin();
        let saved = tcgetattr(&stdin)?;
        let mut keys = saved.clone();
        keys.local_modes -=
            LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG | LocalModes::IEXTEN;
        // A read returns as soon as one byte is there.
        keys.special_codes[SpecialCodeIndex::VMIN] = 1;
        keys.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(&stdin, OptionalActions::Now, &keys)?;
        Ok(RawKeys { saved })
    }
}

impl Drop for RawKeys {
    fn drop(&mut self) {
        let _ = tcsetattr(io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// The terminal's width in columns (80 if it cannot be asked).
pub fn columns() -> usize {
    match tcgetwinsize(io::stdout()) {
        Ok(size) if size.ws_col > 0 => usize::from(size.ws_col),
        _ => 80,
    }
}
