//! TLS on the threaded engine, while the shared `tests/tls.rs` is written:
//! a mixed room of plain and TLS clients, bad handshakes, the handshake
//! deadline and `--max-per-ip`, a TLS reader that stops reading, a burst
//! through a small window, and `close_notify` on every close. Each scenario
//! is `fn(engine)`, as in the shared suites, so it can move there; here it
//! runs on the threaded engine only.

#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use common::tls::{TestCert, start_app_tls, start_chat_tls, tls_addr};
use common::{ChildServer, Client, READ_TIMEOUT, test_limits};
use pollchat::chat::ChatRoom;
use pollchat::config::{EngineKind, Limits};

/// A second loopback address, so a client does not count against
/// `--max-per-ip` with those from 127.0.0.1.
const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

macro_rules! threaded_tests {
    ($($scenario:ident),* $(,)?) => {
        mod threaded {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(pollchat::config::EngineKind::Threaded);
                }
            )*
        }
    };
}

/// Read a raw socket until the server closes it (end of stream or reset);
/// panics if it stays open for `READ_TIMEOUT`.
#[track_caller]
fn assert_closed(stream: &mut TcpStream) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..10_000 {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the connection is still open: {e}"),
        }
    }
    panic!("the server kept sending");
}

/// Plain and TLS clients in one room: chat both ways, `/nick`, and a TLS
/// `/quit` that ends with `close_notify` (a TLS stream that ends without
/// it is an error to rustls, which `read_to_close_strict` would report).
fn mixed_room_chats_both_ways(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_tls_as(tls_addr(&server), &cert, "bob");
    alice.expect_suffix(" is now known as bob");
    alice.send("hello over tcp");
    bob.expect("<alice> hello over tcp");
    bob.send("hello over tls");
    alice.expect("<bob> hello over tls");
    bob.send("/nick robert");
    bob.expect("* bob is now known as robert");
    alice.expect("* bob is now known as robert");
    bob.send("/quit see you");
    assert_eq!(bob.read_to_close_strict(), vec!["* Bye!".to_string()]);
    alice.expect("* robert left (see you)");
}

