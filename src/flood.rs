//! Flood control: a token bucket per client. Pure; `now` is passed in.
//!
//! Each line costs one token. Tokens refill at `rate` per second up to
//! `burst`, so a pasted block goes through at once and a steady flood is
//! paced. When the bucket is empty the engine *stops reading* that client
//! until [`TokenBucket::ready_at`]; nothing is dropped, and TCP pushes back
//! on the sender.

use std::time::{Duration, Instant};

/// One client's line budget.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Tokens available now (fractional so slow rates refill smoothly).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
    /// Lines per second; 0 disables flood control.
    rate: f64,
    /// Bucket size: how many lines may arrive back to back.
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

    /// Is there a token for one more line? `Err(when)`: none until `when`.
    pub fn ready(&mut self, now: Instant) -> Result<(), Instant> {
        if self.rate == 0.0 {
            return Ok(());
        }
        self.refill(now);
        if self.tokens >= 1.0 {
            Ok(())
        } else {
            Err(self.ready_at())
        }
    }

    /// Spend the token [`TokenBucket::ready`] said was there.
    pub fn spend(&mut self) {
        if self.rate != 0.0 {
            self.tokens -= 1.0;
        }
    }

    /// `ready` and `spend` in one step.
    #[cfg(test)]
    fn take(&mut self, now: Instant) -> Result<(), Instant> {
        self.ready(now)?;
        self.spend();
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
        self.updated + Duration::from_secs_f64(missing / self.rate)
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
    fn rate_zero_never_limits() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(0, 1, t0);
        for _ in 0..10_000 {
            assert!(b.take(t0).is_ok());
        }
    }
}
