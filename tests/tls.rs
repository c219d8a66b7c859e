//! TLS beside plain TCP (issue 12): one room with clients on both ports,
//! hostile peers on the TLS port, TLS members on slow links, certificate
//! reload, and real TLS tools as clients. Each scenario runs on both
//! engines; certificates are made by rcgen.

#![cfg(feature = "tls")]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::assert_closed_by_server;
use common::numbered::{assert_in_order_from, numbered_line};
use common::tls::{TestCert, start_app_tls, start_chat_tls, tls_addr};
use common::{ChildServer, Client, READ_TIMEOUT, test_limits};
use pollchat::chat::Chat;
use pollchat::config::{EngineKind, Limits};

/// A real ClientHello, as rustls' client sends it first.
fn client_hello(cert: &TestCert) -> Vec<u8> {
    let name = "localhost".try_into().unwrap();
    let mut conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// A plain client and a TLS client in one room: chat goes both ways,
/// `/nick` is announced across, and `/quit` over TLS says goodbye and
/// closes with `close_notify` (the TLS client's read sees a clean end; a
/// bare TCP close would be an "unexpected EOF" error).
fn plain_and_tls_clients_share_a_room(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut plain = Client::join_as(server.local_addr(), "alice");
    let mut tls = Client::join_tls_as(tls_addr(&server), &cert, "bob");
    plain.expect_suffix("is now known as bob");

    plain.send("hello over tcp");
    tls.expect("<alice> hello over tcp");
    tls.send("hello over tls");
    plain.expect("<bob> hello over tls");

    tls.send("/nick robert");
    plain.expect("* bob is now known as robert");
    tls.expect("* bob is now known as robert");

    tls.send("/quit");
    let last = tls.read_to_close_strict();
    assert!(last.iter().any(|l| l.contains("Bye")), "{last:?}");
    plain.expect("* robert left");
}

/// Plain text, random bytes and a record header that claims 64 KiB, each
/// sent to the TLS port: the handshake fails and the connection is closed,
/// and the room never hears of any of them.
fn garbage_to_the_tls_port_is_closed_and_nobody_notices(engine: EngineKind) {
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_tls_as(tls_addr(&server), &cert, "bob");
    alice.expect_suffix("is now known as bob");

    let mut noise = Vec::with_capacity(4096);
    let mut x: u32 = 12345;
    for _ in 0..4096 {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        noise.push((x >> 16) as u8);
    }
    let mut huge_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    huge_record.extend_from_slice(&[0u8; 1000]);
    let junk: [(&str, &[u8]); 3] = [
        ("plain text", b"hello, is this the chat?\r\n"),
        ("random bytes", &noise),
        ("an oversized record", &huge_record),
    ];
    for (what, bytes) in junk {
        let mut s = TcpStream::connect(tls_addr(&server)).unwrap();
        // The server may close before it has read it all.
        let _ = s.write_all(bytes);
        assert_closed_by_server(&mut s, what);
    }
    alice.send("still here");
    bob.expect("<alice> still here");
    bob.send("/who");
    let who = bob.line();
    assert!(who.starts_with("* 2 users here"), "{who}");
}

/// 500 connections to the TLS port that send nothing, or half a
/// ClientHello. While they hang, a plain and a TLS client join and chat,
/// and hear of nobody else; once the handshake deadline passes, each of
/// the 500 is closed by the server.
fn slowloris_handshakes_are_closed_at_the_deadline(engine: EngineKind) {
    const SLOW: usize = 500;
    common::ensure_fd_limit(3 * SLOW);
    let cert = TestCert::new();
    let mut tls = cert.listen();
    tls.handshake_timeout = Duration::from_secs(2);
    let server = start_app_tls(engine, test_limits(), tls, Chat::new());
    let tls_port = tls_addr(&server);
    let hello = client_hello(&cert);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = TcpStream::connect(tls_port).expect("connect a slow client");
            if i % 2 == 1 {
                s.write_all(&hello[..hello.len() / 2]).unwrap();
            }
            s
        })
        .collect();

    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_tls_as(tls_port, &cert, "bob");
    // The next thing alice hears is bob: none of the 500 ever joined.
    let joined = alice.line();
    assert!(joined.ends_with(" joined"), "{joined}");
    alice.expect(&format!(
        "* {} is now known as bob",
        joined.trim_start_matches("* ").trim_end_matches(" joined")
    ));
    alice.send("hi bob");
    bob.expect("<alice> hi bob");
    bob.send("hi alice");
    alice.expect("<bob> hi alice");

    for (i, s) in slow.iter_mut().enumerate() {
        assert_closed_by_server(s, &format!("slow client {i}"));
    }
    bob.send("/who");
    assert!(bob.line().starts_with("* 2 users here"));
}

