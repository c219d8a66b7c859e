//! Delivery accounting for a bench run. Sans-IO: the load loop tells it what
//! was sent and what each receiver read, with the time passed in, and it
//! keeps the latency histograms and the lost / duplicated / reordered counts.
//!
//! A bench worker (`--workers`) sends nothing: it is told how many probes to
//! expect, learns each one's send time from the stamp in its token, and
//! hands its per-probe counts to the coordinator as a [`WorkerShare`].

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::token::{self, MAX_SEQ, MonoClock};
use super::worker::{ProbeShare, WorkerShare, histogram_counts};

/// Latencies are kept in nanoseconds, from 1 ns up to this, to 3 digits.
const HIGHEST_NS: u64 = 120_000_000_000;

/// One probe the sender wrote.
#[derive(Debug)]
struct Probe {
    /// When the bench produced it (the start of its latency); for a
    /// worker, `None` until its stamp is first read.
    sent_at: Option<Instant>,
    /// Send → the latest receiver so far, in nanoseconds.
    latest_ns: u64,
    /// How many distinct receivers have it so far.
    receivers_with_it: usize,
    /// It took so long that it no longer holds a `--window` slot.
    given_up: bool,
}

/// What one receiver has seen.
#[derive(Debug, Default)]
struct ReceiverLog {
    /// Bit `seq` is set once this receiver has the probe: catches duplicates.
    seen: Vec<u64>,
    /// The highest probe seen so far: a lower one arriving later is reordered.
    highest: Option<u32>,
    /// Distinct probes it has, so losses can be told per receiver (and so
    /// per node, when receivers are spread over a cluster).
    deliveries: u64,
}

impl ReceiverLog {
    /// Mark `seq` seen; false if it already was.
    fn mark(&mut self, seq: u32) -> bool {
        let (word, bit) = (seq as usize / 64, seq % 64);
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        let fresh = self.seen[word] & (1 << bit) == 0;
        self.seen[word] |= 1 << bit;
        fresh
    }
}

/// Tracks every probe until it reached every receiver.
pub struct Tracker {
    receivers: Vec<ReceiverLog>,
    probes: Vec<Probe>,
    /// Probes not yet at every receiver.
    outstanding: usize,
    /// Outstanding probes too old to hold a window slot (probably lost).
    given_up: usize,
    /// Probes before this index are fully delivered or given up.
    oldest_open: usize,
    /// Send → one receiver has it, for every delivery.
    per_delivery: Histogram<u64>,
    /// Send → the last receiver has it, once per fully delivered probe.
    fanout: Histogram<u64>,
    deliveries: u64,
    duplicates: u64,
    reordered: u64,
    /// Tokens for probes never sent (a corrupting server).
    strays: u64,
    last_delivery: Option<Instant>,
    /// Ties the probes' stamps to `Instant`s.
    clock: MonoClock,
}

/// The tally at the end of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub deliveries: u64,
    /// Deliveries that should have happened and did not.
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub strays: u64,
    /// From the first probe sent to the last delivery.
    pub active: Duration,
}

impl Tracker {
    pub fn new(receivers: usize) -> Self {
        let histogram = || {
            Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("static histogram bounds are valid")
        };
        Self {
            receivers: (0..receivers).map(|_| ReceiverLog::default()).collect(),
            probes: Vec::new(),
            outstanding: 0,
            given_up: 0,
            oldest_open: 0,
            per_delivery: histogram(),
            fanout: histogram(),
            deliveries: 0,
            duplicates: 0,
            reordered: 0,
            strays: 0,
            last_delivery: None,
            clock: MonoClock::new(),
        }
    }

    /// A worker's tracker: `count` probes will come from a sender elsewhere.
    pub fn expecting(receivers: usize, count: u32) -> Self {
        let mut t = Self::new(receivers);
        for _ in 0..count.min(MAX_SEQ + 1) {
            t.push_probe(None);
        }
        t
    }

    /// A worker learns how many probes were really sent: the rest it was
    /// told to expect are not lost, they never existed.
    pub fn only_sent(&mut self, sent: u64) {
        let sent = usize::try_from(sent).unwrap_or(usize::MAX);
        if sent >= self.probes.len() {
            return;
        }
        self.probes.truncate(sent);
        let everyone = self.receivers.len();
        self.outstanding = self
            .probes
            .iter()
            .filter(|p| p.receivers_with_it < everyone)
            .count();
        self.oldest_open = self.oldest_open.min(sent);
        self.given_up = 0;
    }

