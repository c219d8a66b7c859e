//! How far behind a client may fall, decided the same way by both engines.
//!
//! Only clients that are *behind* (owed output their sockets refused) are
//! looked at: everyone else has been given all they are owed. In order:
//! 1. behind with no progress for `--stall-timeout`: cut off (Redis's soft
//!    `client-output-buffer-limit`, held over time);
//! 2. the log forgets what every remaining cursor has passed;
//! 3. past `--log-cap` the log drops its oldest bytes, and the clients left
//!    before its tail are cut off (the hard limit);
//! 4. past `--memory-budget` (the log plus every private queue), the client
//!    furthest behind is cut off, then the next, until it fits (Redis 7's
//!    `maxmemory-clients`).
//!
//! A prompt reader behind a small window is never among them: it keeps
//! making progress, and the log holds a burst once however many are behind
//! it.

use super::fanout_log::FanoutLog;

/// One client that is behind, as the limits see it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lagging {
    pub key: usize,
    /// Its cursor into the log.
    pub cursor: u64,
    /// What it is costing: log bytes it has not been given, plus its
    /// private queue (`OutQueue::lag`).
    pub lag: u64,
    pub private_bytes: usize,
    /// No progress for `--stall-timeout`.
    pub stalled: bool,
}

/// Apply the limits: trims `log`, and returns the clients to cut off, in
/// the order the rules above found them. `written` is how far every client
/// not in `behind` has been given the log: nothing after it is forgotten.
pub(crate) fn enforce(
    log: &mut FanoutLog,
    mut behind: Vec<Lagging>,
    budget: usize,
    written: u64,
) -> Vec<usize> {
    let mut cut = Vec::new();
    behind.retain(|c| {
        if c.stalled {
            cut.push(c.key);
        }
        !c.stalled
    });
    trim(log, &behind, written);
    if log.enforce_cap(written) {
        let tail = log.tail();
        behind.retain(|c| {
            if c.cursor < tail {
                cut.push(c.key);
            }
            c.cursor >= tail
        });
        trim(log, &behind, written);
    }
    loop {
        let queued: usize = behind.iter().map(|c| c.private_bytes).sum();
        if log.retained() + queued <= budget {
            break;
        }
        let Some(furthest) = (0..behind.len()).max_by_key(|&i| behind[i].lag) else {
            break;
        };
        cut.push(behind.swap_remove(furthest).key);
        trim(log, &behind, written);
    }
    cut
}

/// Forget what every cursor still behind, and everyone else, has passed.
fn trim(log: &mut FanoutLog, behind: &[Lagging], written: u64) {
    let oldest = behind.iter().map(|c| c.cursor).min().unwrap_or(written);
    log.trim_to(oldest.min(written));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::Recipients;

    fn lagging(key: usize, log: &FanoutLog, cursor: u64, private_bytes: usize) -> Lagging {
        Lagging {
            key,
            cursor,
            lag: log.head() - cursor + private_bytes as u64,
            private_bytes,
            stalled: false,
        }
    }

    fn log_of(cap: usize, segments: usize) -> FanoutLog {
        let mut log = FanoutLog::new(cap);
        for i in 0..segments {
            log.push(
                Recipients::RoomBut(crate::app::RoomId::LOBBY, crate::app::ClientId(1000 + i)),
                &[b'x'; 100],
            );
        }
        log
    }

    #[test]
    fn nobody_behind_empties_the_log() {
        let mut log = log_of(1 << 20, 10);
        let head = log.head();
        assert!(enforce(&mut log, Vec::new(), usize::MAX, head).is_empty());
        assert_eq!(log.retained(), 0);
    }

    #[test]
    fn what_nobody_has_been_given_yet_is_kept() {
        let mut log = log_of(1 << 20, 10);
        assert!(enforce(&mut log, Vec::new(), usize::MAX, 500).is_empty());
        assert_eq!(log.tail(), 500);
    }

    #[test]
    fn the_slowest_cursor_holds_the_tail_and_stalled_ones_go() {
        let mut log = log_of(1 << 20, 10);
        let mut stuck = lagging(1, &log, 0, 0);
        stuck.stalled = true;
        let behind = vec![stuck, lagging(2, &log, 350, 0), lagging(3, &log, 800, 0)];
        assert_eq!(enforce(&mut log, behind, usize::MAX, 1000), vec![1]);
        assert_eq!(log.tail(), 300, "the segment client 2 is reading stays");
    }

    #[test]
    fn past_the_cap_the_cursors_left_behind_are_cut() {
        let mut log = log_of(500, 10);
        let behind = vec![
            lagging(1, &log, 0, 0),
            lagging(2, &log, 100, 0),
            lagging(3, &log, 600, 0),
        ];
        assert_eq!(enforce(&mut log, behind, usize::MAX, 1000), vec![1, 2]);
        assert_eq!(log.tail(), 600);
        assert!(log.retained() <= 500);
    }

    #[test]
    fn past_the_budget_the_furthest_behind_go_first() {
        let mut log = log_of(1 << 20, 10);
        // 1,000 bytes of log; private queues of 300 + 50 + 0.
        let behind = vec![
            lagging(1, &log, 500, 300),
            lagging(2, &log, 200, 50),
            lagging(3, &log, 900, 0),
        ];
        // Client 2 is furthest behind (850); without it the log is 500 bytes
        // from client 1's cursor, plus 300 queued: 800 fits a budget of 900.
        assert_eq!(enforce(&mut log, behind.clone(), 900, 1000), vec![2]);
        let mut log = log_of(1 << 20, 10);
        // A budget of 400: client 1 goes next (lag 800), leaving 100 bytes.
        assert_eq!(enforce(&mut log, behind, 400, 1000), vec![2, 1]);
        assert_eq!(log.retained(), 100);
    }
}