/// Connections still handshaking count against `--max-per-ip`: with a
/// limit of 3, three silent TLS connections use up the address, and a
/// fourth (a real TLS client, accepted after them) is closed before its
/// handshake. Once the deadline has closed the three, the address may
/// join again.
fn handshaking_connections_count_against_max_per_ip(engine: EngineKind) {
    let cert = TestCert::new();
    let mut tls = cert.listen();
    tls.handshake_timeout = Duration::from_secs(1);
    let limits = Limits {
        max_per_ip: 3,
        per_ip_exempts_loopback: false,
        ..test_limits()
    };
    let server = start_app_tls(engine, limits, tls, Chat::new());
    let tls_port = tls_addr(&server);
    let mut silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(tls_port).unwrap())
        .collect();

    let sock = TcpStream::connect(tls_port).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut fourth = rustls::StreamOwned::new(conn, sock);
    let mut buf = [0u8; 256];
    match fourth.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "a fourth connection was let in: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }

    for (i, s) in silent.iter_mut().enumerate() {
        assert_closed_by_server(s, &format!("silent connection {i}"));
    }
    let (_client, name) = Client::join_tls(tls_port, &cert);
    assert!(name.starts_with("user"), "{name}");
}

/// A TLS member that finishes its handshake, joins, then never reads again
/// (through the smallest window): under light traffic it is cut off by
/// `--stall-timeout` exactly like a plain one, and the others (one plain,
/// one TLS) lose nothing.
fn a_tls_member_that_stops_reading_is_cut_off(engine: EngineKind) {
    let cert = TestCert::new();
    let limits = Limits {
        stall_timeout: Duration::from_secs(1),
        ..test_limits()
    };
    let server = start_chat_tls(engine, limits, &cert);
    let tls_port = tls_addr(&server);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_tls_as(tls_port, &cert, "bob");
    alice.expect_suffix("is now known as bob");
    let mut stalled =
        Client::from_tls_stream(common::stalled_connection(tls_port), cert.client_config());
    stalled.line(); // the welcome: the handshake is done; it reads no more
    bob.expect_suffix(" joined");
    let lines = 400;
    for i in 0..lines {
        alice.send(&numbered_line(0, i, 1000));
    }
    assert_in_order_from(&mut || bob.try_line(), 1, 0, lines, "bob");
    let left = bob.skip_until(|l| l.ends_with(" left"));
    assert!(left.starts_with("* user"), "{left}");
    assert_closed_by_server(&mut stalled.stream, "the stalled TLS member");
}

/// A TLS member reads promptly through a small window (4 KiB receive
/// buffer, 536-byte segments) while 16 clients, half of them on TLS, each
/// paste 50 lines of 2,000 bytes at once, with the default limits: it
/// receives all 800 lines, each paster's in order, and is still there.
fn a_tls_member_behind_a_small_window_gets_every_line_of_a_burst(engine: EngineKind) {
    const PASTERS: usize = 16;
    const LINES: usize = 50;
    let cert = TestCert::new();
    let server = start_chat_tls(engine, Limits::default(), &cert);
    let tls_port = tls_addr(&server);
    let stream = common::small_window_connection(tls_port, None);
    let mut member = Client::from_tls_stream(stream, cert.client_config());
    member.line(); // the welcome
    let pasters: Vec<Client> = (0..PASTERS)
        .map(|k| match k % 2 {
            0 => Client::join(server.local_addr()).0,
            _ => Client::join_tls(tls_port, &cert).0,
        })
        .collect();
    for _ in 0..PASTERS {
        member.expect_suffix(" joined");
    }
    let pastes: Vec<_> = pasters
        .into_iter()
        .enumerate()
        .map(|(k, mut p)| {
            // What it hears is read and thrown away (undecrypted), so only
            // the member is behind a small window.
            let mut raw = p.stream.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 * 1024];
                while matches!(raw.read(&mut buf), Ok(n) if n > 0) {}
            });
            let paste: String = (0..LINES)
                .map(|i| numbered_line(k, i, 2000) + "\n")
                .collect();
            std::thread::spawn(move || {
                p.send_raw(paste.as_bytes());
                p // kept open until the member has read everything
            })
        })
        .collect();
    let seen = assert_in_order_from(&mut || member.try_line(), PASTERS, 0, LINES, "the member");
    assert_eq!(seen, PASTERS * LINES);
    let _pasters: Vec<Client> = pastes
        .into_iter()
        .map(|p| p.join().expect("a paste failed"))
        .collect();
    member.send("/who");
    let who = member.skip_until(|l| l.contains(" here: "));
    assert!(
        who.starts_with(&format!("* {} users here", PASTERS + 1)),
        "{who}"
    );
}