    /// The monotonic stamp a probe produced at `at` carries.
    pub fn stamp(&self, at: Instant) -> u64 {
        self.clock.stamp(at)
    }

    /// The sequence number the next probe will carry, if any is left.
    pub fn next_seq(&self) -> Option<u32> {
        u32::try_from(self.probes.len())
            .ok()
            .filter(|&s| s <= MAX_SEQ)
    }

    /// A probe with `next_seq()` was produced at `at`.
    pub fn on_sent(&mut self, at: Instant) {
        self.push_probe(Some(at));
    }

    fn push_probe(&mut self, sent_at: Option<Instant>) {
        self.probes.push(Probe {
            sent_at,
            latest_ns: 0,
            receivers_with_it: 0,
            given_up: false,
        });
        self.outstanding += 1;
    }

    /// Probes sent that have not reached every receiver.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Probes that hold a `--window` slot at `now`: sent, not yet at every
    /// receiver, and younger than `give_up_after`. Without the age limit a
    /// server that loses lines would fill the window and stop the run.
    pub fn in_flight(&mut self, now: Instant, give_up_after: Duration) -> usize {
        let everyone = self.receivers.len();
        while let Some(probe) = self.probes.get_mut(self.oldest_open) {
            if probe.receivers_with_it < everyone {
                let sent_at = probe.sent_at.unwrap_or(now);
                if now.saturating_duration_since(sent_at) < give_up_after {
                    break;
                }
                probe.given_up = true;
                self.given_up += 1;
            }
            self.oldest_open += 1;
        }
        self.outstanding - self.given_up
    }

    /// Complete lines (one or more, `\n`-separated) read by `receiver` at
    /// `at`.
    pub fn on_lines(&mut self, receiver: usize, line: &[u8], at: Instant) {
        for seen in token::tokens_in(line) {
            self.on_delivery(receiver, seen, at);
        }
    }

    fn on_delivery(&mut self, receiver: usize, seen: token::Seen, at: Instant) {
        let seq = seen.seq;
        let clock = self.clock;
        let Some(probe) = self.probes.get_mut(seq as usize) else {
            self.strays += 1;
            return;
        };
        let log = &mut self.receivers[receiver];
        if !log.mark(seq) {
            self.duplicates += 1;
            return;
        }
        if log.highest.is_some_and(|h| seq < h) {
            self.reordered += 1;
        }
        log.highest = log.highest.max(Some(seq));
        log.deliveries += 1;
        self.deliveries += 1;
        self.last_delivery = Some(at);
        let sent_at = *probe
            .sent_at
            .get_or_insert_with(|| clock.instant(seen.sent_ns));
        let latency = nanos(at.saturating_duration_since(sent_at));
        self.per_delivery.saturating_record(latency);
        probe.latest_ns = probe.latest_ns.max(latency);
        probe.receivers_with_it += 1;
        if probe.receivers_with_it == self.receivers.len() {
            self.fanout.saturating_record(latency);
            self.outstanding -= 1;
            if probe.given_up {
                self.given_up -= 1;
            }
        }
    }

    /// Probes sent that `receiver` has not had (so far).
    pub fn lost_by(&self, receiver: usize) -> u64 {
        self.probes.len() as u64 - self.receivers[receiver].deliveries
    }

    pub fn per_delivery(&self) -> &Histogram<u64> {
        &self.per_delivery
    }

    pub fn fanout(&self) -> &Histogram<u64> {
        &self.fanout
    }

    /// What a worker tells the coordinator: per probe, how many of its
    /// receivers have it and how late the last one was.
    pub fn share(&self) -> WorkerShare {
        WorkerShare {
            receivers: self.receivers.len(),
            probes: self
                .probes
                .iter()
                .map(|p| ProbeShare {
                    receivers: p.receivers_with_it as u64,
                    latest_ns: p.latest_ns,
                })
                .collect(),
            per_delivery: histogram_counts(&self.per_delivery),
            duplicated: self.duplicates,
            reordered: self.reordered,
            strays: self.strays,
            ..WorkerShare::default()
        }
    }

