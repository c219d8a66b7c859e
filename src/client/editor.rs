//! The half-typed line of an interactive session. Pure: key bytes in,
//! [`Edit`]s out.
//!
//! With the terminal in non-canonical mode the kernel no longer collects the
//! line, so we do: enough editing to type a chat line (Backspace, Ctrl-U,
//! Ctrl-W), Enter to send, Ctrl-D on an empty line to end, Ctrl-C to stop.
//! Keys that send escape sequences (arrows, F-keys) are skipped whole; other
//! control keys are ignored. Knowing the line is what lets the screen redraw
//! it after a message arrives.

/// The longest line we let a person type; further keys are ignored.
pub const MAX_TYPED_LINE: usize = 64 * 1024;

/// What a key (or a pasted run of them) asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Edit {
    /// Enter: this line is finished (possibly empty).
    Submit(String),
    /// Ctrl-D on an empty line: the person is done typing.
    EndOfInput,
    /// Ctrl-C: stop now.
    Interrupt,
}

/// Where we are inside a key's escape sequence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// Just saw ESC.
    Started,
    /// In `ESC [ ...` or `ESC O ...`, waiting for the final byte.
    Sequence,
}

#[derive(Debug, Default)]
pub struct LineEditor {
    /// What is typed so far: printable characters only.
    line: String,
    /// The first bytes of a UTF-8 character whose rest is still to come
    /// (one read can end in the middle of a character).
    partial: Vec<u8>,
    escape: Escape,
}

const CTRL_C: u8 = 0x03;
const CTRL_D: u8 = 0x04;
const BACKSPACE: u8 = 0x08;
const CTRL_U: u8 = 0x15;
const CTRL_W: u8 = 0x17;
const ESC: u8 = 0x1b;
const DEL: u8 = 0x7f;

impl LineEditor {
    pub fn new() -> Self {
        Self::default()
    }

    /// The line as typed so far.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// Apply key bytes; what they finished goes to `edits`, in order.
    pub fn feed(&mut self, bytes: &[u8], edits: &mut Vec<Edit>) {
        for &b in bytes {
            if self.skip_escape(b) {
                continue;
            }
            if b >= 0x80 {
                self.push_utf8(b);
                continue;
            }
            self.flush_partial();
            match b {
                b'\r' | b'\n' => edits.push(Edit::Submit(std::mem::take(&mut self.line))),
                CTRL_D if self.line.is_empty() => edits.push(Edit::EndOfInput),
                CTRL_C => edits.push(Edit::Interrupt),
                BACKSPACE | DEL => {
                    self.line.pop();
                }
                CTRL_U => self.line.clear(),
                CTRL_W => {
                    let kept = self.line.trim_end().trim_end_matches(|c| c != ' ').len();
                    self.line.truncate(kept);
                }
                ESC => self.escape = Escape::Started,
                b if b.is_ascii_control() => {}
                b => self.push_char(char::from(b)),
            }
        }
    }

    /// Track an escape sequence; true if `b` belongs to one.
    fn skip_escape(&mut self, b: u8) -> bool {
        self.escape = match (self.escape, b) {
            (Escape::None, _) => return false,
            (Escape::Started, b'[' | b'O') => Escape::Sequence,
            // ESC + one key: Alt+key. Drop both.
            (Escape::Started, _) => Escape::None,
            (Escape::Sequence, 0x40..=0x7e) => Escape::None,
            (Escape::Sequence, _) => Escape::Sequence,
        };
        true
    }

    fn push_utf8(&mut self, b: u8) {
        self.partial.push(b);
        match std::str::from_utf8(&self.partial) {
            Ok(s) => {
                let c = s.chars().next().unwrap_or(char::REPLACEMENT_CHARACTER);
                self.partial.clear();
                self.push_char(c);
            }
            // Incomplete so far: wait for the rest.
            Err(e) if e.error_len().is_none() => {}
            Err(_) => {
                self.partial.clear();
                self.push_char(char::REPLACEMENT_CHARACTER);
            }
        }
    }

    /// A character was cut short by an ASCII byte: keep a marker for it.
    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            self.partial.clear();
            self.push_char(char::REPLACEMENT_CHARACTER);
        }
    }

    fn push_char(&mut self, c: char) {
        if !c.is_control() && self.line.len() + c.len_utf8() <= MAX_TYPED_LINE {
            self.line.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(editor: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        let mut edits = Vec::new();
        editor.feed(bytes, &mut edits);
        edits
    }

    #[test]
    fn typing_and_enter_submit_the_line() {
        let mut e = LineEditor::new();
        assert_eq!(feed(&mut e, b"hel"), vec![]);
        assert_eq!(e.line(), "hel");
        assert_eq!(
            feed(&mut e, b"lo\rnext\n"),
            vec![Edit::Submit("hello".into()), Edit::Submit("next".into())]
        );
        assert_eq!(e.line(), "");
    }

    #[test]
    fn backspace_ctrl_u_and_ctrl_w_edit() {
        let mut e = LineEditor::new();
        feed(&mut e, "héllo wörld\x7f\x7f".as_bytes());
        assert_eq!(e.line(), "héllo wör");
        feed(&mut e, b"\x17");
        assert_eq!(e.line(), "héllo ");
        feed(&mut e, b"\x08x\x15ok");
        assert_eq!(e.line(), "ok");
    }

    #[test]
    fn ctrl_d_ends_only_an_empty_line() {
        let mut e = LineEditor::new();
        assert_eq!(feed(&mut e, b"ab\x04"), vec![]);
        assert_eq!(e.line(), "ab");
        assert_eq!(feed(&mut e, b"\x15\x04"), vec![Edit::EndOfInput]);
        assert_eq!(feed(&mut e, b"x\x03"), vec![Edit::Interrupt]);
    }

    #[test]
    fn escape_sequences_and_controls_are_skipped() {
        let mut e = LineEditor::new();
        // Left arrow, F5 (`ESC [ 1 5 ~`), Alt+x, SS3 up, tab, Ctrl-Z.
        feed(&mut e, b"a\x1b[Db\x1b[15~c\x1bxd\x1bOAe\t\x1af");
        assert_eq!(e.line(), "abcdef");
        // A C1 control arriving as UTF-8 is dropped too.
        feed(&mut e, "\u{9b}g".as_bytes());
        assert_eq!(e.line(), "abcdefg");
    }

    #[test]
    fn utf8_split_across_reads_is_joined() {
        let mut e = LineEditor::new();
        let snow = "☃".as_bytes();
        feed(&mut e, &snow[..1]);
        feed(&mut e, &snow[1..]);
        assert_eq!(e.line(), "☃");
        feed(&mut e, b"\xe2x\xff");
        assert_eq!(e.line(), "☃\u{fffd}x\u{fffd}");
    }

    #[test]
    fn typed_line_is_capped() {
        let mut e = LineEditor::new();
        feed(&mut e, &vec![b'x'; MAX_TYPED_LINE + 10]);
        assert_eq!(e.line().len(), MAX_TYPED_LINE);
    }
}
