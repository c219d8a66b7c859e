//! The result of one bench run: a plain struct that prints as a table for
//! people or serialises as JSON (`--json`) for scripts.

use std::fmt;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Percentiles {
    /// From a histogram of nanoseconds; all zero when it is empty.
    pub fn from_nanos(h: &Histogram<u64>) -> Self {
        let us = |ns: u64| ns as f64 / 1000.0;
        if h.is_empty() {
            return Self {
                count: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
            };
        }
        Self {
            count: h.len(),
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p99_9: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        }
    }
}

/// What `--server-pid` found out about the server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ServerMemory {
    pub rss_before_connect: u64,
    pub rss_connected: u64,
    /// (connected − before) ÷ connections opened.
    pub bytes_per_connection: f64,
    /// Server CPU use over an idle second after connecting, in percent of
    /// one core.
    pub idle_cpu_percent: f64,
    /// Server CPU use while the load ran (100 = one core busy).
    pub load_cpu_percent: f64,
    /// Highest RSS seen while the load ran (sampled every 100 ms or so).
    pub rss_peak: u64,
    /// RSS once the load is over (before stalled clients are read).
    pub rss_final: u64,
    /// Server CPU seconds from the first connect until everyone was
    /// connected and settled: the join storm. Absent in older reports.
    #[serde(default)]
    pub join_cpu_seconds: f64,
}

