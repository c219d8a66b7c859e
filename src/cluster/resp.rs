//! RESP2, the Redis wire format, as a sans-IO codec: commands out as arrays
//! of bulk strings, replies in as [`Frame`]s.
//!
//! Hand-written rather than `redis-protocol`: we need one encoder (arrays of
//! bulk strings) and a decoder of five types, which is less code than that
//! crate's nom parsers and costs the binary nothing extra.
//!
//! The decoder is restartable: [`decode`] reads one frame from the front of
//! a buffer, or says it needs more bytes (`Ok(None)`), and never panics on
//! garbage: nothing from the broker is trusted to be well-formed. Depth,
//! element counts and bulk sizes are capped, so a hostile or broken peer
//! cannot make us allocate without bound.

use std::fmt;

/// How deeply arrays may nest: XREAD's replies need four levels.
pub const MAX_DEPTH: usize = 8;
/// The longest bulk string we accept (a stream entry's text is one: a
/// line of the largest `--max-line`, 1 MiB, with its sender's name).
pub const MAX_BULK: usize = 2 * 1024 * 1024;
/// The most elements one array may claim.
pub const MAX_ELEMENTS: usize = 1 << 20;

/// One reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`: Redis refused the command.
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$5 hello`, or `$-1` (nil).
    Bulk(Option<Vec<u8>>),
    /// `*2 ...`, or `*-1` (nil: XREAD's timeout).
    Array(Option<Vec<Frame>>),
}

impl Frame {
    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Bulk(Some(b)) => Some(b),
            Frame::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }

    /// The elements of a non-nil array.
    pub fn as_array(&self) -> Option<&[Frame]> {
        match self {
            Frame::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Frame::Bulk(None) | Frame::Array(None))
    }
}

/// Why bytes from the broker are not RESP2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// The first byte of a frame is none of `+ - : $ *`.
    UnknownType(u8),
    /// A length or integer that does not parse, or a line without `\r\n`.
    BadNumber,
    /// A bulk string not followed by `\r\n`.
    BadTerminator,
    /// Past [`MAX_DEPTH`], [`MAX_ELEMENTS`] or [`MAX_BULK`].
    TooBig,
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::UnknownType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadNumber => write!(f, "malformed RESP length or integer"),
            RespError::BadTerminator => write!(f, "RESP bulk string without CRLF"),
            RespError::TooBig => write!(f, "RESP frame over the size limits"),
        }
    }
}

impl std::error::Error for RespError {}

/// Append one command, an array of bulk strings, to `out`.
pub fn encode<A: AsRef<[u8]>>(args: &[A], out: &mut Vec<u8>) {
    out.push(b'*');
    push_number(out, args.len());
    for arg in args {
        let arg = arg.as_ref();
        out.push(b'$');
        push_number(out, arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_number(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(n.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Read one frame from the front of `buf`: `Ok(Some((frame, used)))`, or
/// `Ok(None)` if `buf` holds only part of one.
pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, RespError> {
    let mut at = 0;
    match frame(buf, &mut at, 0)? {
        Some(f) => Ok(Some((f, at))),
        None => Ok(None),
    }
}

fn frame(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Frame>, RespError> {
    let Some(&kind) = buf.get(*at) else {
        return Ok(None);
    };
    let Some(line) = line(buf, *at + 1)? else {
        return Ok(None);
    };
    let body = &buf[*at + 1..line];
    let text = || String::from_utf8_lossy(body).into_owned();
    *at = line + 2;
    Ok(Some(match kind {
        b'+' => Frame::Simple(text()),
        b'-' => Frame::Error(text()),
        b':' => Frame::Integer(number(body)?),
        b'$' => {
            let len = number(body)?;
            if len < 0 {
                return Ok(Some(Frame::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| RespError::TooBig)?;
            if len > MAX_BULK {
                return Err(RespError::TooBig);
            }
            let end = *at + len;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(RespError::BadTerminator);
            }
            let bytes = buf[*at..end].to_vec();
            *at = end + 2;
            Frame::Bulk(Some(bytes))
        }
        b'*' => {
            let count = number(body)?;
            if count < 0 {
                return Ok(Some(Frame::Array(None)));
            }
            let count = usize::try_from(count).map_err(|_| RespError::TooBig)?;
            if count > MAX_ELEMENTS || depth >= MAX_DEPTH {
                return Err(RespError::TooBig);
            }
            // Not `with_capacity(count)`: a claimed count is not yet bytes.
            let mut items = Vec::new();
            for _ in 0..count {
                match frame(buf, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Frame::Array(Some(items))
        }
        other => return Err(RespError::UnknownType(other)),
    }))
}

/// Where the `\r\n` ending the line that starts at `from` is.
fn line(buf: &[u8], from: usize) -> Result<Option<usize>, RespError> {
    let rest = buf.get(from..).unwrap_or(&[]);
    match memchr::memchr(b'\r', rest) {
        Some(i) if rest.get(i + 1) == Some(&b'\n') => Ok(Some(from + i)),
        Some(i) if i + 1 < rest.len() => Err(RespError::BadNumber),
        _ if rest.len() > 64 * 1024 => Err(RespError::TooBig),
        _ => Ok(None),
    }
}

fn number(body: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(body)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(RespError::BadNumber)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(bytes: &[u8]) -> Frame {
        let (f, used) = decode(bytes).expect("valid").expect("complete");
        assert_eq!(used, bytes.len());
        f
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&["XADD", "k", "*", ""], &mut out);
        assert_eq!(out, b"*4\r\n$4\r\nXADD\r\n$1\r\nk\r\n$1\r\n*\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_type_and_both_nils_decode() {
        assert_eq!(one(b"+PONG\r\n"), Frame::Simple("PONG".into()));
        assert_eq!(one(b"-ERR no\r\n"), Frame::Error("ERR no".into()));
        assert_eq!(one(b":-42\r\n"), Frame::Integer(-42));
        assert_eq!(
            one(b"$3\r\na\r\n\r\n"),
            Frame::Bulk(Some(b"a\r\n".to_vec()))
        );
        assert_eq!(one(b"$-1\r\n"), Frame::Bulk(None));
        assert_eq!(one(b"*-1\r\n"), Frame::Array(None));
        assert_eq!(
            one(b"*2\r\n*1\r\n:1\r\n$0\r\n\r\n"),
            Frame::Array(Some(vec![
                Frame::Array(Some(vec![Frame::Integer(1)])),
                Frame::Bulk(Some(Vec::new())),
            ]))
        );
    }

    #[test]
    fn a_partial_frame_asks_for_more_at_every_cut() {
        let whole = b"*2\r\n$5\r\nhello\r\n*1\r\n+OK\r\n";
        for cut in 0..whole.len() {
            assert_eq!(decode(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(decode(whole).unwrap().is_some());
    }

    #[test]
    fn two_frames_in_one_buffer_come_one_at_a_time() {
        let (f, used) = decode(b"+A\r\n+B\r\n").unwrap().unwrap();
        assert_eq!((f, used), (Frame::Simple("A".into()), 4));
    }

    #[test]
    fn garbage_and_oversized_claims_are_errors() {
        assert_eq!(decode(b"?x\r\n"), Err(RespError::UnknownType(b'?')));
        assert_eq!(decode(b":x\r\n"), Err(RespError::BadNumber));
        assert_eq!(decode(b"$1\r\nab\r\n"), Err(RespError::BadTerminator));
        assert_eq!(decode(b"$99999999\r\n"), Err(RespError::TooBig));
        assert_eq!(decode(b"*99999999\r\n"), Err(RespError::TooBig));
        assert_eq!(decode(b"+a\rb\r\n"), Err(RespError::BadNumber));
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(decode(deep.as_bytes()), Err(RespError::TooBig));
        let endless = vec![b'+'; 70 * 1024];
        assert_eq!(decode(&endless), Err(RespError::TooBig));
    }

    proptest! {
        /// Any bytes: an answer, never a panic, and never more used than given.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((_, used))) = decode(&bytes) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// What we encode, we decode back, element for element.
        #[test]
        fn encoded_commands_decode_to_the_same_strings(args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8)) {
            let mut out = Vec::new();
            encode(&args, &mut out);
            let (frame, used) = decode(&out).unwrap().unwrap();
            prop_assert_eq!(used, out.len());
            let back: Vec<Vec<u8>> = frame.as_array().unwrap().iter().map(|f| f.as_bytes().unwrap().to_vec()).collect();
            prop_assert_eq!(back, args);
        }
    }
}
