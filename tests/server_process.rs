//! What only a separate server process can show: its memory under a flood,
//! its CPU and accept behaviour when out of file descriptors, and its exit
//! on a signal. Each scenario runs `pollchat serve` as a child, per engine.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ChildServer, Client, Link};
use pollchat::config::EngineKind;

/// Endless line: 100 MB with no newline gets the sender exactly one
/// `! line too long`, server memory grows by less than 1 MB, and the same
/// client's next line is delivered normally.
fn endless_line_keeps_memory_flat(engine: EngineKind) {
    let server = ChildServer::start(engine, &["--rate", "0"]);
    let mut a = Client::join_as(server.addr, "alice");
    let mut b = Client::join_as(server.addr, "bob");
    a.skip_until(|l| l.ends_with("bob"));
    // Warm up the read path so the baseline includes its fixed buffers.
    a.send_raw(&vec![b'w'; 256 * 1024]);
    a.send("");
    a.expect("! line too long (max 2048 bytes)");
    let before = server.rss_kib();

    let chunk = vec![b'x'; 1024 * 1024];
    let mut peak = before;
    for i in 0..100 {
        a.send_raw(&chunk);
        if i % 10 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    a.send_raw(b"\nafter the flood\n");
    b.expect("<alice> after the flood");
    peak = peak.max(server.rss_kib());
    // Exactly one error: the next thing alice hears is the reply to /who.
    a.expect("! line too long (max 2048 bytes)");
    a.send("/who");
    a.expect("* 2 users here: alice, bob");
    common::figure(&format!(
        "endless line: 100 MB sent; RSS {before} KiB before, peak {peak} KiB"
    ));
    assert!(
        peak < before + 1024,
        "RSS grew from {before} KiB to {peak} KiB during a 100 MB line"
    );
}

/// Out of file descriptors (the limit lowered under a running server with
/// `prlimit`): connected clients keep chatting, the server does not spin
/// (under 5% CPU over 2 s), warns once (rate-limited), and accepts the waiting
/// connections by itself once descriptors are free again.
fn fd_exhaustion_pauses_accepts_without_spinning(engine: EngineKind) {
    let server = ChildServer::start(engine, &["--rate", "0"]);
    let mut a = Client::join_as(server.addr, "alice");
    let mut b = Client::join_as(server.addr, "bob");
    a.skip_until(|l| l.ends_with("bob"));
    let extra: Vec<Client> = (0..6).map(|_| Client::join(server.addr).0).collect();

    let open_fds = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count();
    let limit = open_fds.to_string();
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &server.pid().to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success());

    // These complete the TCP handshake in the kernel but cannot be accepted.
    let mut waiting: Vec<Client> = (0..5).map(|_| Client::connect(server.addr)).collect();
    let cpu_before = server.cpu_ticks();
    let started = Instant::now();
    // For two seconds, the connected clients keep talking.
    let mut n = 0;
    while started.elapsed() < Duration::from_secs(2) {
        a.send(&format!("still served {n}"));
        b.skip_until(|l| l == format!("<alice> still served {n}"));
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu_ticks = server.cpu_ticks() - cpu_before;
    common::figure(&format!(
        "fd exhaustion: {cpu_ticks} CPU ticks (1/100 s) in 2 s while saturated; \
         {n} lines relayed meanwhile"
    ));
    // Clock ticks are 1/100 s: 5% of 2 s is 10 ticks.
    assert!(
        cpu_ticks < 10,
        "server used {cpu_ticks} ticks of CPU in 2 s while out of fds"
    );
    // Exactly one warning: the path was taken, and it was rate-limited.
    let warnings: Vec<String> = server
        .log
        .try_iter()
        .filter(|l| l.contains("accept"))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");

    // Free descriptors: the waiting connections are accepted and welcomed.
    drop(extra);
    for w in waiting.iter_mut() {
        let welcome = w.line();
        assert!(welcome.starts_with("* Welcome"), "{welcome}");
    }
}

/// SIGTERM and SIGINT: everyone hears `* server shutting down`, and the
/// process exits 0.
fn signals_shut_down_gracefully(engine: EngineKind) {
    for signal in ["TERM", "INT"] {
        let mut server = ChildServer::start(engine, &[]);
        let (mut a, _) = Client::join(server.addr);
        let (mut b, _) = Client::join(server.addr);
        a.skip_until(|l| l.ends_with(" joined"));
        server.signal(signal);
        a.skip_until(|l| l == "* server shutting down");
        b.skip_until(|l| l == "* server shutting down");
        assert_eq!(a.try_line(), None, "connection not closed after shutdown");
        assert_eq!(
            server.wait_exit(Duration::from_secs(10)),
            Some(0),
            "SIG{signal}"
        );
    }
}

/// Regression: one broadcast that cuts off many stalled clients at once.
/// Each cut client's departure was announced by a nested dispatch, which
/// cut off the next one, and so on: one stack frame per client (a 2 MiB
/// server thread overflowed with 1,500 such clients), and every cut client
/// was cut, logged and written to again by each level of the unwind (about
/// a million log lines for 1,400 clients). The server's stack is lowered to
/// 1 MiB so that recursing per client would overflow here too.
fn broadcast_cutting_off_many_stalled_clients_cuts_each_once(engine: EngineKind) {
    const STALLED: usize = 1000;
    // Every join and departure announced one by one (no big-room
    // summaries): those announcements are what used to recurse.
    let args = ["--rate", "0", "--log-cap", "16384", "--quiet-above", "5000"];
    let mut server = ChildServer::start(engine, &args);
    let status = Command::new("prlimit")
        .args(["--pid", &server.pid().to_string(), "--stack=1048576"])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success());
    let mut sender = Client::join_as(server.addr, "sender");
    let heard = common::lines_of(&sender);
    let stalled: Vec<_> = (0..STALLED)
        .map(|_| common::stalled_connection(server.addr))
        .collect();
    for _ in 0..STALLED {
        common::recv_until(&heard, 0, |l| l.ends_with(" joined"));
    }
    // 400 KB to each: far past `--log-cap` plus what the kernel buffers.
    let payload = "x".repeat(2000);
    for i in 0..200 {
        sender.send(&format!("{i} {payload}"));
    }
    // The cut-offs happen when the flood is written out, at the end of the
    // server's tick: a /who in the same tick may still list everyone. Ask
    // until the room is down to the sender (a bounded number of times).
    let mut who = String::new();
    for _ in 0..20 {
        sender.send("/who");
        who = common::recv_until(&heard, 2 * STALLED, |l| l.contains(" here: "));
        if who == "* 1 user here: sender" {
            break;
        }
    }
    assert_eq!(who, "* 1 user here: sender");

    server.signal("TERM");
    assert_eq!(server.wait_exit(Duration::from_secs(10)), Some(0));
    let cut = server.log.iter().filter(|l| l.contains("too slow")).count();
    assert_eq!(
        cut, STALLED,
        "each stalled client is cut off (and logged) once"
    );
    drop(stalled);
}

