//! How an [`Entry`] is written into a room's Redis stream and read back.
//!
//! One stream per room, `pc:<room>:log`, trimmed to about [`MAXLEN`]
//! entries. Each entry is a flat list of fields:
//!
//! | field | holds |
//! |---|---|
//! | `v` | `1`, the format |
//! | `n` | the node's name, for notices (`from node b`) |
//! | `i` | the sender's incarnation in this room: random, hex |
//! | `s` | its sequence number, from 1, per incarnation |
//! | `k` | [`Kind`] |
//! | `f` | the sender's name |
//! | `t` | the line as the sender's node showed it |
//! | `o` | a private message's addressee (only then) |
//!
//! Reading trusts nothing: an entry missing a field, with a number that
//! does not parse or with text over the limits is refused (`None`), and
//! the text is sanitised like a client's line before anyone sees it.

use super::resp::{self, Frame};
use super::{Entry, Kind};
use crate::sanitize::sanitize;

/// About how many entries a room's stream keeps (`MAXLEN ~`): at about 120
/// bytes of Redis memory per short line (measured: docs/performance.md),
/// about 1.2 MB per busy room, and minutes of chat for a node that was away
/// to catch up on.
pub const MAXLEN: &str = "10000";
/// The longest text accepted from the stream: a line of the largest
/// `--max-line` we allow (1 MiB), with room for its `<name> ` prefix.
pub const MAX_TEXT: usize = 1024 * 1024 + 64;
/// The longest node or sender name accepted from the stream.
pub const MAX_NAME: usize = 64;

/// Who sent an entry, as the link dedupes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub node: String,
    pub incarnation: u64,
    pub seq: u64,
}

/// The stream of a room (its folded name).
pub fn stream_key(room: &str) -> String {
    format!("pc:{room}:log")
}

/// The room a stream key belongs to.
pub fn room_of_key(key: &[u8]) -> Option<&str> {
    let key = std::str::from_utf8(key).ok()?;
    key.strip_prefix("pc:")?.strip_suffix(":log")
}

/// Append the `XADD` of one entry to `out`.
pub fn encode_xadd(entry: &Entry, stamp: &Stamp, out: &mut Vec<u8>) {
    let key = stream_key(&entry.room);
    debug_assert!(entry.to.is_none(), "private messages go by the MSG script");
    let incarnation = format!("{:x}", stamp.incarnation);
    let seq = stamp.seq.to_string();
    let args: [&[u8]; 19] = [
        b"XADD",
        key.as_bytes(),
        b"MAXLEN",
        b"~",
        MAXLEN.as_bytes(),
        b"*",
        b"v",
        b"1",
        b"n",
        stamp.node.as_bytes(),
        b"i",
        incarnation.as_bytes(),
        b"s",
        seq.as_bytes(),
        b"k",
        entry.kind.as_str().as_bytes(),
        b"f",
        entry.from.as_bytes(),
        b"t",
    ];
    // The text last, as its own argument (it is the only long one).
    let mut all: Vec<&[u8]> = args.to_vec();
    all.push(entry.text.as_bytes());
    resp::encode(&all, out);
}

