//! The browser front (issue 13) beside the line protocol: WebSocket and TCP
//! clients in one room, the page and HTTP errors over a real socket,
//! hostile peers on the web port, and a browser that stops reading. Each
//! scenario runs on both engines. The real-browser test is
//! tests/e2e/browser.mjs (run by `.ci/run`, not by `cargo test`).

#![cfg(feature = "web")]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::numbered::{assert_in_order_from, numbered_line};
use common::web::{http, start_app_web, start_chat_web, web_addr, web_listen};
use common::{Client, READ_TIMEOUT, test_limits};
use pollchat::chat::Chat;
use pollchat::config::{EngineKind, Limits};

/// Rooms, history and `/msg` reach a browser exactly as they reach nc:
/// the core decides, and the WebSocket layer only frames the lines.
fn rooms_history_and_private_messages_reach_browsers(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let mut tcp = Client::join_as(server.local_addr(), "alice");
    let mut ws = Client::join_ws_as(web_addr(&server), "bob");
    tcp.expect_suffix("is now known as bob");
    tcp.send("/join #web");
    tcp.skip_until(|l| l == "* you are now in #web (1 user here)");
    ws.expect("* alice left for #web");
    tcp.send("said before bob came");
    // A round trip: the line is in the history before bob asks to join.
    tcp.send("/who");
    tcp.expect("* 1 user here: alice");
    ws.send("/join #web");
    ws.expect("* you are now in #web (2 users here)");
    ws.expect("* last 1 line of #web:");
    assert!(ws.line().ends_with("] <alice> said before bob came"));
    ws.expect("* end of history");
    ws.send("/part");
    ws.skip_until(|l| l.starts_with("* you are now in #lobby"));
    tcp.expect("* bob joined");
    tcp.expect("* bob left for #lobby");
    tcp.send("/msg bob across rooms");
    ws.expect("*alice* across rooms");
    ws.send("/msg alice and back");
    tcp.expect("-> bob: across rooms");
    tcp.expect("*bob* and back");
}

/// A TCP client and a browser-like WebSocket client in one room: chat both
/// ways, `/nick` announced across, and `/quit` from the WebSocket says
/// goodbye and ends with the close handshake (the strict read fails on a
/// hang-up without a close frame).
fn websocket_and_line_clients_share_a_room(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let mut tcp = Client::join_as(server.local_addr(), "alice");
    let mut ws = Client::join_ws_as(web_addr(&server), "bob");
    tcp.expect_suffix("is now known as bob");

    tcp.send("hello from nc");
    ws.expect("<alice> hello from nc");
    ws.send("hello from a browser");
    tcp.expect("<bob> hello from a browser");
    ws.send("/me waves");
    tcp.expect("* bob waves");

    ws.send("/nick robert");
    tcp.expect("* bob is now known as robert");
    ws.expect("* bob is now known as robert");
    ws.send("/who");
    assert_eq!(ws.line(), "* 2 users here: alice, robert");

    ws.send("/quit");
    let last = ws.read_to_close_strict();
    assert!(last.iter().any(|l| l.contains("Bye")), "{last:?}");
    tcp.expect("* robert left");
}

/// The page and each error, over a real socket: status, the headers every
/// answer carries, and the connection closed after it.
fn the_page_and_errors_are_answered_and_closed(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let web = web_addr(&server);
    let (status, page) = http(web, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 200);
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    assert!(
        head.contains(&format!("Content-Length: {}\r\n", body.len())),
        "{head}"
    );
    for header in [
        "Content-Type: text/html; charset=utf-8",
        "Connection: close",
        "X-Content-Type-Options: nosniff",
        "Content-Security-Policy: default-src 'none'",
    ] {
        assert!(head.contains(header), "{header} missing: {head}");
    }
    assert!(body.contains("chat.js"), "the page loads its script");
    for (request, want) in [
        (&b"GET /chat.js HTTP/1.1\r\n\r\n"[..], 200),
        (b"GET /nothing/here HTTP/1.1\r\n\r\n", 404),
        (b"GET /../../etc/passwd HTTP/1.1\r\n\r\n", 404),
        (b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"\x16\x03\x01\x00\xa5garbage\r\n\r\n", 400),
    ] {
        let (status, response) = http(web, request);
        assert_eq!(
            status,
            want,
            "{:?}: {response}",
            String::from_utf8_lossy(request)
        );
        assert!(response.contains("Connection: close"));
        assert!(response.contains("Content-Security-Policy:"));
    }
    let oversized = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n\r\n", "a".repeat(9000));
    assert_eq!(http(web, oversized.as_bytes()).0, 431);
    // Nobody joined the room.
    let mut tcp = Client::join_as(server.local_addr(), "alice");
    tcp.send("/who");
    assert_eq!(tcp.line(), "* 1 user here: alice");
}

