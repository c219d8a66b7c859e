//! What the person sees: lines from the server, made safe, and (at a
//! terminal) the prompt with the half-typed line, redrawn after each message.
//!
//! Output is collected during a tick and written at its end with one write.
//! Everything from the server goes through [`sanitize`], so nobody in the
//! room can drive this terminal with escape sequences. At a terminal, a
//! message first clears the prompt row (`\r` + `ESC [2K`, as smallchat's client
//! does), is printed, and the prompt and the half-typed line are drawn again
//! below it, so incoming chat never garbles what is being typed.

use std::io::{self, Write};

use crate::sanitize::sanitize;

/// Shown before the line being typed.
pub const PROMPT: &str = "> ";
/// Carriage return, then erase the whole row.
const CLEAR_ROW: &[u8] = b"\r\x1b[2K";
/// The longest server line shown whole. Longer ones are cut here and
/// marked; the rest, up to the newline, is dropped unread into memory.
pub const MAX_SERVER_LINE: usize = 64 * 1024;
/// Added to a server line cut at [`MAX_SERVER_LINE`].
pub const CUT_MARK: &str = " [... line cut: longer than 64 KiB]";

#[derive(Debug)]
pub struct Screen {
    /// A person types at a terminal: draw the prompt and redraw it.
    interactive: bool,
    /// The prompt row is on screen and must be cleared before other text.
    prompt_on_screen: bool,
    /// The prompt row must be drawn again at the end of this tick.
    redraw: bool,
    /// This tick's output, written at once by [`Screen::flush`].
    out: Vec<u8>,
}

impl Screen {
    pub fn new(interactive: bool) -> Self {
        Self {
            interactive,
            prompt_on_screen: false,
            redraw: interactive,
            out: Vec::new(),
        }
    }

    /// A complete line from the server.
    pub fn server_line(&mut self, raw: &[u8]) {
        self.text_line(&sanitize(raw), "");
    }

    /// The first bytes of a server line that was too long to keep.
    pub fn server_line_cut(&mut self, head: &[u8]) {
        self.text_line(&sanitize(head), CUT_MARK);
    }

    /// A line the person typed and sent: it stays on screen after the
    /// prompt, as a terminal would leave it. Piped input is not echoed.
    pub fn sent_line(&mut self, line: &str) {
        if self.interactive {
            self.text_line(PROMPT, line);
        }
    }

    /// The half-typed line changed: draw it again at the end of the tick.
    pub fn typing_changed(&mut self) {
        self.redraw = true;
    }

    fn text_line(&mut self, text: &str, tail: &str) {
        self.clear_prompt();
        self.out.extend_from_slice(text.as_bytes());
        self.out.extend_from_slice(tail.as_bytes());
        self.out.push(b'\n');
        self.redraw = true;
    }

    fn clear_prompt(&mut self) {
        if self.prompt_on_screen {
            self.out.extend_from_slice(CLEAR_ROW);
            self.prompt_on_screen = false;
        }
    }

    /// Write this tick's output. `typing` is the half-typed line while input
    /// is open (`None` once it has ended: the prompt row is then cleared for
    /// good); `columns` is the terminal's width.
    pub fn flush(
        &mut self,
        w: &mut impl Write,
        typing: Option<&str>,
        columns: usize,
    ) -> io::Result<()> {
        match typing {
            Some(line) if self.interactive && self.redraw => {
                self.clear_prompt();
                self.out.extend_from_slice(PROMPT.as_bytes());
                let room = columns.saturating_sub(PROMPT.len() + 1).max(1);
                self.out
                    .extend_from_slice(visible_tail(line, room).as_bytes());
                self.prompt_on_screen = true;
            }
            Some(_) => {}
            None => self.clear_prompt(),
        }
        self.redraw = false;
        if self.out.is_empty() {
            return Ok(());
        }
        let result = w.write_all(&self.out).and_then(|()| w.flush());
        // Freed, not kept: an idle client holds no output buffer.
        self.out = Vec::new();
        result
    }
}

/// The end of `line` that fits in `room` columns, so the prompt never wraps
/// (a wrapped row could not be cleared with one `ESC [2K`). Counts
/// characters, which is exact for most text but not for wide CJK glyphs.
fn visible_tail(line: &str, room: usize) -> &str {
    match line.char_indices().rev().nth(room - 1) {
        Some((start, _)) => &line[start..],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flushed(screen: &mut Screen, typing: Option<&str>) -> String {
        let mut out = Vec::new();
        screen.flush(&mut out, typing, 80).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn piped_output_is_just_the_sanitised_lines() {
        let mut s = Screen::new(false);
        s.server_line(b"<bob> \x1b[2Jhi\x07");
        s.sent_line("not echoed");
        assert_eq!(flushed(&mut s, Some("typed")), "<bob> hi\n");
        assert_eq!(flushed(&mut s, Some("typed")), "");
    }

    #[test]
    fn message_clears_and_redraws_the_half_typed_line() {
        let mut s = Screen::new(true);
        assert_eq!(flushed(&mut s, Some("")), "> ");
        s.typing_changed();
        assert_eq!(flushed(&mut s, Some("hel")), "\r\x1b[2K> hel");
        s.server_line(b"<bob> hi");
        assert_eq!(
            flushed(&mut s, Some("hel")),
            "\r\x1b[2K<bob> hi\n> hel",
            "the message replaces the prompt row, then the prompt comes back"
        );
    }

    #[test]
    fn sent_line_stays_and_ended_input_clears_the_prompt() {
        let mut s = Screen::new(true);
        flushed(&mut s, Some("hello"));
        s.sent_line("hello");
        assert_eq!(flushed(&mut s, Some("")), "\r\x1b[2K> hello\n> ");
        assert_eq!(flushed(&mut s, None), "\r\x1b[2K");
        s.server_line(b"* bye");
        assert_eq!(flushed(&mut s, None), "* bye\n");
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let mut s = Screen::new(false);
        s.server_line_cut(b"abc");
        assert_eq!(flushed(&mut s, None), format!("abc{CUT_MARK}\n"));
    }

    #[test]
    fn prompt_shows_only_the_tail_that_fits() {
        assert_eq!(visible_tail("abcdef", 3), "def");
        assert_eq!(visible_tail("ab", 3), "ab");
        assert_eq!(visible_tail("aé☃", 2), "é☃");
    }
}