/// One entry of an XREAD or XREVRANGE reply, `[id, [field, value, …]]`.
pub fn parse_entry<'f>(room: &str, item: &'f Frame) -> Option<(&'f [u8], Stamp, Entry)> {
    let [id, fields] = item.as_array()? else {
        return None;
    };
    let id = id.as_bytes()?;
    let fields = fields.as_array()?;
    let mut found: [Option<&[u8]>; 8] = [None; 8];
    for pair in fields.chunks(2) {
        let [name, value] = pair else {
            return None;
        };
        let slot = match name.as_bytes()? {
            b"v" => 0,
            b"n" => 1,
            b"i" => 2,
            b"s" => 3,
            b"k" => 4,
            b"f" => 5,
            b"t" => 6,
            b"o" => 7,
            _ => continue, // a later format's extra field
        };
        found[slot] = Some(value.as_bytes()?);
    }
    let [
        Some(b"1"),
        Some(node),
        Some(inc),
        Some(seq),
        Some(kind),
        Some(from),
        Some(text),
        to,
    ] = found
    else {
        return None;
    };
    if node.len() > MAX_NAME || from.len() > MAX_NAME || text.len() > MAX_TEXT {
        return None;
    }
    let stamp = Stamp {
        node: sanitize(node),
        incarnation: u64::from_str_radix(std::str::from_utf8(inc).ok()?, 16).ok()?,
        seq: std::str::from_utf8(seq).ok()?.parse().ok()?,
    };
    let entry = Entry {
        room: room.to_string(),
        kind: Kind::parse(kind)?,
        from: sanitize(from),
        text: sanitize(text),
        to: to.filter(|t| t.len() <= MAX_NAME).map(sanitize),
    };
    // A chat line says something; a kick may come without a reason.
    let said = matches!(entry.kind, Kind::Say | Kind::Me | Kind::Msg | Kind::Notice);
    (!said || !entry.text.is_empty()).then_some((id, stamp, entry))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Entry, Stamp) {
        let entry = Entry {
            room: "#rust".into(),
            kind: Kind::Say,
            from: "alice".into(),
            text: "<alice> hi there".into(),
            to: None,
        };
        let stamp = Stamp {
            node: "a".into(),
            incarnation: 0xfeed,
            seq: 7,
        };
        (entry, stamp)
    }

    /// What Redis would hand back for our XADD: its arguments after `*`.
    fn as_redis_returns(command: &[u8]) -> Frame {
        let (frame, _) = resp::decode(command).unwrap().unwrap();
        let args = frame.as_array().unwrap()[6..].to_vec();
        Frame::Array(Some(vec![
            Frame::Bulk(Some(b"1-0".to_vec())),
            Frame::Array(Some(args)),
        ]))
    }

    #[test]
    fn an_entry_comes_back_as_it_was_written() {
        let (entry, stamp) = sample();
        let mut out = Vec::new();
        encode_xadd(&entry, &stamp, &mut out);
        let item = as_redis_returns(&out);
        let (id, s, e) = parse_entry("#rust", &item).unwrap();
        assert_eq!((id, s, e), (&b"1-0"[..], stamp, entry));
    }

    #[test]
    fn keys_name_their_room() {
        assert_eq!(stream_key("#lobby"), "pc:#lobby:log");
        assert_eq!(room_of_key(b"pc:#lobby:log"), Some("#lobby"));
        assert_eq!(room_of_key(b"other"), None);
    }

    #[test]
    fn malformed_entries_are_refused_and_text_is_sanitised() {
        let (entry, stamp) = sample();
        let mut out = Vec::new();
        encode_xadd(&entry, &stamp, &mut out);
        let good = as_redis_returns(&out);
        let with = |field: &[u8], value: &[u8]| {
            let mut item = good.clone();
            if let Frame::Array(Some(parts)) = &mut item
                && let Frame::Array(Some(fields)) = &mut parts[1]
            {
                for pair in fields.chunks_mut(2) {
                    if pair[0].as_bytes() == Some(field) {
                        pair[1] = Frame::Bulk(Some(value.to_vec()));
                    }
                }
            }
            item
        };
        assert!(parse_entry("#rust", &with(b"v", b"2")).is_none(), "format");
        assert!(parse_entry("#rust", &with(b"s", b"x")).is_none(), "seq");
        assert!(parse_entry("#rust", &with(b"i", b"zz")).is_none(), "inc");
        assert!(
            parse_entry("#rust", &with(b"k", b"shout")).is_none(),
            "kind"
        );
        let long = vec![b'a'; MAX_TEXT + 1];
        assert!(parse_entry("#rust", &with(b"t", &long)).is_none(), "size");
        assert!(parse_entry("#rust", &Frame::Integer(1)).is_none());
        let (_, _, e) = parse_entry("#rust", &with(b"t", b"hi\x1b[2Jthere")).unwrap();
        assert!(!e.text.contains('\x1b'), "{:?}", e.text);
    }
}
