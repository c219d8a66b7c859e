//! Turns a raw line into text that is safe to show on someone else's terminal.
//!
//! Invalid UTF-8 becomes U+FFFD. ANSI/VT escape sequences (CSI, OSC, and
//! two-byte ESC sequences) are removed whole, a tab becomes a space, and
//! every other control character (C0, DEL, C1) is dropped, so what comes out
//! holds no control character at all. Pure, no I/O; the client
//! (`pollchat connect`) uses the same function on what it prints.

/// Sanitise raw bytes into displayable text.
pub fn sanitize(raw: &[u8]) -> String {
    // The usual chat line, printable ASCII only: nothing to change.
    if raw.iter().all(|b| (b' '..=b'~').contains(b)) {
        return String::from_utf8_lossy(raw).into_owned();
    }
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // C1 CSI / OSC introducers behave like ESC [ and ESC ].
            '\u{9b}' => skip_csi(&mut chars),
            '\u{9d}' => skip_osc(&mut chars),
            // Keeps the words apart without moving anyone's cursor.
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `max` bytes of `s`, on a character boundary: for replies that
/// echo what someone typed and must stay bounded.
pub fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

/// After an ESC: drop the whole sequence it starts.
fn skip_escape(chars: &mut Chars<'_>) {
    match chars.next() {
        Some('[') => skip_csi(chars),
        Some(']') | Some('P') | Some('X') | Some('^') | Some('_') => skip_osc(chars),
        // ESC + intermediate bytes (0x20..=0x2F) + one final byte.
        Some(c) if ('\u{20}'..='\u{2f}').contains(&c) => {
            while let Some(&n) = chars.peek() {
                chars.next();
                if !('\u{20}'..='\u{2f}').contains(&n) {
                    break;
                }
            }
        }
        _ => {}
    }
}

/// CSI: parameter and intermediate bytes, then one final byte in 0x40..=0x7E.
fn skip_csi(chars: &mut Chars<'_>) {
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            return;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            return;
        }
    }
}

/// OSC/DCS-style strings end with BEL or ST (ESC \ or U+009C).
fn skip_osc(chars: &mut Chars<'_>) {
    while let Some(c) = chars.next() {
        match c {
            '\u{7}' | '\u{9c}' => return,
            '\u{1b}' => {
                if chars.peek() == Some(&'\\') {
                    chars.next();
                }
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn plain_text_passes_through() {
        assert_eq!(sanitize("héllo world ✓".as_bytes()), "héllo world ✓");
        assert_eq!(sanitize(b" ascii ~ only!"), " ascii ~ only!");
    }

    /// Regression (found by `adversarial::garbage_reaches_others_as_clean_text`):
    /// a tab went through as it was, the one control character that did,
    /// though issue 7 asks for none but the line end.
    #[test]
    fn a_tab_becomes_a_space() {
        assert_eq!(sanitize(b"a\tb\t"), "a b ");
    }

    #[test]
    fn invalid_utf8_becomes_replacement_char() {
        assert_eq!(sanitize(b"a\xffb"), "a\u{fffd}b");
    }

    #[test]
    fn csi_sequences_are_removed_whole() {
        assert_eq!(sanitize(b"\x1b[31mred\x1b[0m \x1b[2J\x1b[1;1H"), "red ");
    }

    #[test]
    fn osc_title_change_is_removed() {
        assert_eq!(sanitize(b"\x1b]0;pwned\x07ok"), "ok");
        assert_eq!(sanitize(b"\x1b]0;pwned\x1b\\ok"), "ok");
    }

    #[test]
    fn control_chars_nul_del_c1_are_dropped() {
        assert_eq!(sanitize(b"a\x00b\x07c\x7fd\r"), "abcd");
        assert_eq!(sanitize("x\u{85}y\u{9b}31mz".as_bytes()), "xyz");
    }

    #[test]
    fn two_byte_escapes_are_removed() {
        assert_eq!(sanitize(b"\x1bcreset\x1b(Bx"), "resetx");
    }

    proptest::proptest! {
        /// Whatever comes in, what goes out is valid UTF-8 (a `String`)
        /// with no control character, and no longer than the input allows
        /// (each byte yields at most one U+FFFD: 3 bytes).
        #[test]
        fn output_never_holds_a_control_character(
            raw in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
        ) {
            let text = sanitize(&raw);
            proptest::prop_assert!(!text.chars().any(char::is_control), "{:?}", text);
            proptest::prop_assert!(text.len() <= 3 * raw.len());
        }

        /// Printable ASCII (the shortcut) comes out exactly as it went in.
        #[test]
        fn printable_ascii_is_unchanged(raw in "[ -~]{0,200}") {
            proptest::prop_assert_eq!(sanitize(raw.as_bytes()), raw);
        }
    }
}