/// Two TLS clients talk to each other, with lines sent in both directions
/// at once, so the reader and writer of each session work at the same time.
fn tls_clients_talk_while_both_threads_use_the_session(engine: EngineKind) {
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

/// Garbage and plain text to the TLS port: the connection is closed, and
/// the room never hears of it.
fn garbage_to_the_tls_port_is_closed_quietly(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    for junk in [
        &b"hello, is this chat?\n"[..],
        &[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3],
    ] {
        let mut raw = TcpStream::connect(tls_addr(&server)).unwrap();
        raw.write_all(junk).unwrap();
        assert_closed(&mut raw);
    }
    // Nobody joined or left: the next thing alice hears is bob.
    let _bob = Client::join_as(server.local_addr(), "bob");
    alice.expect_suffix(" joined");
    alice.expect_suffix(" is now known as bob");
}

/// A connection that never finishes its handshake (nothing sent, or half a
/// ClientHello) is closed at the handshake deadline, and until then holds
/// its address slot: with `--max-per-ip 1` the plain port refuses the same
/// address, and admits it once the half-open one is gone.
fn half_open_connections_count_and_expire(engine: EngineKind) {
    let cert = TestCert::new();
    let limits = Limits {
        max_per_ip: 1,
        per_ip_exempts_loopback: false,
        ..test_limits()
    };
    let mut listen = cert.listen();
    listen.handshake_timeout = Duration::from_millis(500);
    for half in [&[][..], &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01][..]] {
        // A server each: the last client of one case holds the slot.
        let server = start_app_tls(engine, limits.clone(), listen.clone(), ChatRoom::new());
        let mut silent = TcpStream::connect(tls_addr(&server)).unwrap();
        silent.write_all(half).unwrap();
        // The TLS port accepts in order: once a later client (from another
        // address) has been welcomed, the silent one has been admitted.
        let later = common::small_window_connection(tls_addr(&server), Some(OTHER_ADDRESS));
        Client::from_tls_stream(later, cert.client_config()).line();
        let mut refused = Client::connect(server.local_addr());
        assert_eq!(
            refused.read_to_close(),
            vec!["! too many connections from your address".to_string()]
        );
        assert_closed(&mut silent);
        // Its slot is free again once its thread is done. Closing the socket
        // comes just before releasing the slot, so retry (bounded).
        let mut joined = false;
        for _ in 0..200 {
            let mut c = Client::connect(server.local_addr());
            let first = c.line();
            if first.starts_with("* Welcome") || first.contains("You are ") {
                joined = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(joined, "the address slot was never released");
    }
}

/// A TLS member that stops reading under a flood is cut off like a plain
/// one (here by the log cap), and the member that reads gets everything.
fn stalled_tls_reader_is_cut_off(engine: EngineKind) {
    let cert = TestCert::new();
    let limits = Limits {
        log_cap: 1024 * 1024,
        ..test_limits()
    };
    let server = start_chat_tls(engine, limits, &cert);
    let (mut sender, mut reader) = Client::alice_and_bob(server.local_addr());
    // alice only sends: what she is owed is read and thrown away, so only
    // the stalled member falls behind.
    let mut drain = sender.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while matches!(drain.read(&mut buf), Ok(n) if n > 0) {}
    });
    let stream = common::stalled_connection(tls_addr(&server));
    let mut stalled = Client::from_tls_stream(stream, cert.client_config());
    stalled.line(); // the welcome: the handshake is done
    reader.expect_suffix(" joined");
    let heard = common::lines_of(&reader);
    // 4 MB, four times the log cap, in lines of 1,000 bytes.
    let lines = 4000;
    let line = "z".repeat(1000);
    let mut cut_off = false;
    for i in 0..lines {
        sender.send(&format!("{i} {line}"));
        // Keep up with bob, so only the stalled one falls behind.
        let got = heard.recv_timeout(READ_TIMEOUT).expect("bob hears it");
        if got.ends_with(" left") {
            cut_off = true;
            common::recv_until(&heard, 0, |l| l.starts_with(&format!("<alice> {i} ")));
        } else {
            assert!(got.starts_with(&format!("<alice> {i} ")), "{got}");
        }
    }
    if !cut_off {
        let left = common::recv_until(&heard, 0, |l| l.ends_with(" left"));
        assert!(left.starts_with("* user"), "{left}");
    }
    // Its socket is closed: what is left in it ends, it does not hang.
    let mut raw = stalled.stream.try_clone().unwrap();
    assert_closed(&mut raw);
}

