//! A room's history: its last `--history` chat lines, for whoever joins.
//!
//! Each line is kept as the very bytes the room broadcast (`<alice> hi\n`,
//! an `Arc` shared with the engine's copy, not a second one), with the
//! wall-clock second it was said. So a room costs at most `--history`
//! lines of `--max-line` (plus the speaker's name) however busy it is, and
//! nothing at all until someone speaks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::app::{ClientId, MAX_REPLY, Outbox};

/// The most bytes one replay sends: a quarter of the default `--sendq`,
/// whatever `--history` and `--max-line` are.
pub const REPLAY_BYTES: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct History {
    /// Oldest first: (seconds since 1970 UTC, the line as broadcast).
    lines: VecDeque<(u64, Arc<[u8]>)>,
}

impl History {
    /// Remember `line`, forgetting the oldest beyond `keep` (0 keeps none).
    pub fn record(&mut self, keep: usize, wall: SystemTime, line: Arc<[u8]>) {
        if keep == 0 {
            return;
        }
        while self.lines.len() >= keep {
            self.lines.pop_front();
        }
        if self.lines.capacity() == 0 {
            self.lines.reserve_exact(keep);
        }
        let secs = wall.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        self.lines.push_back((secs, line));
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The bytes the lines hold.
    pub fn bytes(&self) -> usize {
        self.lines.iter().map(|(_, line)| line.len()).sum()
    }

    /// Show the lines to `client`, framed and stamped:
    /// `* last 2 lines of #rust:`, `[14:03] <alice> hi`, `* end of history`.
    /// At most [`REPLAY_BYTES`] of them, the newest, so that joining never
    /// pushes a client over `--sendq`; nothing when there is no history.
    pub fn replay(&self, room: &str, client: ClientId, out: &mut Outbox) {
        let mut shown = Vec::new();
        let mut bytes = 0;
        for (secs, line) in self.lines.iter().rev() {
            let text = String::from_utf8_lossy(line);
            // A line may be `--max-line` long, and a reply must stay under
            // MAX_REPLY: an unusually long one is shown cut.
            let text = crate::sanitize::cut(text.trim_end_matches('\n'), MAX_REPLY - 16);
            let stamped = format!("{} {text}", stamp(*secs));
            bytes += stamped.len() + 1;
            if bytes > REPLAY_BYTES && !shown.is_empty() {
                break;
            }
            shown.push(stamped);
        }
        if shown.is_empty() {
            return;
        }
        let n = shown.len();
        let noun = if n == 1 { "line" } else { "lines" };
        let older = self.lines.len() - n;
        let more = if older > 0 {
            format!(" ({older} older not shown)")
        } else {
            String::new()
        };
        out.to(client, &format!("* last {n} {noun} of {room}{more}:"));
        for line in shown.iter().rev() {
            out.to(client, line);
        }
        out.to(client, "* end of history");
    }
}

/// `[HH:MM]`, UTC.
fn stamp(secs: u64) -> String {
    let minutes = secs / 60;
    format!("[{:02}:{:02}]", (minutes / 60) % 24, minutes % 60)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::app::Output;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn shown(history: &History) -> Vec<String> {
        let mut out = Outbox::new();
        history.replay("#rust", ClientId(1), &mut out);
        out.drain()
            .map(|o| match o {
                Output::Send { bytes, .. } => String::from_utf8(bytes.to_vec()).unwrap(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn lines_are_stamped_with_utc_minutes_and_framed() {
        let mut h = History::default();
        // 2026-12-02 14:03:59 UTC
        h.record(20, at(1_796_220_239), Arc::from(&b"<alice> hi\n"[..]));
        h.record(20, at(1_796_220_300), Arc::from(&b"* alice waves\n"[..]));
        assert_eq!(
            shown(&h),
            vec![
                "* last 2 lines of #rust:\n",
                "[14:03] <alice> hi\n",
                "[14:05] * alice waves\n",
                "* end of history\n",
            ]
        );
    }

    #[test]
    fn only_the_last_keep_lines_are_kept_and_zero_keeps_none() {
        let mut h = History::default();
        for i in 0..50 {
            h.record(3, at(i), Arc::from(format!("<a> {i}\n").into_bytes()));
        }
        assert_eq!(h.len(), 3);
        let shown = shown(&h);
        assert_eq!(shown[0], "* last 3 lines of #rust:\n");
        assert!(shown[1].ends_with("<a> 47\n"), "{shown:?}");
        assert!(shown[3].ends_with("<a> 49\n"), "{shown:?}");
        assert_eq!(h.bytes(), 3 * "<a> 47\n".len());

        let mut off = History::default();
        off.record(0, at(1), Arc::from(&b"<a> x\n"[..]));
        assert!(off.is_empty());
        assert!(self::shown(&off).is_empty(), "no frame without lines");
    }

    #[test]
    fn a_replay_is_bounded_and_keeps_the_newest_lines() {
        let mut h = History::default();
        let long = "x".repeat(10_000);
        for i in 0..20 {
            h.record(
                20,
                at(60 * i),
                Arc::from(format!("<a> {i} {long}\n").into_bytes()),
            );
        }
        let shown = shown(&h);
        let total: usize = shown.iter().map(String::len).sum();
        assert!(total <= REPLAY_BYTES + 100, "{total} bytes");
        assert_eq!(shown[0], "* last 6 lines of #rust (14 older not shown):\n");
        assert!(
            shown[6].starts_with("[00:19] <a> 19 "),
            "the newest is last"
        );
    }

    #[test]
    fn a_kept_line_is_the_broadcast_allocation_itself() {
        let line: Arc<[u8]> = Arc::from(&b"<a> shared\n"[..]);
        let mut h = History::default();
        h.record(5, at(1), Arc::clone(&line));
        assert_eq!(Arc::strong_count(&line), 2, "shared, not copied");
    }
}