// ----- the process: reload, and real TLS tools ------------------------------

/// Wait (bounded) for a line of the server's log that contains `needle`.
#[track_caller]
fn expect_log(server: &ChildServer, needle: &str) -> String {
    for _ in 0..1000 {
        let line = server
            .log
            .recv_timeout(READ_TIMEOUT)
            .unwrap_or_else(|_| panic!("no log line with {needle:?}"));
        if line.contains(needle) {
            return line;
        }
    }
    panic!("no log line with {needle:?} in 1,000 lines");
}

/// Whether a handshake trusting `trusted` alone succeeds (a welcome line
/// comes back).
fn handshake_trusting(addr: SocketAddr, trusted: &TestCert) -> bool {
    let sock = TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(trusted.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let mut buf = [0u8; 64];
    matches!(tls.read(&mut buf), Ok(n) if n > 0)
}

/// SIGHUP reloads the certificate and key: a handshake after it sees the
/// new certificate (trusting only the old one fails, trusting the new one
/// joins), while a TLS session from before keeps chatting. A reload that
/// fails (a damaged key file) is logged and keeps the pair in use.
fn sighup_reloads_the_certificate(engine: EngineKind) {
    let old = TestCert::new();
    let (server, tls) = ChildServer::start_tls(engine, &old, &["--rate", "0"]);
    let mut before = Client::join_tls_as(tls, &old, "before");
    let mut plain = Client::join_as(server.addr, "plain");
    before.expect_suffix("is now known as plain");

    // Renew into new files, as certbot would, and move them into place.
    let new = TestCert::new();
    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();
    server.signal("HUP");
    expect_log(&server, "reloaded");
    assert!(
        handshake_trusting(tls, &new),
        "the new certificate is not served"
    );
    assert!(
        !handshake_trusting(tls, &old),
        "the old certificate is still served"
    );

    // (Each probe joined and left; the others heard it.)
    before.send("still here");
    plain.skip_until(|l| l == "<before> still here");
    plain.send("welcome back");
    before.skip_until(|l| l == "<plain> welcome back");

    std::fs::write(&old.key, "not a key\n").unwrap();
    server.signal("HUP");
    let warning = expect_log(&server, "reload failed");
    assert!(
        warning.contains(&old.key.display().to_string()),
        "{warning}"
    );
    assert!(
        handshake_trusting(tls, &new),
        "a failed reload dropped the pair"
    );
}

/// Whether `tool` runs here; if not, the test says it is skipped (CI
/// installs the tools, so there they always run).
fn installed(tool: &str, version_flag: &str) -> bool {
    let found = Command::new(tool).arg(version_flag).output().is_ok();
    if !found {
        eprintln!("{tool} not installed: skipped");
    }
    found
}

/// A real TLS tool as a client: `openssl s_client`, verifying our
/// certificate, over TLS 1.3 and 1.2. It gets the welcome, and what it
/// types reaches a plain client. (Skipped, saying so, where openssl is
/// not installed; CI installs it.)
fn openssl_s_client_chats_with_a_plain_client(engine: EngineKind) {
    if !installed("openssl", "version") {
        return;
    }
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut plain = Client::join_as(server.local_addr(), "plain");
    for version in ["-tls1_3", "-tls1_2"] {
        let connect = tls_addr(&server).to_string();
        let ca = cert.cert.display().to_string();
        let args = [
            "s_client",
            "-connect",
            &connect,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-quiet",
            version,
        ];
        let tool = TlsTool::spawn("openssl", &args);
        tool.chat_with(&mut plain, version);
    }
}

/// `ncat --ssl` with verification, the other tool the README shows.
/// (Skipped, saying so, where ncat is not installed; CI installs it.)
fn ncat_ssl_chats_with_a_plain_client(engine: EngineKind) {
    if !installed("ncat", "--version") {
        return;
    }
    let cert = TestCert::new();
    let server = start_chat_tls(engine, test_limits(), &cert);
    let mut plain = Client::join_as(server.local_addr(), "plain");
    let port = tls_addr(&server).port().to_string();
    let ca = cert.cert.display().to_string();
    // ncat 7.93 matches the name against the certificate's DNS names only.
    let args = [
        "--ssl",
        "--ssl-verify",
        "--ssl-trustfile",
        &ca,
        "localhost",
        &port,
    ];
    TlsTool::spawn("ncat", &args).chat_with(&mut plain, "ncat");
}

/// A TLS command-line tool as a chat client, killed on drop.
struct TlsTool {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl TlsTool {
    fn spawn(program: &str, args: &[&str]) -> TlsTool {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the TLS tool");
        let lines = common::forward_lines(child.stdout.take().unwrap());
        TlsTool { child, lines }
    }

    /// The tool is welcomed, and its line reaches `plain` (who also hears
    /// it join).
    fn chat_with(mut self, plain: &mut Client, label: &str) {
        let welcome = common::recv_until(&self.lines, 5, |l| l.contains("Welcome"));
        let name = common::name_in_welcome(&welcome);
        plain.expect(&format!("* {name} joined"));
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "hello from {label}").unwrap();
        stdin.flush().unwrap();
        plain.expect(&format!("<{name}> hello from {label}"));
        plain.send(&format!("hello back, {label}"));
        common::recv_until(&self.lines, 5, |l| {
            l == format!("<plain> hello back, {label}")
        });
        drop(self);
        plain.expect(&format!("* {name} left"));
    }
}

impl Drop for TlsTool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pollchat quiz --tls-only`: the quiz takes the same TLS flags, and with
/// `--tls-only` there is no plain listener at all.
fn quiz_over_tls_only(engine: EngineKind) {
    let cert = TestCert::new();
    let port = common::free_port().to_string();
    let tls_port = common::free_port().to_string();
    let (cert_path, key_path) = (
        cert.cert.display().to_string(),
        cert.key.display().to_string(),
    );
    let mut child = Command::new(common::BIN)
        .args(["quiz", "--port", &port, "--engine", &engine.to_string()])
        .args([
            "--tls-port",
            &tls_port,
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ])
        .arg("--tls-only")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start pollchat quiz");
    let log = common::forward_lines(child.stderr.take().unwrap());
    let server = ChildServer {
        child,
        addr: SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())),
        log,
    };
    let listening = expect_log(&server, "listening on");
    assert!(listening.contains(&tls_port), "{listening}");
    let tls = SocketAddr::from(([127, 0, 0, 1], tls_port.parse().unwrap()));
    let mut player = Client::connect_tls(tls, &cert);
    let welcome = player.line();
    assert!(welcome.contains("quiz"), "{welcome}");
    let refused = TcpStream::connect(server.addr).map(drop);
    assert!(refused.is_err(), "a plain listener is open with --tls-only");
}

/// Keys as `openssl` writes them load: PKCS#8 (`openssl req -newkey`), SEC1
/// (`BEGIN EC PRIVATE KEY`) and PKCS#1 (`BEGIN RSA PRIVATE KEY`), each with
/// a certificate file that holds a chain of two, as Let's Encrypt's
/// `fullchain.pem` does. (Skipped, saying so, without openssl.)
#[test]
fn keys_in_every_pem_format_openssl_writes_load() {
    if !installed("openssl", "version") {
        return;
    }
    let dir = TestCert::new();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&dir.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "pkcs8.pem",
        "-out",
        "pkcs8-cert.pem",
    ]);
    run(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        "sec1.pem",
    ]);
    run(&["genrsa", "-traditional", "-out", "pkcs1.pem", "2048"]);
    for (key, header) in [
        ("pkcs8", "BEGIN PRIVATE KEY"),
        ("sec1", "BEGIN EC PRIVATE KEY"),
        ("pkcs1", "BEGIN RSA PRIVATE KEY"),
    ] {
        let key_file = format!("{key}.pem");
        let cert_file = format!("{key}-cert.pem");
        if key != "pkcs8" {
            run(&[
                "req",
                "-x509",
                "-key",
                &key_file,
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-out",
                &cert_file,
            ]);
        }
        let key_path = dir.dir.join(&key_file);
        assert!(
            std::fs::read_to_string(&key_path).unwrap().contains(header),
            "{key}"
        );
        // A chain of two: ours, then another certificate after it.
        let chain_path = dir.dir.join(format!("{key}-chain.pem"));
        let chain = std::fs::read_to_string(dir.dir.join(&cert_file)).unwrap()
            + &std::fs::read_to_string(&dir.cert).unwrap();
        std::fs::write(&chain_path, chain).unwrap();
        if let Err(e) = pollchat::tls::Acceptor::load(&chain_path, &key_path) {
            panic!("{key}: {e}");
        }
    }
}

engine_tests!(
    plain_and_tls_clients_share_a_room,
    garbage_to_the_tls_port_is_closed_and_nobody_notices,
    slowloris_handshakes_are_closed_at_the_deadline,
    handshaking_connections_count_against_max_per_ip,
    a_tls_member_that_stops_reading_is_cut_off,
    a_tls_member_behind_a_small_window_gets_every_line_of_a_burst,
    sighup_reloads_the_certificate,
    openssl_s_client_chats_with_a_plain_client,
    ncat_ssl_chats_with_a_plain_client,
    quiz_over_tls_only,
);
