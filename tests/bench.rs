//! `pollchat bench` against in-process servers: it counts every delivery,
//! notices losses (and exits non-zero for them), answers a login prompt,
//! and reports whether a stalled client was cut off.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_app, start_chat, test_limits};
use pollchat::app::{App, ClientId, Outbox};
use pollchat::bench::{self, BenchConfig, LoadPlan, SwarmPlan};
use pollchat::config::{EngineKind, Limits};

/// A bare relay App for the tests: forwards lines to everyone else, but only
/// from clients that first sent `login` (if set), and drops every
/// `drop_every`-th line (if set), so the bench has something to find.
struct TestRelay {
    login: Option<&'static str>,
    drop_every: Option<usize>,
    logged_in: Vec<ClientId>,
    lines: usize,
}

impl TestRelay {
    fn new(login: Option<&'static str>, drop_every: Option<usize>) -> Self {
        Self {
            login,
            drop_every,
            logged_in: Vec::new(),
            lines: 0,
        }
    }
}

impl App for TestRelay {
    fn handle_joined(&mut self, _: ClientId, _: SocketAddr, _: Instant, _: &mut Outbox) {}

    fn handle_line(&mut self, client: ClientId, line: &str, _: Instant, out: &mut Outbox) {
        if let Some(login) = self.login
            && !self.logged_in.contains(&client)
        {
            if line.starts_with(login) {
                self.logged_in.push(client);
            }
            return;
        }
        self.lines += 1;
        if self
            .drop_every
            .is_some_and(|n| self.lines.is_multiple_of(n))
        {
            return;
        }
        out.all_but(client, &format!("[{}] {line}", client.0));
    }

    fn handle_left(&mut self, _: ClientId, _: Instant, _: &mut Outbox) {}
}

fn config(addr: SocketAddr, receivers: usize, messages: u64) -> BenchConfig {
    BenchConfig {
        swarm: SwarmPlan {
            addr,
            receivers,
            stalled: 0,
            login: None,
            connect_rate: 1000,
            connect_timeout: Duration::from_secs(10),
            tls: None,
            ws: None,
        },
        load: LoadPlan {
            rate: 0.0,
            window: 8,
            payload: 40,
            messages: Some(messages),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(2),
        },
        server_pid: None,
    }
}

/// Against the chat room every probe reaches every receiver once, in order,
/// and the join notices it reads meanwhile are not mistaken for probes.
#[test]
fn counts_every_delivery_from_the_chat_room() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let report = bench::run(&config(server.local_addr(), 10, 200)).unwrap();
    assert_all_delivered(&report, 10, 200);
}

/// `messages` probes each reached all `receivers` once, in order, with a
/// latency each, and nothing else was taken for a probe.
#[track_caller]
fn assert_all_delivered(report: &bench::Report, receivers: u64, messages: u64) {
    assert_eq!(report.sent, messages);
    assert_eq!(report.deliveries, receivers * messages);
    assert_eq!(
        (
            report.lost,
            report.duplicated,
            report.reordered,
            report.strays
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(report.fanout_us.count, messages);
    assert_eq!(report.per_delivery_us.count, receivers * messages);
    assert!(report.fanout_us.p50 > 0.0);
}

/// At a fixed pace the sender stops at `--messages` and still loses nothing.
#[test]
fn paced_run_sends_exactly_the_asked_number() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut cfg = config(server.local_addr(), 3, 20);
    cfg.load.rate = 400.0;
    cfg.load.window = 0;
    let report = bench::run(&cfg).unwrap();
    assert_eq!((report.sent, report.deliveries, report.lost), (20, 60, 0));
}

/// A server that drops lines shows up as lost deliveries.
#[test]
fn dropped_lines_are_counted_as_lost() {
    let server = start_app(
        EngineKind::Poll,
        test_limits(),
        TestRelay::new(None, Some(4)),
    );
    let mut cfg = config(server.local_addr(), 5, 40);
    cfg.load.drain = Duration::from_millis(300);
    let report = bench::run(&cfg).unwrap();
    assert_eq!(report.sent, 40);
    assert_eq!(report.lost, 10 * 5);
    assert_eq!(report.deliveries, 30 * 5);
}

/// `--login TEXT` goes out first on every connection, `{i}` numbered.
#[test]
fn login_line_is_sent_first() {
    let server = start_app(
        EngineKind::Poll,
        test_limits(),
        TestRelay::new(Some("NICK bench"), None),
    );
    let mut cfg = config(server.local_addr(), 4, 30);
    cfg.swarm.login = Some("NICK bench{i}".into());
    let report = bench::run(&cfg).unwrap();
    assert_eq!((report.deliveries, report.lost), (120, 0));
}

/// A client that never reads is cut off by the chat room once it falls
/// `--log-cap` behind, and the receivers lose nothing meanwhile.
#[test]
fn stalled_reader_is_reported_disconnected() {
    let limits = Limits {
        log_cap: 64 * 1024,
        ..test_limits()
    };
    let server = start_chat(EngineKind::Poll, limits);
    // 8 MB: more than the kernel buffers a non-reading socket.
    let mut cfg = config(server.local_addr(), 3, 8000);
    cfg.swarm.stalled = 1;
    cfg.load.payload = 1000;
    let report = bench::run(&cfg).unwrap();
    assert_eq!(report.stalled_disconnected, vec![true]);
    assert_eq!(report.lost, 0);
    assert_eq!(report.deliveries, 3 * 8000);
}

/// A stalled client under light traffic stays connected, and says so.
#[test]
fn stalled_reader_under_light_load_stays_connected() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut cfg = config(server.local_addr(), 2, 10);
    cfg.swarm.stalled = 1;
    let report = bench::run(&cfg).unwrap();
    assert_eq!(report.stalled_disconnected, vec![false]);
    assert_eq!(report.lost, 0);
}

