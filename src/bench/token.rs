//! Probe lines and the tokens that identify them.
//!
//! Every probe carries `~B` + eight decimal digits + `~` (e.g. `~B00000042~`)
//! so it can be recognised whatever the server wraps around it (`<user3> `,
//! `[('127.0.0.1', 5000)] `, ...). A line that holds the token delivers that
//! probe; a token cut in half by a server that does not frame lines is lost.

/// `~B` + 8 digits + `~`.
pub const TOKEN_LEN: usize = 11;
/// The largest sequence number eight digits can carry.
pub const MAX_SEQ: u32 = 99_999_999;

/// Append one probe line for `seq` to `buf`: the token, padding up to
/// `payload` bytes (never shorter than the token), then `\n`.
pub fn write_probe(buf: &mut Vec<u8>, seq: u32, payload: usize) {
    use std::io::Write;
    debug_assert!(seq <= MAX_SEQ);
    let _ = write!(buf, "~B{seq:08}~");
    let pad = payload.saturating_sub(TOKEN_LEN);
    buf.extend(std::iter::repeat_n(b'x', pad));
    buf.push(b'\n');
}

/// Every probe sequence number in one received line, in order.
pub fn tokens_in(line: &[u8]) -> impl Iterator<Item = u32> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while from + TOKEN_LEN <= line.len() {
            let at = from + memchr::memchr(b'~', &line[from..])?;
            from = at + 1;
            if let Some(seq) = parse_token(&line[at..]) {
                from = at + TOKEN_LEN;
                return Some(seq);
            }
        }
        None
    })
}

/// The sequence number if `bytes` starts with a whole token.
fn parse_token(bytes: &[u8]) -> Option<u32> {
    let token = bytes.get(..TOKEN_LEN)?;
    if &token[..2] != b"~B" || token[TOKEN_LEN - 1] != b'~' {
        return None;
    }
    token[2..TOKEN_LEN - 1].iter().try_fold(0u32, |acc, &d| {
        d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_has_token_padding_and_newline() {
        let mut buf = Vec::new();
        write_probe(&mut buf, 42, 16);
        assert_eq!(buf, b"~B00000042~xxxxx\n");
        buf.clear();
        write_probe(&mut buf, 7, 0);
        assert_eq!(buf, b"~B00000007~\n");
    }

    #[test]
    fn token_is_found_whatever_the_prefix() {
        let found: Vec<u32> = tokens_in(b"<user3> ~B00000042~xxxx").collect();
        assert_eq!(found, vec![42]);
        let found: Vec<u32> = tokens_in(b"\r[('127.0.0.1', 5)] ~B00000001~~B00000002~").collect();
        assert_eq!(found, vec![1, 2]);
    }

    #[test]
    fn broken_or_partial_tokens_are_not_deliveries() {
        assert_eq!(tokens_in(b"~B0000").count(), 0);
        assert_eq!(tokens_in(b"~B0000[prefix] 0042~").count(), 0);
        assert_eq!(
            tokens_in(b"~B0000004x~ ~~B00000009~").collect::<Vec<_>>(),
            vec![9]
        );
        assert_eq!(tokens_in(b"* user7 joined").count(), 0);
    }
}