/// Connection storm: 2,000 clients connect as fast as possible, and every
/// one is accepted and welcomed, with no connect timing out. The server is
/// frozen (SIGSTOP) for the first 1,000: those handshakes can only complete
/// in the listen backlog, which must hold at least 1,000 (with the usual
/// 128, the 130th connect would never complete). The other 1,000 arrive
/// while it is busy accepting and welcoming the first.
fn connection_storm_is_accepted_in_full(engine: EngineKind) {
    const STORM: usize = 2000;
    const WHILE_FROZEN: usize = 1000;
    common::ensure_fd_limit(2 * STORM + 256);
    let server = ChildServer::start(engine, &["--rate", "0"]);
    server.signal("STOP");
    let mut storm = Vec::with_capacity(STORM);
    for i in 0..WHILE_FROZEN {
        let stream =
            TcpStream::connect_timeout(&server.addr, common::READ_TIMEOUT).unwrap_or_else(|e| {
                panic!("connect {i} to the frozen server: {e} (backlog too small?)")
            });
        storm.push(stream);
    }
    server.signal("CONT");
    for i in WHILE_FROZEN..STORM {
        let stream = TcpStream::connect(server.addr)
            .unwrap_or_else(|e| panic!("connect {i} during the storm: {e}"));
        storm.push(stream);
    }
    for (i, stream) in storm.iter().enumerate() {
        stream.set_read_timeout(Some(common::READ_TIMEOUT)).unwrap();
        let mut welcome = String::new();
        BufReader::new(stream)
            .read_line(&mut welcome)
            .unwrap_or_else(|e| panic!("client {i} got no welcome: {e}"));
        assert!(welcome.starts_with("* Welcome"), "client {i}: {welcome:?}");
    }
}

