//! Numbered chat lines (`K:I:zzz...`: sender K's line I), for scenarios
//! that check every line arrived, once, in each sender's order.

use std::sync::mpsc::Receiver;

use super::READ_TIMEOUT;

/// A line of `len` bytes (newline excluded) that says who sent it and its
/// number: `K:I:zzzz...`.
pub fn numbered_line(k: usize, i: usize, len: usize) -> String {
    let head = format!("{k}:{i}:");
    format!("{head}{}", "z".repeat(len - head.len()))
}

/// `(k, i)` from a chat line `<name> K:I:zzz...`, if it is one.
pub fn numbers_in(line: &str) -> Option<(usize, usize)> {
    let text = line.split_once("> ")?.1;
    let mut parts = text.splitn(3, ':');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Check that `lines` holds, for each of `senders`, lines `0..per_sender`
/// in order, and nothing lost or repeated. Returns the chat lines seen.
#[track_caller]
pub fn assert_all_in_order(
    lines: &Receiver<String>,
    senders: usize,
    per_sender: usize,
    who: &str,
) -> usize {
    let mut next = || lines.recv_timeout(READ_TIMEOUT).ok();
    assert_in_order_from(&mut next, senders, 0, per_sender, who)
}

/// The same for lines `from..to` of each sender, read from `next_line`
/// (`None`: nothing came within its timeout, or the connection closed).
#[track_caller]
pub fn assert_in_order_from(
    next_line: &mut dyn FnMut() -> Option<String>,
    senders: usize,
    from: usize,
    to: usize,
    who: &str,
) -> usize {
    let per_sender = to - from;
    let mut next = vec![from; senders];
    let mut seen = 0;
    while seen < senders * per_sender {
        let line = next_line()
            .unwrap_or_else(|| panic!("{who}: only {seen} of {} lines", senders * per_sender));
        assert!(
            !line.starts_with("! disconnected"),
            "{who} was cut off: {line}"
        );
        let Some((k, i)) = numbers_in(&line) else {
            continue; // joins, leaves and other notices
        };
        assert_eq!(
            i, next[k],
            "{who}: from sender {k}, line {i} came out of turn"
        );
        next[k] += 1;
        seen += 1;
    }
    seen
}