/// A TLS member behind a small window (4 KiB, 536-byte segments) gets a
/// 500 KB burst whole and in order, and stays connected.
fn burst_through_a_small_window_over_tls(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let stream = common::small_window_connection(tls_addr(&server), Some(OTHER_ADDRESS));
    let mut member = Client::from_tls_stream(stream, cert.client_config());
    member.line(); // the welcome
    let mut paster = Client::join_as(server.local_addr(), "paster");
    member.expect_suffix(" is now known as paster");
    const LINES: usize = 250;
    let paste: String = (0..LINES)
        .map(|i| format!("{i}:{}\n", "z".repeat(2000)))
        .collect();
    paster.send_raw(paste.as_bytes());
    for i in 0..LINES {
        let line = member.line();
        assert!(
            line.starts_with(&format!("<paster> {i}:")),
            "line {i}: {line:.40}"
        );
    }
    member.send("/who");
    let who = member.line();
    assert!(
        who.starts_with("* 2 users here: ") && who.contains("paster"),
        "{who}"
    );
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
    assert_closed(&mut half_open);
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

/// SIGHUP reloads the certificate: a new handshake sees the new one (and
/// one trusting only the old is refused), an existing session keeps
/// chatting, and a pair that does not load is logged and the last good
/// one kept.
fn sighup_reloads_the_certificate(engine: EngineKind) {
    let cert = TestCert::new();
    let old_trust = cert.client_config();
    let tls_port = common::free_port().to_string();
    let server = ChildServer::start(
        engine,
        &[
            "--tls-port",
            &tls_port,
            "--tls-cert",
            cert.cert.to_str().unwrap(),
            "--tls-key",
            cert.key.to_str().unwrap(),
        ],
    );
    let tls = SocketAddr::new(server.addr.ip(), tls_port.parse().unwrap());
    let mut old = Client::join_tls_as(tls, &cert, "old");
    let cert = cert.renew();
    server.signal("HUP");
    wait_for_log(&server, "reloaded");
    let (mut new, _) = Client::join_tls(tls, &cert);
    old.expect_suffix(" joined");
    old.send("still here");
    new.expect("<old> still here");
    assert!(
        handshake_fails(tls, old_trust),
        "the old certificate is still served"
    );

    // A broken key: the reload fails, the pair loaded last stays.
    std::fs::write(&cert.key, "not a key").unwrap();
    server.signal("HUP");
    let warning = wait_for_log(&server, "reload failed");
    assert!(warning.contains("WARN"), "{warning}");
    let (mut newer, _) = Client::join_tls(tls, &cert);
    newer.send("after a failed reload");
    old.expect_suffix(" joined");
    let heard = old.line();
    assert!(heard.ends_with("> after a failed reload"), "{heard}");
}

/// The next server log line containing `text` (bounded).
#[track_caller]
fn wait_for_log(server: &ChildServer, text: &str) -> String {
    for _ in 0..1000 {
        let line = server
            .log
            .recv_timeout(READ_TIMEOUT)
            .unwrap_or_else(|_| panic!("no log line with {text:?}"));
        if line.contains(text) {
            return line;
        }
    }
    panic!("no log line with {text:?} in 1,000 lines")
}

/// Whether a TLS handshake with `trust` fails against `addr`.
fn handshake_fails(addr: SocketAddr, trust: std::sync::Arc<rustls::ClientConfig>) -> bool {
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let session = rustls::ClientConnection::new(trust, name).unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut tls = rustls::StreamOwned::new(session, stream);
    let mut buf = [0u8; 64];
    tls.read(&mut buf).is_err()
}

/// Slowloris: 500 connections to the TLS port, half of them silent, half
/// stopped in the middle of a ClientHello. A plain and a TLS client still
/// join and chat meanwhile, and every one of the 500 is closed at the
/// handshake deadline.
fn slowloris_on_the_tls_port(engine: EngineKind) {
    const SLOW: usize = 500;
    common::ensure_fd_limit(2 * SLOW + 200);
    let cert = TestCert::new();
    let mut listen = cert.listen();
    listen.handshake_timeout = Duration::from_secs(3);
    let server = start_app_tls(engine, test_limits(), listen, ChatRoom::new());
    let half_hello = [
        0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
    ];
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
            if i % 2 == 1 {
                s.write_all(&half_hello).unwrap();
            }
            s
        })
        .collect();
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_tls_as(tls_addr(&server), &cert, "bob");
    alice.expect_suffix(" is now known as bob");
    alice.send("anyone?");
    bob.expect("<alice> anyone?");
    bob.send("yes");
    alice.expect("<bob> yes");
    for s in &mut slow {
        assert_closed(s);
    }
    // Nobody else joined or left.
    bob.send("/who");
    bob.expect("* 2 users here: alice, bob");
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
        .map(|i| format!("{i}:{}\n", "p".repeat(1000)))
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

threaded_tests!(
    a_tls_paste_larger_than_rustls_buffers_arrives_whole,
    idle_tls_client_is_told_and_closed_cleanly,
    handshaking_clients_do_not_hold_the_log,
    slowloris_on_the_tls_port,
    sighup_reloads_the_certificate,
    mixed_room_chats_both_ways,
    tls_clients_talk_while_both_threads_use_the_session,
    garbage_to_the_tls_port_is_closed_quietly,
    half_open_connections_count_and_expire,
    stalled_tls_reader_is_cut_off,
    burst_through_a_small_window_over_tls,
    shutdown_closes_tls_sessions_cleanly,
    tls_half_close_still_gets_its_reply,
);