/// Stalled reader: one client stops reading while a sender pushes 15 MB to
/// 20 receivers. The 20 get every line in order; the stalled client is cut
/// off once it falls `--log-cap` behind (it sees the connection close, and
/// leaves the room); and server memory stays within its idle RSS +
/// `--log-cap` + 1 MiB throughout (sampled every 100 lines).
///
/// The sender stays at most two windows (16 lines, 16 KB) ahead of the
/// slowest receiver, so only the stalled client can fall behind, however
/// slowly a loaded machine runs the receivers, and what the server holds
/// for the 20 is small (the kernel's socket buffers take most of it).
fn stalled_reader_is_cut_off_and_memory_stays_bounded(engine: EngineKind) {
    let server = ChildServer::start(engine, &STALLED_READER_ARGS);
    let link = Link::plain(server.addr);
    stalled_reader_scenario(&server, link);
}

/// The same over TLS: the stalled client and every other receiver are TLS
/// clients (the sender and the rest are plain), so a session that stops
/// reading is held to the same bound.
#[cfg(feature = "tls")]
fn stalled_tls_reader_is_cut_off_and_memory_stays_bounded(engine: EngineKind) {
    let cert = common::tls::TestCert::new();
    let (server, tls) = ChildServer::start_tls(engine, &cert, &STALLED_READER_ARGS);
    stalled_reader_scenario(&server, Link::Tls(tls, &cert));
}

/// The same over WebSocket: the stalled client and every other receiver
/// are browsers' connections, held to the same bound.
#[cfg(feature = "web")]
fn stalled_websocket_reader_is_cut_off_and_memory_stays_bounded(engine: EngineKind) {
    let web = common::free_port();
    let port = web.to_string();
    let mut args = STALLED_READER_ARGS.to_vec();
    args.extend(["--web-port", &port]);
    let server = ChildServer::start(engine, &args);
    let web = std::net::SocketAddr::from(([127, 0, 0, 1], web));
    stalled_reader_scenario(&server, Link::Web(web));
}

const LOG_CAP: u64 = 256 * 1024;
const STALLED_READER_ARGS: [&str; 4] = ["--rate", "0", "--log-cap", "262144"];

/// The stalled-reader scenario; the stalled client and half the receivers
/// join through `link`.
fn stalled_reader_scenario(server: &ChildServer, link: Link) {
    const RECEIVERS: usize = 20;
    const LINES: usize = 15_000;
    const LINE_BYTES: usize = 1000;
    const WINDOW: usize = 8;
    assert_eq!(STALLED_READER_ARGS[3], LOG_CAP.to_string());
    let addr = server.addr;
    let mut sender = Client::join_as(addr, "sender");
    let mut stalled = link.join_as("stalled");
    let mut receivers: Vec<Client> = (0..RECEIVERS)
        .map(|i| match i % 2 {
            0 => Client::join_as(addr, &format!("r{i}")),
            _ => link.join_as(&format!("r{i}")),
        })
        .collect();
    let last = format!("r{}", RECEIVERS - 1);
    sender.expect_suffix(&last);
    for r in receivers.iter_mut().take(RECEIVERS - 1) {
        r.expect_suffix(&last);
    }
    stalled.expect_suffix(&last);
    // From here on the stalled client reads nothing.
    let idle = server.rss_kib();

    let (progress, acks) = std::sync::mpsc::channel();
    let readers: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(id, mut r)| {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for i in 0..LINES {
                    // (Skipping `* stalled left` when it comes.)
                    let line = r.skip_until(|l| l.starts_with("<sender> "));
                    assert!(
                        line.starts_with(&format!("<sender> {i} ")),
                        "receiver {id}, line {i}: {line:.40}"
                    );
                    if i % WINDOW == 0 {
                        let _ = progress.send(id);
                    }
                }
                r
            })
        })
        .collect();
    let mut windows_read = [0usize; RECEIVERS];
    let mut peak = idle;
    for i in 0..LINES {
        while windows_read.iter().min().unwrap() * WINDOW + 2 * WINDOW <= i {
            let id = acks
                .recv_timeout(common::READ_TIMEOUT)
                .expect("receivers stopped");
            windows_read[id] += 1;
        }
        let head = format!("{i} ");
        sender.send(&format!("{head}{}", "z".repeat(LINE_BYTES - head.len())));
        if i % 100 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    for reader in readers {
        reader
            .join()
            .expect("a receiver missed or reordered a line");
    }
    peak = peak.max(server.rss_kib());

    let seen = stalled.read_to_close();
    assert!(seen.len() < LINES, "the stalled client was never cut off");
    sender.send("/who");
    let who = sender.skip_until(|l| l.contains(" here: "));
    assert!(!who.contains("stalled"), "{who}");
    let bound = idle + LOG_CAP / 1024 + 1024;
    common::figure(&format!(
        "stalled reader: idle {idle} KiB, peak {peak} KiB (bound {bound} KiB); \
         the stalled client got {} of {LINES} lines",
        seen.len()
    ));
    assert!(
        peak <= bound,
        "RSS peaked at {peak} KiB; idle was {idle} KiB, so the bound is {bound} KiB"
    );
}

