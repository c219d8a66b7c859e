//! TLS sessions from end to end, beyond `tests/tls.rs`: a session used by
//! both directions at once, input larger than rustls' own buffers, every
//! orderly close (half-close, idle, shutdown) ending with `close_notify`,
//! and handshakes that hold no output. Each scenario runs on both engines.
//! (Written with the threaded engine's TLS, where reader and writer share
//! one session.)

#![cfg(feature = "tls")]

mod common;

use std::io::Read;
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use common::assert_closed_by_server;
use common::tls::{TestCert, start_chat_tls, tls_addr};
use common::{ChildServer, Client, test_limits};
use pollchat::config::{EngineKind, Limits};

/// Two TLS clients talk to each other, with lines sent in both directions
/// at once, so each session decrypts and encrypts at the same time (in the
/// threaded engine, its reader and writer take turns on it).
fn two_tls_clients_talk_both_ways_at_once(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let addr = tls_addr(&server);
    let mut a = Client::join_tls_as(addr, &cert, "alice");
    let mut b = Client::join_tls_as(addr, &cert, "bob");
    a.expect_suffix(" is now known as bob");
    const LINES: usize = 300;
    let batch_a: String = (0..LINES).map(|i| format!("a{i}\n")).collect();
    let batch_b: String = (0..LINES).map(|i| format!("b{i}\n")).collect();
    a.send_raw(batch_a.as_bytes());
    b.send_raw(batch_b.as_bytes());
    for i in 0..LINES {
        b.expect(&format!("<alice> a{i}"));
    }
    for i in 0..LINES {
        a.expect(&format!("<bob> b{i}"));
    }
}

/// Shutdown tells TLS members, then ends their sessions with
/// `close_notify`, and hangs up on a handshake in progress at once.
fn shutdown_closes_tls_sessions_cleanly(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let (mut member, _) = Client::join_tls(tls_addr(&server), &cert);
    let mut half_open = TcpStream::connect(tls_addr(&server)).unwrap();
    let _plain = Client::join(server.local_addr());
    member.expect_suffix(" joined");
    server.stop().unwrap();
    let rest = member.read_to_close_strict();
    assert_eq!(
        rest.last().map(String::as_str),
        Some("* server shutting down")
    );
    assert_closed_by_server(&mut half_open, "the half-open handshake");
}

/// A TLS client that half-closes after its line (a FIN, without a
/// `close_notify`: for a line protocol the same end) still gets everything
/// it was owed, and the server's own `close_notify`.
fn tls_half_close_still_gets_its_reply(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let (mut bob, _) = Client::join_tls(tls_addr(&server), &cert);
    alice.expect_suffix(" joined");
    bob.send("/who");
    bob.stream.shutdown(Shutdown::Write).unwrap();
    let rest = bob.read_to_close_strict();
    assert!(rest.iter().any(|l| l.contains(" here: ")), "{rest:?}");
    alice.expect_suffix(" left");
}

/// `--idle-timeout` over TLS: the reason, then `close_notify`.
fn idle_tls_client_is_told_and_closed_cleanly(engine: EngineKind) {
    let cert = TestCert::new();
    let limits = Limits {
        idle_timeout: Some(Duration::from_millis(300)),
        ..test_limits()
    };
    let server = start_chat_tls(engine, limits, &cert);
    let (mut idle, _) = Client::join_tls(tls_addr(&server), &cert);
    assert_eq!(
        idle.read_to_close_strict(),
        vec!["! idle timeout".to_string()]
    );
}

/// While a 20 MB flood passes through a log capped at 256 KiB, 50 TLS
/// connections that never finish their handshake hold none of it (they are
/// owed nothing until they join): the server's memory stays near what it
/// was, instead of keeping the flood until their handshake deadline.
fn handshaking_clients_do_not_hold_the_log(engine: EngineKind) {
    const LINES: usize = 20_000;
    let cert = TestCert::new();
    let (server, tls) =
        ChildServer::start_tls(engine, &cert, &["--rate", "0", "--log-cap", "262144"]);
    let _half_open: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(tls).unwrap()).collect();
    let (mut sender, reader) = Client::alice_and_bob(server.addr);
    let mut drain = sender.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
    });
    let before = server.rss_kib();
    let heard = common::lines_of(&reader);
    let line = "z".repeat(1000);
    // In pastes of 100 KB, each heard by bob before the next is sent: he
    // keeps up, so only the pending handshakes could hold the log.
    for chunk in 0..LINES / 100 {
        let paste: String = (chunk * 100..(chunk + 1) * 100)
            .map(|i| format!("{i} {line}\n"))
            .collect();
        sender.send_raw(paste.as_bytes());
        let last = format!("<alice> {} ", chunk * 100 + 99);
        common::recv_until(&heard, 100, |l| l.starts_with(&last));
    }
    let grew = server.rss_kib().saturating_sub(before);
    common::figure(&format!(
        "{engine:?}: RSS grew {grew} KiB during a 20 MB flood with 50 handshakes pending"
    ));
    assert!(grew < 8 * 1024, "the server kept {grew} KiB more");
}

/// A TLS member pastes 200 KB in one write, far more than the 16 KiB of
/// plaintext rustls holds unread: every line reaches a plain member, in
/// order.
fn a_tls_paste_larger_than_rustls_buffers_arrives_whole(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut plain = Client::join_as(server.local_addr(), "plain");
    let mut paster = Client::join_tls_as(tls_addr(&server), &cert, "paster");
    plain.expect_suffix(" is now known as paster");
    const LINES: usize = 200;
    let paste: String = (0..LINES)
        .map(|i| format!("{i}:{}\n", "z".repeat(1000)))
        .collect();
    paster.send_raw(paste.as_bytes());
    for i in 0..LINES {
        let line = plain.line();
        assert!(
            line.starts_with(&format!("<paster> {i}:")),
            "line {i}: {line:.40}"
        );
    }
}

engine_tests!(
    a_tls_paste_larger_than_rustls_buffers_arrives_whole,
    idle_tls_client_is_told_and_closed_cleanly,
    handshaking_clients_do_not_hold_the_log,
    two_tls_clients_talk_both_ways_at_once,
    shutdown_closes_tls_sessions_cleanly,
    tls_half_close_still_gets_its_reply,
);