fn upgrade_request(host: &str, extra: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A wrong key, a missing version and a foreign Origin each get a clear 4xx
/// and the connection closed; the page's own origin, and one listed with
/// `--web-origin`, get in.
fn bad_handshakes_get_a_4xx_and_are_closed(engine: EngineKind) {
    let mut listen = web_listen();
    listen.origins.allowed = vec!["https://chat.example.org".into()];
    let server = start_app_web(engine, test_limits(), listen, Chat::new());
    let web = web_addr(&server);
    let host = web.to_string();
    let wrong_key = upgrade_request(&host, "").replace("dGhlIHNhbXBsZSBub25jZQ==", "not-a-key");
    let (status, response) = http(web, wrong_key.as_bytes());
    assert_eq!(status, 400, "{response}");
    assert!(response.contains("Sec-WebSocket-Key"), "{response}");
    let no_version = upgrade_request(&host, "").replace("Sec-WebSocket-Version: 13\r\n", "");
    let (status, response) = http(web, no_version.as_bytes());
    assert_eq!(status, 426, "{response}");
    assert!(response.contains("Sec-WebSocket-Version: 13"));
    let foreign = upgrade_request(&host, "Origin: https://evil.example\r\n");
    assert_eq!(http(web, foreign.as_bytes()).0, 403);

    for origin in [
        format!("http://{host}"),
        "https://chat.example.org".to_string(),
    ] {
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let request = upgrade_request(&host, &format!("Origin: {origin}\r\n"));
        s.write_all(request.as_bytes()).unwrap();
        let mut got = [0u8; 12];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"HTTP/1.1 101", "{origin}");
    }
}

/// 500 connections to the web port send half a request head and then
/// nothing. Meanwhile a line client and a WebSocket client join and chat,
/// and the page still loads; every one of the 500 is closed at the
/// deadline, and none was ever in the room.
fn slowloris_heads_are_closed_at_the_deadline(engine: EngineKind) {
    const SLOW: usize = 500;
    common::ensure_fd_limit(3 * SLOW);
    let mut listen = web_listen();
    listen.head_timeout = Duration::from_secs(2);
    let server = start_app_web(engine, test_limits(), listen, Chat::new());
    let web = web_addr(&server);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|i| {
            let mut s = TcpStream::connect(web).expect("connect a slow client");
            if i % 2 == 1 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Ag")
                    .unwrap();
            }
            s
        })
        .collect();

    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_ws_as(web, "bob");
    let joined = alice.line();
    assert!(joined.ends_with(" joined"), "{joined}");
    alice.expect_suffix("is now known as bob");
    alice.send("hi bob");
    bob.expect("<alice> hi bob");
    bob.send("hi alice");
    alice.expect("<bob> hi alice");
    assert_eq!(http(web, b"GET / HTTP/1.1\r\n\r\n").0, 200);

    for (i, s) in slow.iter_mut().enumerate() {
        common::assert_closed_by_server(s, &format!("slow client {i}"));
    }
    bob.send("/who");
    assert!(bob.line().starts_with("* 2 users here"));
}

/// Markup and control bytes from a browser: a TCP client gets the text
/// without the control bytes, a WebSocket client the same text, as text;
/// and a TCP client's invalid UTF-8 reaches the browser as valid text
/// (tungstenite's client refuses a text frame that is not UTF-8).
fn markup_and_control_bytes_arrive_as_plain_text(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let mut tcp = Client::join_as(server.local_addr(), "alice");
    let mut sender = Client::join_ws_as(web_addr(&server), "bob");
    let mut viewer = Client::join_ws_as(web_addr(&server), "carol");
    tcp.expect_suffix("is now known as carol");
    sender.expect_suffix("is now known as carol");
    sender.send("<img src=x onerror=alert(1)>");
    sender.send("\u{1b}[31mred\u{7} bell");
    for client in [&mut tcp, &mut viewer] {
        client.expect("<bob> <img src=x onerror=alert(1)>");
        let red = client.line();
        assert!(red.starts_with("<bob> "), "{red}");
        assert!(red.contains("red") && red.contains("bell"), "{red}");
        assert!(
            !red.chars().any(|c| c.is_control()),
            "control bytes passed: {red:?}"
        );
    }
    tcp.send_raw(b"caf\xe9 \xff\xfe\n");
    let line = viewer.line();
    assert!(line.starts_with("<alice> caf"), "{line}");
}