/// Regression: the logger wrote with `eprintln!`, which panics once stderr
/// is a closed pipe (`pollchat serve 2>&1 | head` after `head` exits), and
/// the panic took the engine down at its next log line. Now the line is
/// lost and the server keeps serving.
fn closed_stderr_does_not_stop_the_server(engine: EngineKind) {
    use std::io::{BufRead, BufReader};
    let port = common::free_port();
    let mut child = common::serve_command(engine, port, &["--max-clients", "2"])
        .spawn()
        .expect("start pollchat serve");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.contains("listening on"), "{first}");
    drop(stderr); // nobody reads the log any more
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let (mut a, mut b) = Client::alice_and_bob(addr);
    // A third client is refused, which the server logs: to a closed pipe.
    let mut refused = Client::connect(addr);
    assert_eq!(refused.read_to_close(), vec!["! server full".to_string()]);
    a.send("still there?");
    b.expect("<alice> still there?");
    assert!(child.try_wait().unwrap().is_none(), "the server exited");
    let _ = child.kill();
    let _ = child.wait();
}

/// Issue 11: logging never blocks the loop. With `-vv` every connect and
/// leave is logged, and stderr is a pipe the test does not read: it fills
/// (64 KiB) within a few hundred cycles, and a logger that waited for room
/// stopped the server there (the next welcome never came). Now lines that
/// cannot be written are dropped and counted: after enough cycles to
/// overflow the pipe and the logger's queue twice over, two clients still
/// chat, and once the test reads the pipe a line says how many were lost.
fn unread_stderr_does_not_block_the_server(engine: EngineKind) {
    // A connect line and a leave line are over 100 bytes together; the log
    // can hold the pipe, one batch being written and one queued.
    const BYTES_PER_CYCLE: usize = 100;
    const CAN_HOLD: usize = 64 * 1024 + 2 * pollchat::logging::QUEUE_BYTES;
    const CYCLES: usize = 2 * CAN_HOLD / BYTES_PER_CYCLE;
    let (server, stderr) = ChildServer::start_unread(engine, &["-vv", "--rate", "0"]);
    for i in 0..CYCLES {
        let mut c = Client::connect(server.addr);
        let welcome = c.line();
        assert!(welcome.starts_with("* Welcome"), "cycle {i}: {welcome}");
    }
    let (mut a, mut b) = Client::alice_and_bob(server.addr);
    a.send("still serving?");
    b.expect("<alice> still serving?");

    // Reading again: the queued lines come out, then how many were lost.
    let log = common::forward_lines(stderr);
    let notice = (0..1_000_000)
        .map(|_| {
            log.recv_timeout(common::READ_TIMEOUT)
                .expect("no dropped-lines notice in the log")
        })
        .find(|l| l.contains("log lines dropped"))
        .expect("no dropped-lines notice in the log");
    let dropped: u64 = notice
        .strip_prefix("WARN  [pollchat::logging] ")
        .and_then(|rest| rest.strip_suffix(" log lines dropped: stderr was not being read"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected notice {notice:?}"));
    assert!(dropped > 0, "{notice}");
    common::figure(&format!(
        "unread stderr ({engine}): {CYCLES} connect/leave cycles, {dropped} log lines dropped"
    ));
}

engine_tests!(
    closed_stderr_does_not_stop_the_server,
    unread_stderr_does_not_block_the_server,
    stalled_reader_is_cut_off_and_memory_stays_bounded,
    broadcast_cutting_off_many_stalled_clients_cuts_each_once,
    connection_storm_is_accepted_in_full,
    endless_line_keeps_memory_flat,
    fd_exhaustion_pauses_accepts_without_spinning,
    signals_shut_down_gracefully,
);

#[cfg(feature = "tls")]
mod over_tls {
    use super::*;
    engine_tests!(stalled_tls_reader_is_cut_off_and_memory_stays_bounded);
}

#[cfg(feature = "web")]
mod over_web {
    use super::*;
    engine_tests!(stalled_websocket_reader_is_cut_off_and_memory_stays_bounded);
}
