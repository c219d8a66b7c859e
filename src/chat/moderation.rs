//! Moderation's state: the operator secret, bans by address, and the
//! limit on guessing the secret. Pure: time comes in as `now`.
//!
//! Bans live in memory only and are lost on restart (the README says so):
//! a moderator's tool against the abuser of the moment, not a blocklist.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// `/ban` without minutes.
pub const DEFAULT_BAN: Duration = Duration::from_secs(60 * 60);
/// `/mute` without minutes.
pub const DEFAULT_MUTE: Duration = Duration::from_secs(10 * 60);
/// The longest ban or mute: a week.
pub const MAX_MINUTES: u32 = 7 * 24 * 60;
/// Failed `/op` attempts allowed from one address per [`OP_WINDOW`].
pub const OP_FAILURES: u32 = 3;
pub const OP_WINDOW: Duration = Duration::from_secs(60);
/// Bans and failure records kept at most: bounded whatever is thrown at it.
pub const MAX_RECORDS: usize = 10_000;

/// The operator secret. Never printed, and compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct OpSecret(Vec<u8>);

impl OpSecret {
    /// `None` for an empty secret: that would let anyone in. Spaces at
    /// either end are dropped, as `/op` drops them from what is typed.
    pub fn new(secret: &str) -> Option<Self> {
        let secret = secret.trim();
        (!secret.is_empty()).then(|| Self(secret.as_bytes().to_vec()))
    }

    /// Whether `attempt` is the secret. The time taken depends only on the
    /// lengths, never on where the first difference is.
    pub fn matches(&self, attempt: &str) -> bool {
        let attempt = attempt.as_bytes();
        let mut diff = (self.0.len() ^ attempt.len()) as u64;
        for (i, &b) in self.0.iter().enumerate() {
            let a = attempt.get(i).copied().unwrap_or(0);
            diff |= u64::from(a ^ b);
        }
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for OpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OpSecret(..)")
    }
}

/// A whole number of minutes, capped at [`MAX_MINUTES`].
pub fn minutes(m: u32) -> Duration {
    Duration::from_secs(u64::from(m.min(MAX_MINUTES)) * 60)
}

/// Minutes left, rounded up (a ban with 10 s left is "1 minute").
pub fn minutes_left(left: Duration) -> u64 {
    left.as_secs().div_ceil(60).max(1)
}

/// Addresses banned until a moment.
#[derive(Debug, Default)]
pub struct Bans {
    until: HashMap<IpAddr, Instant>,
}

impl Bans {
    /// Ban `ip` for `length`; false if the table is full of live bans.
    pub fn ban(&mut self, ip: IpAddr, length: Duration, now: Instant) -> bool {
        self.forget_expired(now);
        if self.until.len() >= MAX_RECORDS && !self.until.contains_key(&ip) {
            return false;
        }
        self.until.insert(ip, now + length);
        true
    }

    /// Lift a ban; false if `ip` was not banned.
    pub fn lift(&mut self, ip: IpAddr, now: Instant) -> bool {
        self.until.remove(&ip).is_some_and(|until| until > now)
    }

    /// How long `ip` stays banned, if it is.
    pub fn left(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let until = *self.until.get(&ip)?;
        (until > now).then(|| until - now)
    }

    /// The live bans, soonest to expire first.
    pub fn list(&mut self, now: Instant) -> Vec<(IpAddr, Duration)> {
        self.forget_expired(now);
        let mut bans: Vec<_> = self.until.iter().map(|(&ip, &u)| (ip, u - now)).collect();
        bans.sort_unstable_by_key(|&(ip, left)| (left, ip));
        bans
    }

    fn forget_expired(&mut self, now: Instant) {
        self.until.retain(|_, until| *until > now);
    }
}

/// Failed `/op` attempts per address, in fixed windows.
#[derive(Debug, Default)]
pub struct OpAttempts {
    failures: HashMap<IpAddr, (u32, Instant)>,
}

impl OpAttempts {
    /// `Err(wait)` while `ip` has used up its attempts, or while the table
    /// is full (see `failed`).
    pub fn check(&self, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        if self.failures.len() >= MAX_RECORDS && !self.failures.contains_key(&ip) {
            return Err(OP_WINDOW);
        }
        match self.failures.get(&ip) {
            Some(&(count, since)) if count >= OP_FAILURES => {
                let open = since + OP_WINDOW;
                if open > now { Err(open - now) } else { Ok(()) }
            }
            _ => Ok(()),
        }
    }