    pub fn tally(&self) -> Tally {
        let expected = self.probes.len() as u64 * self.receivers.len() as u64;
        let first_sent = self.probes.first().and_then(|p| p.sent_at);
        let active = match (first_sent, self.last_delivery) {
            (Some(first), Some(last)) => last.saturating_duration_since(first),
            _ => Duration::ZERO,
        };
        Tally {
            sent: self.probes.len() as u64,
            deliveries: self.deliveries,
            lost: expected - self.deliveries,
            duplicated: self.duplicates,
            reordered: self.reordered,
            strays: self.strays,
            active,
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u32) -> Vec<u8> {
        let mut buf = b"<user1> ".to_vec();
        token::write_probe(&mut buf, seq, 0, 20);
        buf.pop();
        buf
    }

    #[test]
    fn full_fanout_is_recorded_when_the_last_receiver_has_it() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2);
        t.on_sent(t0);
        t.on_lines(0, &line(0), t0 + Duration::from_micros(100));
        assert_eq!(t.outstanding(), 1);
        assert_eq!(t.fanout().len(), 0);
        t.on_lines(1, &line(0), t0 + Duration::from_micros(300));
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.per_delivery().len(), 2);
        assert_eq!(t.fanout().len(), 1);
        let fanout_max = t.fanout().max();
        assert!((299_000..=301_000).contains(&fanout_max), "{fanout_max}");
        let tally = t.tally();
        assert_eq!((tally.sent, tally.deliveries, tally.lost), (1, 2, 0));
        assert_eq!(tally.active, Duration::from_micros(300));
    }

    #[test]
    fn duplicates_reorders_strays_and_losses_are_counted() {
        let t0 = Instant::now();
        let mut t = Tracker::new(2);
        for _ in 0..3 {
            t.on_sent(t0);
        }
        t.on_lines(0, &line(1), t0);
        t.on_lines(0, &line(0), t0);
        t.on_lines(0, &line(0), t0);
        t.on_lines(0, &line(9), t0);
        t.on_lines(1, b"* user3 joined", t0);
        let tally = t.tally();
        assert_eq!(tally.deliveries, 2);
        assert_eq!(tally.reordered, 1);
        assert_eq!(tally.duplicated, 1);
        assert_eq!(tally.strays, 1);
        assert_eq!(tally.lost, 4);
        assert_eq!((t.lost_by(0), t.lost_by(1)), (1, 3));
        assert_eq!(t.outstanding(), 3);
    }

    /// A worker never sent the probes: it learns each one's send time from
    /// the stamp in its token, and a probe it was told to expect and never
    /// saw is lost.
    #[test]
    fn a_worker_times_probes_by_their_stamps() {
        let mut t = Tracker::expecting(2, 3);
        let sent = Instant::now();
        let stamped = |seq: u32, ns: u64| {
            let mut buf = b"<alice> ".to_vec();
            token::write_probe(&mut buf, seq, ns, 40);
            buf.pop();
            buf
        };
        let ms = Duration::from_millis(1);
        t.on_lines(0, &stamped(0, t.stamp(sent)), sent + 4 * ms);
        t.on_lines(1, &stamped(0, t.stamp(sent)), sent + 7 * ms);
        t.on_lines(0, &stamped(1, t.stamp(sent + ms)), sent + 2 * ms);
        let share = t.share();
        assert_eq!(share.probes.len(), 3);
        assert_eq!(share.probes[0].receivers, 2);
        assert_eq!(share.probes[0].latest_ns, 7_000_000);
        assert_eq!(
            (share.probes[1].receivers, share.probes[1].latest_ns),
            (1, 1_000_000)
        );
        assert_eq!(share.probes[2].receivers, 0);
        assert_eq!(t.outstanding(), 2);
        assert_eq!(t.tally().lost, 3);
        assert_eq!((t.lost_by(0), t.lost_by(1)), (1, 2));
        // Only two were sent after all: the third is not lost.
        t.only_sent(2);
        assert_eq!(t.share().probes.len(), 2);
        assert_eq!((t.lost_by(0), t.lost_by(1)), (0, 1));
        assert_eq!(t.outstanding(), 1);
    }

    #[test]
    fn old_undelivered_probes_stop_holding_window_slots() {
        let t0 = Instant::now();
        let second = Duration::from_secs(1);
        let mut t = Tracker::new(1);
        t.on_sent(t0);
        t.on_sent(t0 + second);
        assert_eq!(t.in_flight(t0 + second, second), 1);
        t.on_lines(0, &line(1), t0 + second);
        assert_eq!(t.in_flight(t0 + second, second), 0);
        // The given-up probe still counts if it arrives after all.
        t.on_lines(0, &line(0), t0 + 3 * second);
        assert_eq!(t.outstanding(), 0);
        assert_eq!(t.in_flight(t0 + 3 * second, second), 0);
        assert_eq!(t.tally().lost, 0);
    }
}
