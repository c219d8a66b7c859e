//! Flood control: token buckets per client. Pure; `now` is passed in.
//!
//! Each line costs one token from a bucket of lines, and its length from a
//! bucket of bytes. Tokens refill at a steady rate up to a burst, so a
//! pasted block goes through at once and a steady flood is paced. When a
//! bucket is empty the engine *stops reading* that client until
//! [`TokenBucket::ready_at`]; nothing is dropped, and TCP pushes back on the
//! sender.
//!
//! Why bytes too: counting lines alone, one client may deliver 50 lines of
//! 2 KiB in a moment, and 32 connections from one address 3 MB, all of
//! which every reader on a slow link is then behind by. The byte burst
//! (`BURST_BYTES`) keeps any one sender's burst far under the fan-out
//! log's cap (`--log-cap`, 8 MiB by default).

/// Bytes per second a client may send for each line per second of `--rate`:
/// 10 KiB/s at the default 10 lines/s, five full 2 KiB lines a second.
pub const BYTES_PER_LINE: u32 = 1024;
/// Bytes a client may send back to back: a pasted block of ordinary lines
/// (50 lines of 80 characters is 4 KB) goes through at once.
pub const BURST_BYTES: u32 = 64 * 1024;

use std::time::{Duration, Instant};

/// One client's budget of lines, or of bytes.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens available now (fractional so slow rates refill smoothly).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Tokens per second; 0 disables flood control.
    rate: f64,
    /// Bucket size: how many tokens may be spent back to back.
    burst: f64,
}

impl TokenBucket {
    pub fn new(rate: u32, burst: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(burst.max(1)),
            updated: now,
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
        }
    }

    /// Is there a token (one more line, or byte)? `Err(when)`: none until
    /// `when`.
    pub fn ready(&mut self, now: Instant) -> Result<(), Instant> {
        if self.rate == 0.0 {
            return Ok(());
        }
        self.refill(now);
        // Waking at `ready_at` must find the token, not a float a hair
        // short of it (which would ask to wait no time at all, and spin).
        if self.tokens >= 1.0 - 1e-9 {
            Ok(())
        } else {
            Err(self.ready_at())
        }
    }

    /// Spend `cost` tokens after [`TokenBucket::ready`] said one was
    /// there. A cost over what is left (a long line) runs the bucket into
    /// debt, repaid before the next `ready`: a line is never too big to go.
    pub fn spend(&mut self, cost: u32) {
        if self.rate != 0.0 {
            self.tokens -= f64::from(cost);
        }
    }

    /// `ready` and `spend` in one step.
    #[cfg(test)]
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.ready(now)?;
        self.spend(1);
        Ok(())
    }

    /// True when the bucket is full at `now`: its state then carries no
    /// information, and the engine may drop it and start a fresh one later.
    pub fn is_full(&self, now: Instant) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * self.rate >= self.burst
    }

    /// When the next whole token will be there.
    pub fn ready_at(&self) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        // Rounded up to whole nanoseconds, so the token is there by then.
        let nanos = (missing / self.rate * 1e9).ceil();
        self.updated + Duration::from_nanos(nanos as u64)
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_paced() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 3, t0);
        for _ in 0..3 {
            assert!(b.take(t0).is_ok());
        }
        let when = b.take(t0).unwrap_err();
        assert_eq!(when, t0 + Duration::from_millis(100));
        assert!(b.take(when).is_ok());
        assert!(b.take(when).is_err());
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        let later = t0 + Duration::from_secs(60);
        assert!(b.take(later).is_ok());
        assert!(b.take(later).is_ok());
        assert!(b.take(later).is_err());
    }

    #[test]
    fn full_again_once_refilled() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10, 2, t0);
        assert!(b.is_full(t0));
        b.take(t0).unwrap();
        assert!(!b.is_full(t0 + Duration::from_millis(50)));
        assert!(b.is_full(t0 + Duration::from_millis(100)));
    }

    #[test]
    fn a_cost_past_the_burst_is_debt_repaid_before_the_next() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(1000, 100, t0);
        assert!(b.ready(t0).is_ok());
        b.spend(300);
        // 100 - 300 = -200: a whole token again after 201 ms.
        let when = b.ready(t0).unwrap_err();
        assert_eq!(when, t0 + Duration::from_millis(201));
        assert!(b.ready(when).is_ok());
    }

    #[test]
    fn rate_zero_never_limits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        for _ in 0..10_000 {
            assert!(b.take(t0).is_ok());
        }
    }
}