/// A binary frame is refused with a close frame that says why.
fn binary_frames_are_refused_with_a_reason(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let stream = TcpStream::connect(web_addr(&server)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut ws = common::web::handshake(web_addr(&server), stream);
    let welcome = ws.read().unwrap();
    assert!(welcome.is_text(), "{welcome:?}");
    ws.send(tungstenite::Message::binary(vec![1, 2, 3]))
        .unwrap();
    let close = read_until_close(&mut ws);
    assert_eq!(u16::from(close.code), 1003);
    assert!(close.reason.contains("binary"), "{}", close.reason);
}

/// A browser's ping is answered with a pong carrying the same payload
/// (browsers ping only from their own network code; proxies and tools do
/// it too), and chat goes on around it.
fn a_ping_is_answered_with_a_pong(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let stream = TcpStream::connect(web_addr(&server)).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut ws = common::web::handshake(web_addr(&server), stream);
    assert!(ws.read().unwrap().is_text(), "the welcome");
    // The ping alone: nothing else the server sends could carry the pong.
    ws.send(tungstenite::Message::Ping(b"are you there".to_vec().into()))
        .unwrap();
    match ws.read().expect("the pong") {
        tungstenite::Message::Pong(p) => assert_eq!(&p[..], b"are you there"),
        other => panic!("expected the pong, got {other:?}"),
    }
    ws.send(tungstenite::Message::text("/who")).unwrap();
    let who = ws.read().expect("the /who reply");
    assert!(
        who.to_text().unwrap().starts_with("* 1 user here"),
        "{who:?}"
    );
}

/// Lines said while a web connection was still sending its request head
/// are not its to hear: the answer starts with the status line. (The poll
/// engine once sent them first, and in a debug build the log had moved
/// past its cursor: a panic.)
fn a_page_asked_for_after_a_broadcast_is_only_the_page(engine: EngineKind) {
    let server = start_chat_web(engine, test_limits());
    let (mut alice, mut bob) = Client::alice_and_bob(server.local_addr());
    let mut browser = TcpStream::connect(web_addr(&server)).unwrap();
    // Once alice has her /who reply, the server has handled everything
    // that arrived before it, the browser's connection included.
    alice.send("/who");
    alice.skip_until(|l| l.contains(" here: "));
    bob.send("said before the request");
    alice.expect("<bob> said before the request");
    browser.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    browser
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    browser
        .read_to_end(&mut answer)
        .expect("the page, then close");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{:.80}", text);
    assert!(
        !text.contains("said before"),
        "a chat line went out with the page"
    );
}

/// The close frame the server ends with (bounded: the socket's timeout).
fn read_until_close<S: Read + Write>(
    ws: &mut tungstenite::WebSocket<S>,
) -> tungstenite::protocol::CloseFrame {
    for _ in 0..10_000 {
        match ws.read() {
            Ok(tungstenite::Message::Close(Some(frame))) => return frame,
            Ok(tungstenite::Message::Close(None)) => panic!("a close frame without a reason"),
            Ok(_) => {}
            Err(e) => panic!("no close frame: {e}"),
        }
    }
    panic!("endless messages, no close frame")
}

/// `--max-clients` counts WebSocket clients like any other: with room for
/// two, a third connection to the web port is closed without an answer.
fn websocket_clients_count_against_max_clients(engine: EngineKind) {
    let limits = Limits {
        max_clients: 2,
        ..test_limits()
    };
    let server = start_chat_web(engine, limits);
    let (_a, _) = Client::join_ws(web_addr(&server));
    let (_b, _) = Client::join(server.local_addr());
    let mut third = TcpStream::connect(web_addr(&server)).unwrap();
    third.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    third.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 64];
    match third.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!(
            "a third client got an answer: {:?}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
}

/// A WebSocket member that stops reading is cut off by `--stall-timeout`
/// like any client, and the others get every line.
fn a_websocket_member_that_stops_reading_is_cut_off(engine: EngineKind) {
    let limits = Limits {
        stall_timeout: Duration::from_secs(1),
        ..test_limits()
    };
    let server = start_chat_web(engine, limits);
    let web = web_addr(&server);
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_ws_as(web, "bob");
    alice.expect_suffix("is now known as bob");
    let mut stalled = Client::from_ws_stream(common::stalled_connection(web));
    stalled.line(); // the welcome: it reads no more
    bob.expect_suffix(" joined");
    let lines = 400;
    for i in 0..lines {
        alice.send(&numbered_line(0, i, 1000));
    }
    assert_in_order_from(&mut || bob.try_line(), 1, 0, lines, "bob");
    let left = bob.skip_until(|l| l.ends_with(" left"));
    assert!(left.starts_with("* user"), "{left}");
    common::assert_closed_by_server(&mut stalled.stream, "the stalled browser");
}

/// A browser behind a small window (4 KiB receive buffer, 536-byte
/// segments) while 8 clients, half on WebSocket, each paste 50 lines of
/// 2,000 bytes: it receives all 400, each paster's in order.
fn a_websocket_member_behind_a_small_window_gets_every_line_of_a_burst(engine: EngineKind) {
    const PASTERS: usize = 8;
    const LINES: usize = 50;
    let server = start_chat_web(engine, Limits::default());
    let web = web_addr(&server);
    let mut member = Client::from_ws_stream(common::small_window_connection(web, None));
    member.line(); // the welcome
    let pasters: Vec<Client> = (0..PASTERS)
        .map(|k| match k % 2 {
            0 => Client::join(server.local_addr()).0,
            _ => Client::join_ws(web).0,
        })
        .collect();
    let mut names = Vec::new();
    while names.len() < PASTERS {
        let line = member.line();
        if let Some(name) = line
            .strip_prefix("* ")
            .and_then(|l| l.strip_suffix(" joined"))
        {
            names.push(name.to_string());
        }
    }
    let mut pasters = pasters;
    for (k, paster) in pasters.iter_mut().enumerate() {
        let burst: String = (0..LINES)
            .map(|i| numbered_line(k, i, 2000) + "\n")
            .collect();
        paster.send_raw(burst.as_bytes());
    }
    let mut next = [0usize; PASTERS];
    for _ in 0..PASTERS * LINES {
        let line = member.line();
        let (k, i) = common::numbered::numbers_in(&line)
            .unwrap_or_else(|| panic!("not a pasted line: {}", &line[..line.len().min(60)]));
        assert_eq!(i, next[k], "paster {k}'s lines out of order");
        next[k] += 1;
    }
    assert!(next.iter().all(|&n| n == LINES));
}

/// https and wss on the web port with `--tls-cert`/`--tls-key`: the page
/// over TLS, and a wss client chatting with a TCP client.
#[cfg(feature = "tls")]
fn https_and_wss_with_the_tls_certificate(engine: EngineKind) {
    let cert = common::tls::TestCert::new();
    let mut listen = web_listen();
    listen.https = Some((cert.cert.clone(), cert.key.clone()));
    let server = start_app_web(engine, test_limits(), listen, Chat::new());
    let web = web_addr(&server);

    let stream = TcpStream::connect(web).unwrap();
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let name = "localhost".try_into().unwrap();
    let session = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(session, stream);
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .unwrap();
    let mut page = Vec::new();
    tls.read_to_end(&mut page)
        .expect("the page, then close_notify");
    assert!(page.starts_with(b"HTTP/1.1 200 OK\r\n"));

    let mut tcp = Client::join_as(server.local_addr(), "alice");
    let mut wss = Client::connect_wss(web, &cert);
    wss.line(); // welcome
    wss.send("/nick bob");
    tcp.expect_suffix("is now known as bob");
    wss.expect_suffix("is now known as bob");
    tcp.send("over tls and websocket");
    wss.expect("<alice> over tls and websocket");
    wss.send("and back");
    tcp.expect("<bob> and back");
    wss.send("/quit");
    let last = wss.read_to_close_strict();
    assert!(last.iter().any(|l| l.contains("Bye")), "{last:?}");
}

/// The quiz takes the web port too: a browser player and a TCP player in
/// one game, the browser answering with a letter.
fn the_quiz_is_played_from_a_browser(engine: EngineKind) {
    use pollchat::quiz::{Quiz, Settings, questions};
    const ONE_QUESTION: &str = r#"
[[question]]
text = "Which system call waits for many sockets at once?"
choices = ["select", "fork", "exec"]
answer = "a"
"#;
    let questions = questions::parse(ONE_QUESTION, "test questions").unwrap();
    let settings = Settings::new(Duration::from_secs(5), 2);
    let quiz = Quiz::new(questions, settings);
    let server = start_app_web(engine, test_limits(), web_listen(), quiz);
    let mut tcp = Client::join_as(server.local_addr(), "alice");
    let mut browser = Client::join_ws_as(web_addr(&server), "bob");
    tcp.expect_suffix("(/start to begin now).");
    tcp.send("/start");
    for player in [&mut tcp, &mut browser] {
        player.skip_until(|l| l == "* Question 1 of 1:");
        player.skip_until(|l| l.starts_with("* You have 5 seconds"));
        player.send("a");
    }
    browser.expect("* You answered a) select.");
    browser.skip_until(|l| l == "* Game over! Final standings:");
    tcp.skip_until(|l| l == "* Game over! Final standings:");
}

engine_tests!(
    the_quiz_is_played_from_a_browser,
    websocket_and_line_clients_share_a_room,
    rooms_history_and_private_messages_reach_browsers,
    the_page_and_errors_are_answered_and_closed,
    bad_handshakes_get_a_4xx_and_are_closed,
    slowloris_heads_are_closed_at_the_deadline,
    markup_and_control_bytes_arrive_as_plain_text,
    binary_frames_are_refused_with_a_reason,
    a_ping_is_answered_with_a_pong,
    a_page_asked_for_after_a_broadcast_is_only_the_page,
    websocket_clients_count_against_max_clients,
    a_websocket_member_that_stops_reading_is_cut_off,
    a_websocket_member_behind_a_small_window_gets_every_line_of_a_burst,
);

#[cfg(feature = "tls")]
mod over_tls {
    use super::*;
    engine_tests!(https_and_wss_with_the_tls_certificate);
}

/// What only a separate server process shows: its memory, and the flags
/// as a user types them.
mod process {
    use super::*;
    use common::ChildServer;
    use std::net::SocketAddr;

    fn start_with_web(engine: EngineKind, extra: &[&str]) -> (ChildServer, SocketAddr) {
        let port = common::free_port();
        let port_arg = port.to_string();
        let mut args = vec!["--web-port", &port_arg];
        args.extend_from_slice(extra);
        let server = ChildServer::start(engine, &args);
        (server, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A frame whose header claims 10 MB is refused at the header (close
    /// 1009) while its payload is still arriving: the server never buffers
    /// it, its memory stays flat, and the room carries on.
    fn an_oversized_frame_is_refused_at_its_header(engine: EngineKind) {
        let (server, web) = start_with_web(engine, &[]);
        let mut tcp = Client::join_as(server.addr, "alice");
        let stream = TcpStream::connect(web).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut raw = stream.try_clone().unwrap();
        let mut ws = common::web::handshake(web, stream);
        assert!(ws.read().unwrap().is_text(), "the welcome");
        tcp.expect_suffix(" joined");
        let before = server.rss_kib();

        let len: u64 = 10 * 1024 * 1024;
        let mut header = vec![0x81, 0x80 | 127];
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(&[7, 7, 7, 7]);
        raw.write_all(&header).unwrap();
        // Part of the payload; the server may have hung up meanwhile.
        let chunk = [b'x'; 64 * 1024];
        for _ in 0..16 {
            if raw.write_all(&chunk).is_err() {
                break;
            }
        }
        let close = read_until_close(&mut ws);
        assert_eq!(u16::from(close.code), 1009);
        assert!(close.reason.contains("too big"), "{}", close.reason);
        let grown = server.rss_kib().saturating_sub(before);
        common::figure(&format!(
            "{engine}: RSS growth after a 10 MB frame header: {grown} KiB"
        ));
        assert!(grown < 1024, "{grown} KiB more after a refused 10 MB frame");

        tcp.expect_suffix(" left");
        tcp.send("/who");
        assert_eq!(tcp.line(), "* 1 user here: alice");
    }

    /// `--web-port` with `--tls-cert`/`--tls-key` and no `--tls-port`: the
    /// web port speaks https, and the start-up line says so.
    #[cfg(feature = "tls")]
    fn the_web_port_speaks_https_with_a_certificate(engine: EngineKind) {
        let cert = common::tls::TestCert::new();
        let (cert_path, key_path) = (
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
        );
        let port = common::free_port();
        let port_arg = port.to_string();
        let args = [
            "--web-port",
            &port_arg,
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ];
        let server = ChildServer::start(engine, &args);
        let _ = &server;
        let web = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect(web).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let name = "localhost".try_into().unwrap();
        let session = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
        let mut tls = rustls::StreamOwned::new(session, stream);
        tls.write_all(b"GET /chat.css HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut answer = Vec::new();
        tls.read_to_end(&mut answer)
            .expect("the answer, then close_notify");
        assert!(answer.starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(String::from_utf8_lossy(&answer).contains("Content-Type: text/css"));
    }

    engine_tests!(an_oversized_frame_is_refused_at_its_header);

    #[cfg(feature = "tls")]
    mod https {
        use super::*;
        engine_tests!(the_web_port_speaks_https_with_a_certificate);
    }
}
