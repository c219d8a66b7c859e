//! Bad input and faults, in-process: each limit's documented response, and
//! proof that everyone else is unaffected. Run against every engine.

mod common;

use std::net::Shutdown;
use std::time::Duration;

use common::{Client, start_chat, test_limits};
use pollchat::config::{EngineKind, Limits};

/// A line over `--max-line` is dropped up to its newline; the sender gets
/// one error, stays connected, and its next line is delivered.
fn line_too_long_is_refused_but_client_stays(engine: EngineKind) {
    let limits = Limits {
        max_line: 100,
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let mut a = Client::join_as(server.local_addr(), "alice");
    let mut b = Client::join_as(server.local_addr(), "bob");
    a.skip_until(|l| l.ends_with("bob"));
    let long = "y".repeat(5000);
    a.send(&long);
    a.expect("! line too long (max 100 bytes)");
    a.send("short again");
    b.expect("<alice> short again");
}

/// A client that stops reading is cut off once its queue passes `--sendq`;
/// every other client receives every line, in order.
fn slow_reader_is_disconnected_others_get_everything(engine: EngineKind) {
    let limits = Limits {
        sendq: 64 * 1024,
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let mut sender = Client::join_as(addr, "sender");
    let mut stalled = Client::join_as(addr, "stalled");
    let mut readers: Vec<Client> = (0..3)
        .map(|i| Client::join_as(addr, &format!("r{i}")))
        .collect();
    sender.skip_until(|l| l.ends_with("r2"));
    for r in readers.iter_mut().take(2) {
        r.skip_until(|l| l.ends_with("r2"));
    }
    // ~8 MB: far more than loopback socket buffers plus `sendq` can hold.
    const LINES: usize = 40_000;
    let payload = "z".repeat(200);
    let (progress, acks) = std::sync::mpsc::channel();
    let handles: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(id, mut r)| {
            let progress = progress.clone();
            std::thread::spawn(move || {
                for i in 0..LINES {
                    let line = r.skip_until(|l| l.starts_with("<sender> "));
                    assert!(
                        line.starts_with(&format!("<sender> {i} ")),
                        "line {i}: {line:.40}"
                    );
                    if i % WINDOW == 0 {
                        let _ = progress.send(id);
                    }
                }
            })
        })
        .collect();
    // The sender stays at most two windows (a fraction of `sendq`) ahead of
    // the readers, so only the stalled client can fall behind.
    const WINDOW: usize = 100;
    let mut windows_read = [0usize; 3];
    for i in 0..LINES {
        while windows_read.iter().min().unwrap() * WINDOW + WINDOW * 2 <= i {
            let id = acks
                .recv_timeout(common::READ_TIMEOUT)
                .expect("readers stopped");
            windows_read[id] += 1;
        }
        sender.send(&format!("{i} {payload}"));
    }
    for h in handles {
        h.join().expect("a reader missed or reordered a line");
    }
    // The stalled client now reads: whatever was buffered, then the close.
    let seen = stalled.read_to_close();
    assert!(seen.len() < LINES, "stalled client was never cut off");
    sender.send("/who");
    let who = sender.skip_until(|l| l.starts_with("* ") && l.contains("here:"));
    assert!(!who.contains("stalled"), "{who}");
}

/// A flooder above `--rate` is slowed, not cut: all its lines arrive in
/// order, and another client's line gets through while the flood is paced.
fn flood_is_paced_not_dropped(engine: EngineKind) {
    let limits = Limits {
        rate: 40,
        burst: 10,
        ..Limits::default()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let mut flooder = Client::join_as(addr, "flooder");
    let mut other = Client::join_as(addr, "other");
    let mut watcher = Client::join_as(addr, "watcher");
    flooder.skip_until(|l| l.ends_with("watcher"));
    other.skip_until(|l| l.ends_with("watcher"));
    let burst: String = (0..60).map(|i| format!("flood {i}\n")).collect();
    flooder.send_raw(burst.as_bytes());
    // Wait until the flood is visibly under way, then speak.
    watcher.expect("<flooder> flood 0");
    other.send("still here");
    let mut next = 1;
    let mut other_seen_at = None;
    while next < 60 {
        let line = watcher.line();
        if line == "<other> still here" {
            other_seen_at = Some(next);
        } else {
            assert_eq!(line, format!("<flooder> flood {next}"));
            next += 1;
        }
    }
    // 60 lines at 40/s after a burst of 10 take over a second; the other
    // client's line must not have waited behind them.
    let at = other_seen_at.unwrap_or_else(|| {
        watcher.expect("<other> still here");
        60
    });
    assert!(
        at < 60,
        "the other client's line waited for the whole flood"
    );
}

/// At `--max-clients` a newcomer gets `! server full` and is closed; once
/// someone leaves, a newcomer is admitted again.
fn max_clients_refuses_then_recovers(engine: EngineKind) {
    let limits = Limits {
        max_clients: 2,
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let (mut a, _) = Client::join(addr);
    let (b, _) = Client::join(addr);
    let mut refused = Client::connect(addr);
    assert_eq!(refused.read_to_close(), vec!["! server full".to_string()]);
    drop(b);
    a.skip_until(|l| l.ends_with(" left"));
    let (_c, name) = Client::join(addr);
    assert!(name.starts_with("user"));
}

/// Over `--max-per-ip`, a newcomer gets a refusal line and is closed.
fn max_per_ip_refuses(engine: EngineKind) {
    let limits = Limits {
        max_per_ip: 2,
        per_ip_exempts_loopback: false,
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let _a = Client::join(addr);
    let _b = Client::join(addr);
    let mut refused = Client::connect(addr);
    assert_eq!(
        refused.read_to_close(),
        vec!["! too many connections from your address".to_string()]
    );
}

/// Clients that reset (`SO_LINGER 0`) mid-broadcast: no panic, and the
/// others lose nothing.
fn resets_mid_broadcast_lose_nothing(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut sender = Client::join_as(addr, "sender");
    let mut steady = Client::join_as(addr, "steady");
    sender.skip_until(|l| l.ends_with("steady"));
    let resetters: Vec<Client> = (0..20).map(|_| Client::join(addr).0).collect();
    const LINES: usize = 2000;
    let reader = std::thread::spawn(move || {
        for i in 0..LINES {
            let line = steady.skip_until(|l| l.starts_with("<sender> "));
            assert_eq!(line, format!("<sender> line {i}"));
        }
        steady
    });
    let mut resetters = resetters.into_iter();
    for i in 0..LINES {
        sender.send(&format!("line {i}"));
        if i % 100 == 50
            && let Some(r) = resetters.next()
        {
            let linger = socket2::SockRef::from(&r.stream).set_linger(Some(Duration::ZERO));
            linger.unwrap();
            drop(r);
        }
    }
    let mut steady = reader
        .join()
        .expect("steady client lost or reordered a line");
    sender.send("done");
    steady.skip_until(|l| l == "<sender> done");
}

/// `--idle-timeout`: a silent client is told and closed; a chatty one stays.
fn idle_timeout_closes_silent_clients(engine: EngineKind) {
    let limits = Limits {
        idle_timeout: Some(Duration::from_secs(1)),
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let (mut idle, _) = Client::join(server.local_addr());
    let lines = idle.read_to_close();
    assert_eq!(lines.last().map(String::as_str), Some("! idle timeout"));
    idle.stream.shutdown(Shutdown::Both).ok();
}

engine_tests!(
    line_too_long_is_refused_but_client_stays,
    slow_reader_is_disconnected_others_get_everything,
    flood_is_paced_not_dropped,
    max_clients_refuses_then_recovers,
    max_per_ip_refuses,
    resets_mid_broadcast_lose_nothing,
    idle_timeout_closes_silent_clients,
);