/// One server the bench connected to, and who was on it: with `--addr`
/// repeated, one node of a cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NodeShare {
    /// `HOST:PORT`, or the `--ws` URL.
    pub addr: String,
    /// 1 on the first node (where probes are sent), 0 on the others.
    pub senders: usize,
    pub receivers: usize,
    pub stalled: usize,
    /// Deliveries its receivers missed; their share of the report's `lost`.
    /// On a node other than the first, a line that did not cross over.
    pub lost: u64,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// The server under test: `HOST:PORT`, the `--ws` URL, or with several
    /// `--addr` every node's, joined by ", ".
    pub server: String,
    /// Each server connected to, the sender's first, with its share of the
    /// clients and of the losses. One entry unless `--addr` was repeated;
    /// absent in reports from before `--addr`: empty.
    #[serde(default)]
    pub nodes: Vec<NodeShare>,
    pub receivers: usize,
    pub stalled: usize,
    /// Probes per second asked for (0 = unpaced).
    pub rate: f64,
    /// Most probes in flight (0 = no cap).
    pub window: usize,
    pub payload: usize,
    /// Every connection spoke TLS (`--tls`); connect times then include
    /// the handshake. Absent in reports from before TLS: false.
    #[serde(default)]
    pub tls: bool,
    /// Every connection spoke WebSocket (`--ws`, over TLS for `wss://`);
    /// connect times then include the upgrade. Absent in older reports.
    #[serde(default)]
    pub websocket: bool,
    /// The bench's own CPU use while the load ran: near 100, the bench
    /// (one thread) may be what limits a saturated run.
    pub bench_cpu_percent: f64,
    /// Seconds to open every connection.
    pub connect_seconds: f64,
    /// `connect()` → established, per connection.
    pub connect_us: Percentiles,
    pub sent: u64,
    pub deliveries: u64,
    pub deliveries_per_second: f64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
    /// Tokens for probes that were never sent (a corrupting server).
    pub strays: u64,
    /// Receivers the server closed during the run.
    pub receivers_disconnected: usize,
    /// Send → each receiver.
    pub per_delivery_us: Percentiles,
    /// Send → the last receiver.
    pub fanout_us: Percentiles,
    /// One entry per stalled client: did the server disconnect it?
    pub stalled_disconnected: Vec<bool>,
    pub memory: Option<ServerMemory>,
    /// Processes that held the receivers (`--workers`); absent in older
    /// reports: 0.
    #[serde(default)]
    pub workers: usize,
    /// Resident memory of the bench itself once connected, workers
    /// included.
    #[serde(default)]
    pub bench_rss_bytes: u64,
    /// The whole machine's CPU over the idle span after connecting, in
    /// percent of all cores (everything running on it counts).
    #[serde(default)]
    pub machine_idle_cpu_percent: f64,
    /// `--then-stop`: what the receivers saw of the server's shutdown.
    #[serde(default)]
    pub shutdown: Option<super::Shutdown>,
    /// When the load ran, in Unix milliseconds (start, end).
    #[serde(default)]
    pub load_window_unix_ms: (u64, u64),
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = match (self.rate > 0.0, self.window > 0) {
            (true, true) => format!("{} msgs/s, window {}", self.rate, self.window),
            (true, false) => format!("{} msgs/s", self.rate),
            (false, true) => format!("saturated, window {}", self.window),
            (false, false) => "saturated".to_string(),
        };
        let (over, handshake) = match (self.websocket, self.tls) {
            (true, true) => (" over WebSocket + TLS", " (TCP + TLS handshake + upgrade)"),
            (true, false) => (" over WebSocket", " (TCP + upgrade)"),
            (false, true) => (" over TLS", " (TCP + TLS handshake)"),
            (false, false) => ("", ""),
        };
        let plural = if self.nodes.len() > 1 { "s" } else { "" };
        writeln!(
            f,
            "server{plural} {}{over}: {} receivers + 1 sender + {} stalled; {mode}; {}-byte probes",
            self.server, self.receivers, self.stalled, self.payload
        )?;
        if self.nodes.len() > 1 {
            for node in &self.nodes {
                let sender = if node.senders > 0 { " + 1 sender" } else { "" };
                writeln!(
                    f,
                    "node {}: {} receivers{sender} + {} stalled; lost {}",
                    node.addr, node.receivers, node.stalled, node.lost
                )?;
            }
        }
        writeln!(
            f,
            "connect      {:.2} s for all; per connection{handshake} p50 {:.0} us, p99 {:.0} us",
            self.connect_seconds, self.connect_us.p50, self.connect_us.p99
        )?;
        writeln!(
            f,
            "sent {}  deliveries {}  ({:.0}/s)  lost {}  duplicated {}  reordered {}  stray {}  (bench CPU {:.0}%)",
            self.sent,
            self.deliveries,
            self.deliveries_per_second,
            self.lost,
            self.duplicated,
            self.reordered,
            self.strays,
            self.bench_cpu_percent
        )?;
        writeln!(
            f,
            "{:<14}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (us)", "count", "p50", "p90", "p99", "p99.9", "max"
        )?;
        for (name, p) in [
            ("per delivery", &self.per_delivery_us),
            ("full fan-out", &self.fanout_us),
        ] {
            writeln!(
                f,
                "{name:<14}{:>10}{:>10.0}{:>10.0}{:>10.0}{:>10.0}{:>10.0}",
                p.count, p.p50, p.p90, p.p99, p.p99_9, p.max
            )?;
        }
        if self.receivers_disconnected > 0 {
            writeln!(
                f,
                "receivers disconnected by the server: {}",
                self.receivers_disconnected
            )?;
        }
        if !self.stalled_disconnected.is_empty() {
            let cut = self.stalled_disconnected.iter().filter(|&&d| d).count();
            writeln!(
                f,
                "stalled clients disconnected: {cut} of {}",
                self.stalled_disconnected.len()
            )?;
        }
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        if self.workers > 1 {
            writeln!(
                f,
                "bench        {} worker processes; RSS {:.1} MiB ({:.0} B/receiver)",
                self.workers,
                mib(self.bench_rss_bytes),
                self.bench_rss_bytes as f64 / self.receivers.max(1) as f64
            )?;
        }
        writeln!(
            f,
            "machine      CPU {:.1}% of all cores while everyone was connected and idle",
            self.machine_idle_cpu_percent
        )?;
        if let Some(s) = &self.shutdown {
            writeln!(
                f,
                "shutdown     SIGTERM: {} of {} receivers told, {} closed, the last after {:.2} s",
                s.told, s.receivers, s.closed, s.seconds
            )?;
        }
        if let Some(m) = &self.memory {
            writeln!(
                f,
                "server RSS   before {:.2} MiB, connected {:.2} MiB ({:.0} B/connection), \
                 peak {:.2} MiB, final {:.2} MiB; CPU joins {:.2} s, idle {:.1}%, under load {:.0}%",
                mib(m.rss_before_connect),
                mib(m.rss_connected),
                m.bytes_per_connection,
                mib(m.rss_peak),
                mib(m.rss_final),
                m.join_cpu_seconds,
                m.idle_cpu_percent,
                m.load_cpu_percent
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_microseconds() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3).unwrap();
        for ns in [10_000, 20_000, 30_000] {
            h.record(ns).unwrap();
        }
        let p = Percentiles::from_nanos(&h);
        assert_eq!(p.count, 3);
        assert!((19.9..=20.1).contains(&p.p50), "{p:?}");
        assert!((29.9..=30.1).contains(&p.max), "{p:?}");
        let empty = Histogram::<u64>::new(3).unwrap();
        assert_eq!(Percentiles::from_nanos(&empty).count, 0);
    }
}
