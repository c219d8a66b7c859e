//! `pollchat bench` against in-process servers: it counts every delivery,
//! notices losses (and exits non-zero for them), answers a login prompt,
//! and reports whether a stalled client was cut off; over plain TCP, TLS
//! (`--tls`) and WebSocket (`--ws`, ws:// and wss://).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{start_app, start_chat, test_limits};
use pollchat::app::{App, ClientId, Clock, Outbox, RoomId};
use pollchat::bench::{self, BenchConfig, LoadPlan, Nodes, SwarmPlan};
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

    fn handle_line(&mut self, client: ClientId, line: &str, _: Clock, out: &mut Outbox) {
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
        out.room_but(RoomId::LOBBY, client, &format!("[{}] {line}", client.0));
    }

    fn handle_left(&mut self, _: ClientId, _: Instant, _: &mut Outbox) {}
}

/// `pollchat bench ARGS` is a start-up error: exit 2, saying `want`.
#[track_caller]
fn assert_bench_refuses(args: &[&str], want: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .arg("bench")
        .args(args)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains(want), "{args:?}: {err}");
}

fn config(addr: SocketAddr, receivers: usize, messages: u64) -> BenchConfig {
    BenchConfig {
        swarm: SwarmPlan::plain(Nodes::one(addr), receivers, 1000, Duration::from_secs(10)),
        load: LoadPlan {
            rate: 0.0,
            window: 8,
            payload: 40,
            messages: Some(messages),
            duration: Duration::from_secs(10),
            drain: Duration::from_secs(2),
        },
        server_pid: None,
        workers: 1,
        all_receivers: receivers,
        part: None,
        relaunch: Vec::new(),
        then_stop: None,
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

// ----- over several nodes (`--addr` repeated) --------------------------------
//
// Two chat servers that share nothing (no Redis between them): a probe the
// sender writes on the first reaches only the receivers there, so each
// receiver's losses say which server it really was on.

/// Receivers are dealt round-robin over the nodes and the sender goes to
/// the first: the first node's receivers get every probe, the second's none
/// (nothing bridges the two), and the report says so per node. Were the
/// receivers all on one server, or the sender on the second, the per-node
/// losses would differ.
#[test]
fn receivers_are_spread_over_nodes_and_probes_sent_on_the_first() {
    let first = start_chat(EngineKind::Poll, test_limits());
    let second = start_chat(EngineKind::Poll, test_limits());
    let messages = 30;
    let mut cfg = config(first.local_addr(), 4, messages);
    cfg.swarm.nodes = Nodes::new(vec![first.local_addr(), second.local_addr()]).unwrap();
    // Unpaced and uncapped: the probes the second node never sees would
    // otherwise hold the window for a second each.
    cfg.load.window = 0;
    let report = bench::run(&cfg).unwrap();

    let shares: Vec<_> = report
        .nodes
        .iter()
        .map(|n| (n.addr.clone(), n.senders, n.receivers, n.lost))
        .collect();
    assert_eq!(
        shares,
        vec![
            (first.local_addr().to_string(), 1, 2, 0),
            (second.local_addr().to_string(), 0, 2, 2 * messages),
        ]
    );
    assert_eq!(report.sent, messages);
    assert_eq!(
        (report.deliveries, report.lost),
        (2 * messages, 2 * messages)
    );
    assert_eq!(
        report.server,
        format!("{}, {}", first.local_addr(), second.local_addr())
    );
}

/// The binary: `--addr` twice with `--messages 0` (connect only) lists
/// both nodes with their receivers, as JSON and as a table.
#[test]
fn binary_lists_each_addr_with_its_receivers() {
    let first = start_chat(EngineKind::Poll, test_limits());
    let second = start_chat(EngineKind::Poll, test_limits());
    let (a, b) = (
        first.local_addr().to_string(),
        second.local_addr().to_string(),
    );
    let run = |extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_pollchat"))
            .args(["bench", "--addr", &a, "--addr", &b, "-n", "3"])
            .args(["--messages", "0"])
            .args(extra)
            .output()
            .expect("run pollchat bench")
    };
    let out = run(&["--json"]);
    assert_eq!(out.status.code(), Some(0));
    let report: bench::Report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let shares: Vec<_> = report
        .nodes
        .iter()
        .map(|n| (n.addr.as_str(), n.senders, n.receivers, n.stalled))
        .collect();
    assert_eq!(shares, vec![(a.as_str(), 1, 2, 0), (b.as_str(), 0, 1, 0)]);
    assert_eq!(report.receivers, 3);

    let out = run(&[]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(
        table.starts_with(&format!("servers {a}, {b}: 3 receivers + 1 sender")),
        "{table}"
    );
    assert!(
        table.contains(&format!(
            "node {a}: 2 receivers + 1 sender + 0 stalled; lost 0\n"
        )),
        "{table}"
    );
    assert!(
        table.contains(&format!("node {b}: 1 receivers + 0 stalled; lost 0\n")),
        "{table}"
    );
}

/// `--addr` with flags it replaces or cannot go with, or without a port:
/// one usage error, status 2, before anything is connected.
#[test]
fn addr_flag_mistakes_are_start_errors() {
    for (args, want) in [
        (
            &["--addr", "127.0.0.1:1", "--port", "9"][..],
            "cannot be used with",
        ),
        (
            &["--addr", "127.0.0.1:1", "--host", "::1"],
            "cannot be used with",
        ),
        (
            &["--addr", "127.0.0.1:1", "--ws", "ws://127.0.0.1/ws"],
            "cannot be used with",
        ),
        (&["--addr", "127.0.0.1"], "invalid value"),
        (&["--addr", "localhost:9009"], "invalid value"),
    ] {
        assert_bench_refuses(args, want);
    }
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

// ----- over WebSocket (`--ws`) ----------------------------------------------
//
// Against pollchat's web port (`--web-port`), on both engines: every bench
// connection upgrades `/ws`, sends each line as a text frame and takes each
// frame it receives as one line.

#[cfg(feature = "web")]
mod ws {
    use super::*;
    use common::web::{start_app_web, start_chat_web, web_addr, web_listen};
    use pollchat::bench::WsPlan;

    /// Every connection a WebSocket to `ws://addr/ws`.
    pub(super) fn ws_config(addr: SocketAddr, receivers: usize, messages: u64) -> BenchConfig {
        let mut cfg = config(addr, receivers, messages);
        cfg.swarm.ws = Some(WsPlan {
            url: format!("ws://{addr}/ws"),
            host: addr.to_string(),
            path: "/ws".into(),
        });
        cfg
    }

    /// Over WebSocket every probe still reaches every receiver once, in
    /// order, and the welcome and join notices (frames too) are not taken
    /// for probes; a stalled client (it must finish the upgrade to be
    /// connected at all) is counted and, under light load, left connected.
    fn counts_every_delivery_over_websocket(engine: EngineKind) {
        let server = start_chat_web(engine, test_limits());
        let mut cfg = ws_config(web_addr(&server), 10, 200);
        cfg.swarm.stalled = 1;
        let report = bench::run(&cfg).unwrap();
        assert!(report.websocket && !report.tls);
        assert!(report.server.starts_with("ws://"), "{}", report.server);
        assert_all_delivered(&report, 10, 200);
        assert_eq!(
            report.connect_us.count, 12,
            "one per connection, upgrade included"
        );
        assert_eq!(report.stalled_disconnected, vec![false]);
        assert_eq!(report.receivers_disconnected, 0);
    }

    /// A stalled WebSocket client (upgraded, then never reads) is cut off
    /// by the room once it falls `--log-cap` behind, and the receivers lose
    /// nothing meanwhile: it stalls like a line client.
    fn stalled_websocket_reader_is_reported_disconnected(engine: EngineKind) {
        let limits = Limits {
            log_cap: 64 * 1024,
            ..test_limits()
        };
        let server = start_chat_web(engine, limits);
        // 8 MB: more than the kernel buffers a non-reading socket.
        let mut cfg = ws_config(web_addr(&server), 3, 8000);
        cfg.swarm.stalled = 1;
        cfg.load.payload = 1000;
        let report = bench::run(&cfg).unwrap();
        assert_eq!(report.stalled_disconnected, vec![true]);
        assert_eq!((report.lost, report.deliveries), (0, 3 * 8000));
    }

    /// `--login TEXT` is the first frame on every connection, on its own
    /// (the relay forwards nothing from a client before it), and each probe
    /// after it is a frame of its own.
    fn login_frame_is_sent_first(engine: EngineKind) {
        let server = start_app_web(
            engine,
            test_limits(),
            web_listen(),
            TestRelay::new(Some("NICK bench"), None),
        );
        let mut cfg = ws_config(web_addr(&server), 4, 30);
        cfg.swarm.login = Some("NICK bench{i}".into());
        let report = bench::run(&cfg).unwrap();
        assert_eq!((report.deliveries, report.lost), (120, 0));
    }

    /// The binary: `--ws ws://…` reports 0 lost (exit 0) and says it ran
    /// over WebSocket; a wrong path is refused with the server's status,
    /// and the line port with "not HTTP" (exit 2: the run could not be made).
    fn binary_over_websocket(engine: EngineKind) {
        let server = start_chat_web(engine, test_limits());
        let run = |url: &str| {
            Command::new(env!("CARGO_BIN_EXE_pollchat"))
                .args(["bench", "--ws", url, "-n", "3"])
                .args(["--window", "4", "--messages", "20", "--drain", "2"])
                .output()
                .expect("run pollchat bench")
        };
        let web = web_addr(&server);
        let out = run(&format!("ws://{web}/ws"));
        let table = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(0), "{table}");
        assert!(
            table.contains(&format!("server ws://{web}/ws over WebSocket: 3 receivers")),
            "{table}"
        );
        assert!(table.contains("sent 20  deliveries 60 "), "{table}");
        assert!(table.contains(" lost 0 "), "{table}");

        for (url, want) in [
            (format!("ws://{web}/chat"), ": the server answered 404 "),
            (
                format!("ws://{}/ws", server.local_addr()),
                ": the reply is not HTTP",
            ),
        ] {
            let out = run(&url);
            assert_eq!(out.status.code(), Some(2), "{url}");
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(
                err.starts_with("pollchat: connection #")
                    && err.contains(": WebSocket handshake failed")
                    && err.contains(want),
                "{url}: {err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }

    /// `--ws` with the flags it cannot go with: one line, status 2.
    #[test]
    fn ws_flag_mistakes_are_start_errors() {
        for (args, want) in [
            (&["--ws", "http://127.0.0.1/ws"][..], "expected ws://"),
            (
                &["--ws", "ws://127.0.0.1/ws", "--port", "9"],
                "cannot be used with",
            ),
            (
                &["--ws", "ws://127.0.0.1/ws", "--tls"],
                "cannot be used with",
            ),
            (
                &["--ws", "ws://127.0.0.1/ws", "--insecure"],
                "--ca and --insecure go with --tls or a wss:// URL",
            ),
            (
                &["--ws", "ws://127.0.0.1/ws", "--server-name", "x"],
                "--server-name goes with --tls or a wss:// URL",
            ),
        ] {
            assert_bench_refuses(args, want);
        }
    }

    engine_tests!(
        counts_every_delivery_over_websocket,
        stalled_websocket_reader_is_reported_disconnected,
        login_frame_is_sent_first,
        binary_over_websocket,
    );

    /// `wss://`: the TLS client under the WebSocket (`--ca`, as `--tls`).
    #[cfg(feature = "tls")]
    mod wss {
        use super::*;
        use common::tls::TestCert;
        use common::web::{start_app_web, web_listen};
        use pollchat::bench::TlsPlan;
        use pollchat::chat::Chat;
        use pollchat::client::tls::ClientTls;
        use pollchat::engine::RunningServer;
        use pollchat::tls::Verify;

        /// A chat room whose web port speaks https and wss with `cert`.
        fn start_chat_wss(engine: EngineKind, cert: &TestCert) -> RunningServer {
            let mut web = web_listen();
            web.https = Some((cert.cert.clone(), cert.key.clone()));
            start_app_web(engine, test_limits(), web, Chat::new())
        }

        /// Every probe reaches every receiver over wss, trusting the test
        /// certificate, and the report says both layers.
        fn counts_every_delivery_over_wss(engine: EngineKind) {
            let cert = TestCert::new();
            let server = start_chat_wss(engine, &cert);
            let port = web_addr(&server).port();
            let mut cfg = ws_config(web_addr(&server), 5, 100);
            cfg.swarm.ws = Some(WsPlan {
                url: format!("wss://localhost:{port}/ws"),
                host: format!("localhost:{port}"),
                path: "/ws".into(),
            });
            cfg.swarm.tls = Some(TlsPlan {
                config: ClientTls::new(&Verify::AlsoTrust(cert.cert.clone())).unwrap(),
                server_name: "localhost".into(),
            });
            cfg.swarm.stalled = 1;
            let report = bench::run(&cfg).unwrap();
            assert!(report.websocket && report.tls);
            assert_all_delivered(&report, 5, 100);
            assert_eq!(report.stalled_disconnected, vec![false]);
        }

        /// The binary: `--ws wss://localhost:PORT/ws --ca cert.pem` reports
        /// 0 lost (exit 0); without `--ca` the TLS handshake is refused with
        /// the reason (exit 2).
        fn binary_over_wss_with_and_without_ca(engine: EngineKind) {
            let cert = TestCert::new();
            let server = start_chat_wss(engine, &cert);
            let url = format!("wss://localhost:{}/ws", web_addr(&server).port());
            let run = |extra: &[&str]| {
                Command::new(env!("CARGO_BIN_EXE_pollchat"))
                    .args(["bench", "--ws", &url, "-n", "3"])
                    .args(["--window", "4", "--messages", "20", "--drain", "2"])
                    .args(extra)
                    .output()
                    .expect("run pollchat bench")
            };
            let ca = cert.cert.display().to_string();
            let out = run(&["--ca", &ca]);
            let table = String::from_utf8(out.stdout).unwrap();
            assert_eq!(out.status.code(), Some(0), "{table}");
            assert!(
                table.contains(&format!("server {url} over WebSocket + TLS: 3 receivers")),
                "{table}"
            );
            assert!(table.contains("sent 20  deliveries 60 "), "{table}");
            assert!(table.contains(" lost 0 "), "{table}");

            let out = run(&[]);
            assert_eq!(out.status.code(), Some(2));
            let err = String::from_utf8(out.stderr).unwrap();
            assert!(
                err.starts_with("pollchat: connection #")
                    && err.contains(": TLS handshake failed: certificate not trusted"),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }

        engine_tests!(
            counts_every_delivery_over_wss,
            binary_over_wss_with_and_without_ca,
        );
    }
}

// ----- across processes (`--workers`, `--source`) and `--then-stop` -------

/// `--workers 3`: three more `pollchat bench` processes hold the receivers,
/// this one sends, and each probe is timed by the send time it carries.
/// The merged report has every delivery once, a fan-out time per probe and
/// sane latencies (a wrong clock would give zero or hours); `--source`
/// spread the receivers over two loopback addresses, and the report's
/// per-node shares add up across the workers.
fn workers_time_probes_they_did_not_send(engine: EngineKind) {
    let first = start_chat(engine, test_limits());
    let second = start_chat(engine, test_limits());
    let (a, b) = (
        first.local_addr().to_string(),
        second.local_addr().to_string(),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .args(["bench", "--addr", &a, "--addr", &b, "-n", "31"])
        .args(["--workers", "3", "--messages", "10", "--rate", "50"])
        .args(["--source", "127.0.0.2-127.0.0.3", "--json"])
        .output()
        .expect("run pollchat bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let report: bench::Report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_eq!((report.workers, report.receivers, report.sent), (3, 31, 10));
    // Nothing bridges the two servers: only the first node's 16 receivers
    // hear the sender, the second's 15 lose every probe.
    let shares: Vec<_> = report.nodes.iter().map(|n| (n.receivers, n.lost)).collect();
    assert_eq!(shares, vec![(16, 0), (15, 150)]);
    assert_eq!((report.deliveries, report.lost), (160, 150));
    assert_eq!(report.per_delivery_us.count, 160);
    assert_eq!(report.fanout_us.count, 0, "no probe reached everyone");
    let p = &report.per_delivery_us;
    assert!(p.p50 > 0.0 && p.max < 20e6, "{p:?}");
    assert!(report.bench_rss_bytes > 0);
}

/// One server, three workers: every probe reaches all receivers, and each
/// has a full fan-out time.
fn workers_merge_into_one_fanout(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let out = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .args(["bench", "--port", &server.local_addr().port().to_string()])
        .args([
            "-n",
            "20",
            "--workers",
            "3",
            "--messages",
            "5",
            "--rate",
            "50",
        ])
        .arg("--json")
        .output()
        .expect("run pollchat bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: bench::Report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    assert_all_delivered(&report, 20, 5);
    assert!(report.fanout_us.max >= report.per_delivery_us.p50);
}

/// `--then-stop PID`: after the load the bench sends SIGTERM and watches
/// every receiver get the goodbye and its connection closed.
fn then_stop_watches_everyone_told_and_closed(engine: EngineKind) {
    let mut server = common::ChildServer::start(engine, &[]);
    let pid = server.pid().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_pollchat"))
        .args(["bench", "--port", &server.addr.port().to_string()])
        .args(["-n", "25", "--messages", "3", "--then-stop", &pid, "--json"])
        .output()
        .expect("run pollchat bench");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: bench::Report = serde_json::from_slice(&out.stdout).expect("a JSON report");
    let shutdown = report.shutdown.expect("a shutdown verdict");
    assert_eq!(
        (shutdown.receivers, shutdown.told, shutdown.closed),
        (25, 25, 25)
    );
    assert_eq!(report.receivers_disconnected, 0, "none before the signal");
    assert_eq!(server.wait_exit(Duration::from_secs(20)), Some(0));
}

engine_tests!(
    workers_time_probes_they_did_not_send,
    workers_merge_into_one_fanout,
    then_stop_watches_everyone_told_and_closed,
);

/// `--workers` with flags it cannot honour is a start error.
#[test]
fn workers_flag_mistakes_are_start_errors() {
    assert_bench_refuses(&["--workers", "2"], "--workers needs --messages");
    assert_bench_refuses(
        &["--workers", "2", "--messages", "3", "--window", "4"],
        "--workers goes with",
    );
    assert_bench_refuses(&["--source", "127.0.0.9-127.0.0.1"], "the lower first");
}