    /// Count a failure. With the table full of live records (a guesser
    /// with many addresses) a new address is not recorded: `check` then
    /// refuses every address not in it (`full`), failing closed.
    pub fn failed(&mut self, ip: IpAddr, now: Instant) {
        if self.failures.len() >= MAX_RECORDS {
            self.failures
                .retain(|_, (_, since)| now.saturating_duration_since(*since) < OP_WINDOW);
            if self.failures.len() >= MAX_RECORDS && !self.failures.contains_key(&ip) {
                return;
            }
        }
        let entry = self.failures.entry(ip).or_insert((0, now));
        if now.saturating_duration_since(entry.1) >= OP_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_secret_matches_only_itself_and_is_never_printed() {
        let secret = OpSecret::new("hunter2\n").unwrap();
        assert!(secret.matches("hunter2"));
        for wrong in ["hunter", "hunter22", "Hunter2", "", "hunter2\n", "xunter2"] {
            assert!(!secret.matches(wrong), "{wrong:?}");
        }
        assert_eq!(format!("{secret:?}"), "OpSecret(..)");
        assert!(OpSecret::new("\n").is_none(), "an empty secret is refused");
        assert!(OpSecret::new("  spaced \n").unwrap().matches("spaced"));
    }

    #[test]
    fn a_ban_lasts_its_length_and_can_be_lifted() {
        let t0 = Instant::now();
        let mut bans = Bans::default();
        assert!(bans.ban(ip("127.0.0.2"), minutes(5), t0));
        assert_eq!(bans.left(ip("127.0.0.2"), t0), Some(minutes(5)));
        assert_eq!(bans.left(ip("127.0.0.3"), t0), None);
        let later = t0 + Duration::from_secs(299);
        assert_eq!(minutes_left(bans.left(ip("127.0.0.2"), later).unwrap()), 1);
        assert_eq!(bans.left(ip("127.0.0.2"), t0 + minutes(5)), None, "expired");
        assert!(bans.list(t0 + minutes(5)).is_empty());
        bans.ban(ip("127.0.0.4"), minutes(60), t0);
        assert!(bans.lift(ip("127.0.0.4"), t0));
        assert!(!bans.lift(ip("127.0.0.4"), t0), "not banned any more");
        assert_eq!(minutes(u32::MAX), minutes(MAX_MINUTES), "capped");
    }

    #[test]
    fn op_attempts_are_limited_per_address_per_window() {
        let t0 = Instant::now();
        let mut tries = OpAttempts::default();
        let a = ip("127.0.0.2");
        for _ in 0..OP_FAILURES {
            assert_eq!(tries.check(a, t0), Ok(()));
            tries.failed(a, t0);
        }
        assert_eq!(tries.check(a, t0), Err(OP_WINDOW));
        assert_eq!(tries.check(ip("127.0.0.3"), t0), Ok(()), "per address");
        assert_eq!(tries.check(a, t0 + OP_WINDOW), Ok(()), "a new window");
        tries.failed(a, t0 + OP_WINDOW);
        assert_eq!(tries.check(a, t0 + OP_WINDOW), Ok(()), "counting anew");
    }

    /// Guessing from more addresses than the table holds fails closed.
    #[test]
    fn a_full_table_of_attempts_refuses_new_addresses() {
        let t0 = Instant::now();
        let mut tries = OpAttempts::default();
        for i in 0..MAX_RECORDS as u128 {
            tries.failed(IpAddr::from(std::net::Ipv6Addr::from(i)), t0);
        }
        let new = ip("2001:db8::1");
        tries.failed(new, t0);
        assert_eq!(tries.failures.len(), MAX_RECORDS, "bounded");
        assert_eq!(tries.check(new, t0), Err(OP_WINDOW));
        assert_eq!(
            tries.check(new, t0 + OP_WINDOW),
            Err(OP_WINDOW),
            "until some expire"
        );
        tries.failed(new, t0 + OP_WINDOW);
        assert_eq!(
            tries.check(new, t0 + OP_WINDOW),
            Ok(()),
            "the old ones made room"
        );
    }
}