/// With `--server-pid` the report carries the server's memory.
#[test]
fn server_pid_adds_memory_figures() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut cfg = config(server.local_addr(), 2, 10);
    cfg.server_pid = Some(std::process::id());
    let report = bench::run(&cfg).unwrap();
    let memory = report.memory.expect("memory figures");
    assert!(memory.rss_connected > 0 && memory.rss_final > 0);
    assert!(memory.rss_peak >= memory.rss_final);
}

/// The binary prints JSON with `--json` and exits 1 when something was lost.
#[test]
fn binary_exit_status_reports_losses() {
    let lossy = start_app(
        EngineKind::Poll,
        test_limits(),
        TestRelay::new(None, Some(2)),
    );
    let good = start_chat(EngineKind::Poll, test_limits());
    let run = |addr: SocketAddr| {
        Command::new(env!("CARGO_BIN_EXE_pollchat"))
            .args(["bench", "--host", "127.0.0.1", "--json", "--drain", "0.3"])
            .args(["-n", "3", "--window", "4", "--messages", "20"])
            .args(["--port", &addr.port().to_string()])
            .output()
            .expect("run pollchat bench")
    };
    let out = run(lossy.local_addr());
    assert_eq!(out.status.code(), Some(1));
    let json = String::from_utf8(out.stdout).unwrap();
    assert!(json.contains("\"lost\": 30"), "{json}");
    let out = run(good.local_addr());
    assert_eq!(out.status.code(), Some(0));
}

/// Nobody listening: one clear line and status 2.
#[test]
fn no_server_is_a_start_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .args(["bench", "--port", &port.to_string(), "-n", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("cannot connect"), "{err}");
}

// ----- over TLS (`--tls`) -----------------------------------------------------
//
// Against pollchat's TLS listener, on both engines.

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use common::tls::{TestCert, start_chat_tls, tls_addr};
    use pollchat::bench::TlsPlan;
    use pollchat::client::tls::ClientTls;
    use pollchat::tls::Verify;

    /// Every connection over TLS, trusting the test certificate.
    fn tls_config(
        addr: SocketAddr,
        cert: &TestCert,
        receivers: usize,
        messages: u64,
    ) -> BenchConfig {
        let mut cfg = config(addr, receivers, messages);
        cfg.swarm.tls = Some(TlsPlan {
            config: ClientTls::new(&Verify::AlsoTrust(cert.cert.clone())).unwrap(),
            server_name: "localhost".into(),
        });
        cfg
    }

    /// Over TLS every probe still reaches every receiver once, in order; a
    /// stalled TLS client (it must finish its handshake to be connected at
    /// all) is counted and, under light load, left connected.
    fn counts_every_delivery_over_tls(engine: EngineKind) {
        let cert = TestCert::new();
        let server = start_chat_tls(engine, test_limits(), &cert);
        let mut cfg = tls_config(tls_addr(&server), &cert, 10, 200);
        cfg.swarm.stalled = 1;
        let report = bench::run(&cfg).unwrap();
        assert!(report.tls);
        assert_all_delivered(&report, 10, 200);
        assert_eq!(
            report.connect_us.count, 12,
            "one per connection, handshake included"
        );
        assert_eq!(report.stalled_disconnected, vec![false]);
    }

    /// A stalled TLS client (handshake done, then never reads) is cut off by
    /// the room once it falls `--log-cap` behind, and the receivers lose
    /// nothing meanwhile: it stalls like a plain one.
    fn stalled_tls_reader_is_reported_disconnected(engine: EngineKind) {
        let cert = TestCert::new();
        let limits = Limits {
            log_cap: 64 * 1024,
            ..test_limits()
        };
        let server = start_chat_tls(engine, limits, &cert);
        // 8 MB: more than the kernel buffers a non-reading socket.
        let mut cfg = tls_config(tls_addr(&server), &cert, 3, 8000);
        cfg.swarm.stalled = 1;
        cfg.load.payload = 1000;
        let report = bench::run(&cfg).unwrap();
        assert_eq!(report.stalled_disconnected, vec![true]);
        assert_eq!((report.lost, report.deliveries), (0, 3 * 8000));
    }

    /// The binary: `--tls --ca` against the TLS port reports 0 lost (exit
    /// 0); without `--ca` the handshake is refused with the reason (exit 2,
    /// the run could not be made).
    fn binary_over_tls_with_and_without_ca(engine: EngineKind) {
        let cert = TestCert::new();
        let server = start_chat_tls(engine, test_limits(), &cert);
        let port = tls_addr(&server).port().to_string();
        let run = |extra: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_pollchat"))
                .args(["bench", "--tls", "--port", &port, "-n", "3"])
                .args(["--window", "4", "--messages", "20", "--drain", "2"])
                .args(extra)
                .output()
                .expect("run pollchat bench")
        };
        let ca = cert.cert.display().to_string();
        let out = run(&["--ca", &ca]);
        let table = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{table}");
        assert!(table.contains(" over TLS: 3 receivers"), "{table}");
        assert!(table.contains("sent 20  deliveries 60 "), "{table}");
        assert!(table.contains(" lost 0 "), "{table}");

        let out = run(&[]);
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8(out.stderr).unwrap();
        // Whichever connection's handshake fails first (they run at once).
        assert!(
            err.starts_with("pollchat: connection #")
                && err.contains(": TLS handshake failed: certificate not trusted"),
            "{err}"
        );
        assert_eq!(err.lines().count(), 1, "{err}");
    }

    engine_tests!(
        counts_every_delivery_over_tls,
        stalled_tls_reader_is_reported_disconnected,
        binary_over_tls_with_and_without_ca,
    );
}
