//! What one bench worker reports, and how the coordinator merges the
//! reports of all of them into one run's figures. Sans-IO: plain data in,
//! plain data out; `fleet.rs` moves it between processes.
//!
//! A million receivers do not fit in one process (each is an open file),
//! so `--workers W` spreads them over W processes. Each worker counts, per
//! probe, how many of its receivers have it and how late the last one was;
//! summed over workers, a probe that every receiver has gives the fan-out
//! time of the whole room, as one process would have measured it.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are kept in nanoseconds, from 1 ns up to this, to 3 digits.
pub const HIGHEST_NS: u64 = 600_000_000_000;

/// One probe, as far as one worker's receivers go.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProbeShare {
    /// Of this worker's receivers, how many have it.
    pub receivers: u64,
    /// Send → the latest of them, in nanoseconds.
    pub latest_ns: u64,
}

/// One worker's whole report, one JSON line on its stdout.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WorkerShare {
    pub receivers: usize,
    /// Indexed by sequence number.
    pub probes: Vec<ProbeShare>,
    /// Send → each receiver: `(nanoseconds, count)` pairs of a histogram.
    pub per_delivery: Vec<(u64, u64)>,
    /// `connect()` → established: `(nanoseconds, count)` pairs.
    pub connect: Vec<(u64, u64)>,
    pub duplicated: u64,
    pub reordered: u64,
    pub strays: u64,
    /// Missed deliveries by node (an index into the run's nodes).
    pub lost_by_node: Vec<u64>,
    /// Receivers the server closed during the run.
    pub receivers_disconnected: usize,
    /// The worker's own resident memory, once connected.
    pub rss_bytes: u64,
    /// The worker's CPU time for the whole run.
    pub cpu_seconds: f64,
}

/// Every worker's share, added up, for the `sent` probes the sender wrote.
#[derive(Debug)]
pub struct Merged {
    pub receivers: usize,
    pub deliveries: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    pub strays: u64,
    pub per_delivery: Histogram<u64>,
    /// Send → the last receiver of all, once per probe everyone has.
    pub fanout: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub lost_by_node: Vec<u64>,
    pub receivers_disconnected: usize,
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

/// A histogram as `(value, count)` pairs, for JSON.
pub fn histogram_counts(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("static histogram bounds are valid")
}

fn add_counts(h: &mut Histogram<u64>, counts: &[(u64, u64)]) {
    for &(value, count) in counts {
        let _ = h.record_n(value.clamp(1, HIGHEST_NS), count);
    }
}

/// Add up `shares` for probes `0..sent` (later ones were never sent).
pub fn merge(shares: &[WorkerShare], sent: u64) -> Merged {
    let receivers: usize = shares.iter().map(|s| s.receivers).sum();
    let nodes = shares
        .iter()
        .map(|s| s.lost_by_node.len())
        .max()
        .unwrap_or(0);
    let mut m = Merged {
        receivers,
        deliveries: 0,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        strays: 0,
        per_delivery: histogram(),
        fanout: histogram(),
        connect: histogram(),
        lost_by_node: vec![0; nodes],
        receivers_disconnected: 0,
        rss_bytes: 0,
        cpu_seconds: 0.0,
    };
    for seq in 0..usize::try_from(sent).unwrap_or(usize::MAX) {
        let mut have = 0;
        let mut latest = 0;
        for probe in shares.iter().filter_map(|s| s.probes.get(seq)) {
            have += probe.receivers;
            latest = latest.max(probe.latest_ns);
        }
        m.deliveries += have;
        if have == receivers as u64 && receivers > 0 {
            let _ = m.fanout.record(latest.clamp(1, HIGHEST_NS));
        }
    }
    m.lost = (sent * receivers as u64).saturating_sub(m.deliveries);
    for s in shares {
        add_counts(&mut m.per_delivery, &s.per_delivery);
        add_counts(&mut m.connect, &s.connect);
        m.duplicated += s.duplicated;
        m.reordered += s.reordered;
        m.strays += s.strays;
        for (node, lost) in s.lost_by_node.iter().enumerate() {
            m.lost_by_node[node] += lost;
        }
        m.receivers_disconnected += s.receivers_disconnected;
        m.rss_bytes += s.rss_bytes;
        m.cpu_seconds += s.cpu_seconds;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(receivers: u64, latest_ms: u64) -> ProbeShare {
        ProbeShare {
            receivers,
            latest_ns: latest_ms * 1_000_000,
        }
    }

    /// A probe's fan-out is the latest of the workers' latest deliveries,
    /// and only once every receiver of every worker has it.
    #[test]
    fn fanout_is_the_slowest_worker_once_everyone_has_it() {
        // (receivers, probes, one latency bucket, losses by node, RSS)
        let share = |receivers, probes, bucket, lost_by_node, rss_bytes| WorkerShare {
            receivers,
            probes,
            per_delivery: vec![bucket],
            lost_by_node,
            rss_bytes,
            ..WorkerShare::default()
        };
        let a = share(
            2,
            vec![probe(2, 5), probe(2, 9), probe(1, 3)],
            (1_000_000, 5),
            vec![1, 0],
            100,
        );
        let b = share(
            3,
            vec![probe(3, 7), probe(3, 4), probe(3, 2)],
            (2_000_000, 9),
            vec![0, 0],
            50,
        );
        let m = merge(&[a, b], 3);
        assert_eq!(m.receivers, 5);
        assert_eq!(m.deliveries, 14);
        assert_eq!(m.lost, 1);
        assert_eq!(m.lost_by_node, vec![1, 0]);
        assert_eq!(m.fanout.len(), 2, "probe 2 is not at everyone");
        let ms = |ns: u64| (ns as f64 / 1e6).round() as u64;
        assert_eq!(ms(m.fanout.min()), 7, "probe 0: worker b was later");
        assert_eq!(ms(m.fanout.max()), 9, "probe 1: worker a was later");
        assert_eq!(m.per_delivery.len(), 14);
        assert_eq!(m.rss_bytes, 150);
    }

    /// Probes the sender never wrote are not counted as lost, and a worker
    /// that saw fewer probes than were sent loses the rest.
    #[test]
    fn only_sent_probes_count() {
        let a = WorkerShare {
            receivers: 1,
            probes: vec![probe(1, 1), probe(1, 1), probe(0, 0), probe(0, 0)],
            ..WorkerShare::default()
        };
        let short = WorkerShare {
            receivers: 1,
            probes: vec![probe(1, 1)],
            ..WorkerShare::default()
        };
        let m = merge(&[a, short], 2);
        assert_eq!((m.deliveries, m.lost, m.fanout.len()), (3, 1, 1));
    }

    #[test]
    fn histograms_survive_the_round_trip() {
        let mut h = histogram();
        for ns in [1_000, 1_000, 5_000_000, 3_000_000_000] {
            h.record(ns).unwrap();
        }
        let share = WorkerShare {
            per_delivery: histogram_counts(&h),
            ..WorkerShare::default()
        };
        let json = serde_json::to_string(&share).unwrap();
        let back: WorkerShare = serde_json::from_str(&json).unwrap();
        let m = merge(&[back], 0);
        assert_eq!(m.per_delivery.len(), 4);
        assert_eq!(
            m.per_delivery.value_at_quantile(0.5),
            h.value_at_quantile(0.5)
        );
        assert!(m.per_delivery.equivalent(m.per_delivery.max(), h.max()));
    }
}
