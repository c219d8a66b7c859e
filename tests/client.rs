//! `pollchat connect`, the built binary, driven through pipes against an
//! in-process server (or, for the safety checks, a raw socket playing a
//! hostile server). Every wait is bounded; a child still running at the end
//! of a test is killed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, READ_TIMEOUT, name_in_welcome, start_chat, test_limits};
use pollchat::client::DISCONNECTED;
use pollchat::client::screen::{CUT_MARK, MAX_SERVER_LINE};
use pollchat::config::{EngineKind, Limits};

/// A running `pollchat connect` with piped stdin, stdout and stderr.
struct ClientProcess {
    child: Child,
    /// `None` once closed (end of input).
    stdin: Option<ChildStdin>,
    /// Lines the client printed, as raw bytes without the `\n`.
    stdout: Receiver<Vec<u8>>,
    stderr: Receiver<Vec<u8>>,
}

impl ClientProcess {
    fn start(args: &[&str]) -> ClientProcess {
        Self::start_with_stdin(args, Stdio::piped())
    }

    fn start_with_stdin(args: &[&str], stdin: Stdio) -> ClientProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_pollchat"))
            .arg("connect")
            .args(args)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start pollchat connect");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        ClientProcess {
            stdin: child.stdin.take(),
            child,
            stdout,
            stderr,
        }
    }

    /// Start connected to `addr`; returns once the welcome line is printed,
    /// with the name the server gave.
    fn join(addr: SocketAddr, extra: &[&str]) -> (ClientProcess, String) {
        let addr = addr.to_string();
        let mut args = vec![addr.as_str()];
        args.extend_from_slice(extra);
        let c = ClientProcess::start(&args);
        assert_eq!(
            c.stderr_line(),
            format!("Connected to {addr}. Type /help for commands, Ctrl-D to quit.")
        );
        let name = name_in_welcome(&c.line());
        (c, name)
    }

    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("input still open");
        stdin.write_all(format!("{line}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    fn close_input(&mut self) {
        self.stdin = None;
    }

    /// The next stdout line, as text.
    #[track_caller]
    fn line(&self) -> String {
        String::from_utf8(self.raw_line()).expect("client printed invalid UTF-8")
    }

    #[track_caller]
    fn raw_line(&self) -> Vec<u8> {
        next_line(&self.stdout, "stdout")
    }

    #[track_caller]
    fn stderr_line(&self) -> String {
        String::from_utf8(next_line(&self.stderr, "stderr")).unwrap()
    }

    /// Skip stdout lines until one equals `want` (at most 1,000 lines).
    #[track_caller]
    fn expect_line(&self, want: &str) {
        for _ in 0..1_000 {
            if self.line() == want {
                return;
            }
        }
        panic!("{want:?} not printed within 1,000 lines");
    }

    /// Wait for the process to exit, at most `READ_TIMEOUT`; kill it and
    /// fail if it does not.
    #[track_caller]
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("pollchat connect did not exit within {READ_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything left on stderr once the process has exited.
    fn rest_of_stderr(&self) -> Vec<String> {
        // The pipe closes when the process exits, so this ends.
        let deadline = Instant::now() + READ_TIMEOUT;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => lines.push(String::from_utf8_lossy(&line).into_owned()),
                Err(_) => break,
            }
        }
        lines
    }
}

impl Drop for ClientProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Read a pipe line by line on a helper thread, so the test can wait for a
/// line with a timeout. The thread ends when the pipe closes.
fn lines_of(pipe: impl Read + Send + 'static) -> Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        loop {
            let mut line = Vec::new();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

#[track_caller]
fn next_line(rx: &Receiver<Vec<u8>>, what: &str) -> Vec<u8> {
    match rx.recv_timeout(READ_TIMEOUT) {
        Ok(line) => line,
        Err(e) => panic!("no line on {what} within {READ_TIMEOUT:?}: {e}"),
    }
}

/// A free loopback port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A client connected to a raw socket that plays the server, so a test can
/// send what no chat server would. Waits at most `READ_TIMEOUT` for it.
fn client_of_raw_server() -> (ClientProcess, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let me = ClientProcess::start(&[&addr]);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(listener.accept().map(|(stream, _)| stream));
    });
    let server = rx
        .recv_timeout(READ_TIMEOUT)
        .expect("the client did not connect")
        .expect("accept");
    (me, server)
}

/// Typed lines reach the room; the room's lines are printed.
#[test]
fn sends_and_receives_lines() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let (mut me, my_name) = ClientProcess::join(server.local_addr(), &[]);
    bob.expect(&format!("* {my_name} joined"));
    me.type_line("hello bob");
    bob.expect(&format!("<{my_name}> hello bob"));
    bob.send("hi there");
    me.expect_line("<bob> hi there");
    me.type_line("/who");
    me.expect_line(&format!("* 2 users here: bob, {my_name}"));
}

/// `--name` sends `/nick NAME` right after connecting.
#[test]
fn name_flag_takes_the_name() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let (mut me, my_name) = ClientProcess::join(server.local_addr(), &["--name", "alice"]);
    me.expect_line(&format!("* {my_name} is now known as alice"));
    bob.skip_until(|l| l.ends_with("is now known as alice"));
    me.type_line("hey");
    bob.expect("<alice> hey");
}

/// End of input: pending lines (even one without a newline) are sent, the
/// client leaves, and exits 0 without the disconnect message.
#[test]
fn end_of_input_sends_pending_and_exits_zero() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let (mut me, my_name) = ClientProcess::join(server.local_addr(), &[]);
    bob.expect(&format!("* {my_name} joined"));
    me.type_line("first");
    let stdin = me.stdin.as_mut().unwrap();
    stdin.write_all(b"last words").unwrap();
    me.close_input();
    bob.expect(&format!("<{my_name}> first"));
    bob.expect(&format!("<{my_name}> last words"));
    bob.expect(&format!("* {my_name} left"));
    assert_eq!(me.wait().code(), Some(0));
    assert!(!me.rest_of_stderr().iter().any(|l| l == DISCONNECTED));
}

/// The README's pipe example: `printf 'hello\n/quit\n' | pollchat connect`
/// prints the server's reply and exits 0.
#[test]
fn piped_quit_exits_zero() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let (mut me, _) = ClientProcess::join(server.local_addr(), &[]);
    me.type_line("hello");
    me.type_line("/quit");
    me.close_input();
    me.expect_line("* Bye!");
    assert_eq!(me.wait().code(), Some(0));
}

/// `/quit` while input is still open: the server's close was asked for, so
/// no disconnect message and status 0.
#[test]
fn quit_with_input_open_exits_zero() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let (mut me, _) = ClientProcess::join(server.local_addr(), &[]);
    me.type_line("/quit see you");
    me.expect_line("* Bye!");
    assert_eq!(me.wait().code(), Some(0));
    assert!(me.stdin.is_some(), "input was still open");
    assert!(!me.rest_of_stderr().iter().any(|l| l == DISCONNECTED));
}

/// Stdin that epoll cannot watch (a regular file, /dev/null) is still read
/// and sent.
#[test]
fn input_from_a_file_or_dev_null() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let path = std::env::temp_dir().join(format!("pollchat-client-{}.txt", std::process::id()));
    std::fs::write(&path, "from a file\n").unwrap();
    let file = std::fs::File::open(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    let addr = server.local_addr().to_string();
    let mut me = ClientProcess::start_with_stdin(&[&addr], Stdio::from(file));
    let name = bob.expect_suffix(" joined");
    let name = name.trim_start_matches("* ").trim_end_matches(" joined");
    bob.expect(&format!("<{name}> from a file"));
    assert_eq!(me.wait().code(), Some(0));

    let mut me = ClientProcess::start_with_stdin(&[&addr], Stdio::null());
    assert!(me.line().starts_with("* Welcome"));
    assert_eq!(me.wait().code(), Some(0));
}

/// A large piped input is sent whole, at the pace the server takes it, and
/// the client exits 0 only after that.
#[test]
fn large_piped_input_is_sent_whole() {
    let limits = Limits {
        sendq: 64 * 1024 * 1024,
        ..test_limits()
    };
    let server = start_chat(EngineKind::Poll, limits);
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let (mut me, my_name) = ClientProcess::join(server.local_addr(), &[]);
    bob.expect(&format!("* {my_name} joined"));
    let lines = 20_000;
    let mut stdin = me.stdin.take().unwrap();
    // Written from a thread: the client stops reading when the server lags,
    // so this write may wait while we read on bob's side.
    let writer = thread::spawn(move || {
        for i in 0..lines {
            writeln!(stdin, "line {i:05} {}", "x".repeat(80)).unwrap();
        }
    });
    for i in 0..lines {
        bob.expect(&format!("<{my_name}> line {i:05} {}", "x".repeat(80)));
    }
    writer.join().unwrap();
    bob.expect(&format!("* {my_name} left"));
    assert_eq!(me.wait().code(), Some(0));
}

/// The server shutting down ends the session with the message and status 1.
#[test]
fn server_shutdown_gives_exit_one_and_message() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let (mut me, _) = ClientProcess::join(server.local_addr(), &[]);
    server.stop().unwrap();
    me.expect_line("* server shutting down");
    assert_eq!(me.stderr_line(), DISCONNECTED);
    assert_eq!(me.wait().code(), Some(1));
}

/// Nothing listening: one line naming the address and the reason, status 1.
#[test]
fn refused_connection_gives_exit_one_and_message() {
    let port = closed_port();
    let mut me = ClientProcess::start(&[&format!("127.0.0.1:{port}")]);
    assert_eq!(
        me.stderr_line(),
        format!("Unable to connect to 127.0.0.1:{port}: connection refused")
    );
    assert_eq!(me.wait().code(), Some(1));
}

/// A malformed address or name is a usage error: status 2, nothing tried.
#[test]
fn bad_address_gives_exit_two() {
    for args in [
        &["bad host"][..],
        &["127.0.0.1:0"],
        &["host:port"],
        &["[::1"],
        &["--name", "two words"],
    ] {
        let mut me = ClientProcess::start(args);
        let message = me.stderr_line();
        assert!(message.starts_with("pollchat: invalid value"), "{message}");
        assert_eq!(me.wait().code(), Some(2), "{args:?}");
    }
}

/// Escape sequences typed by another client arrive as plain text.
#[test]
fn escape_sequences_from_another_client_are_harmless() {
    let server = start_chat(EngineKind::Poll, test_limits());
    let mut bob = Client::join_as(server.local_addr(), "bob");
    let (me, my_name) = ClientProcess::join(server.local_addr(), &[]);
    bob.expect(&format!("* {my_name} joined"));
    bob.send_raw(b"hi \x1b[2J\x1b]0;owned\x07there\x07\r\n");
    me.expect_line("<bob> hi there");
}

/// The client cleans what it prints itself, whatever the server sends:
/// escape sequences, C0 and C1 controls, invalid UTF-8.
#[test]
fn hostile_server_cannot_drive_the_terminal() {
    let (me, mut server) = client_of_raw_server();
    server
        .write_all(b"\x1b[2J\x1b[H\x1b]0;title\x07clear\x08\x00ed \xc2\x9b31mred \xff!\r\nnext\n")
        .unwrap();
    let line = me.raw_line();
    assert_eq!(String::from_utf8(line).unwrap(), "cleared red \u{fffd}!");
    me.expect_line("next");
}

/// A line over 64 KiB is cut and marked; a server that sends megabytes
/// without a newline does not grow the client's memory.
#[test]
fn endless_line_is_cut_and_memory_stays_bounded() {
    let (me, mut server) = client_of_raw_server();

    let sent_mib = 32;
    let chunk = vec![b'x'; 1024 * 1024];
    for _ in 0..sent_mib {
        server.write_all(&chunk).unwrap();
    }
    server.write_all(b"\nafter\n").unwrap();
    let expected = format!("{}{CUT_MARK}", "x".repeat(MAX_SERVER_LINE));
    assert_eq!(me.line(), expected);
    me.expect_line("after");

    let peak_kib = peak_memory_kib(me.child.id());
    assert!(
        peak_kib < 16 * 1024,
        "peak RSS {peak_kib} KiB after a {sent_mib} MiB line"
    );
}

/// The process's peak resident memory (VmHWM), from /proc.
fn peak_memory_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status")
}

// ----- over TLS (`--tls`, `--ca`, `--insecure`) ------------------------------
//
// Against pollchat's own TLS listener, on both engines.

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use common::tls::{TestCert, start_app_tls, start_chat_tls, tls_addr};
    use pollchat::chat::Chat;
    use pollchat::client::tls::INSECURE_WARNING;
    use pollchat::engine::RunningServer;

    /// A chat room with a TLS listener, and the address of that listener.
    fn tls_room(engine: EngineKind, cert: &TestCert) -> (RunningServer, String) {
        let server = start_chat_tls(engine, test_limits(), cert);
        let addr = tls_addr(&server).to_string();
        (server, addr)
    }

    fn cert_arg(cert: &TestCert) -> String {
        cert.cert.display().to_string()
    }

    /// The line a TLS session prints once its handshake is done.
    fn connected_over_tls(addr: &str) -> String {
        format!("Connected to {addr} over TLS. Type /help for commands, Ctrl-D to quit.")
    }

    /// `--tls --ca cert.pem`: the self-signed server is verified, and its
    /// room is the same as the plain port's: lines go both ways with a
    /// plain client, and `/quit` ends with status 0.
    fn verified_with_ca_chats_with_a_plain_client(engine: EngineKind) {
        let cert = TestCert::new();
        let (server, addr) = tls_room(engine, &cert);
        let mut bob = Client::join_as(server.local_addr(), "bob");
        let mut me = ClientProcess::start(&["--tls", "--ca", &cert_arg(&cert), &addr]);
        assert_eq!(me.stderr_line(), connected_over_tls(&addr));
        let my_name = name_in_welcome(&me.line());
        bob.expect(&format!("* {my_name} joined"));
        me.type_line("hello over tls");
        bob.expect(&format!("<{my_name}> hello over tls"));
        bob.send("hi back in plain");
        me.expect_line("<bob> hi back in plain");
        me.type_line("/quit");
        me.expect_line("* Bye!");
        assert_eq!(me.wait().code(), Some(0));
        bob.expect(&format!("* {my_name} left"));
        assert!(!me.rest_of_stderr().iter().any(|l| l == DISCONNECTED));
    }

    /// Without `--ca` no system root trusts the test certificate: one line
    /// naming the reason and the fix, status 1 (as for a refused connect),
    /// and the room never sees the client.
    fn refused_without_ca(engine: EngineKind) {
        let cert = TestCert::new();
        let (server, addr) = tls_room(engine, &cert);
        let mut bob = Client::join_as(server.local_addr(), "bob");
        let mut me = ClientProcess::start_with_stdin(&["--tls", &addr], Stdio::null());
        let message = me.stderr_line();
        assert!(
            message.starts_with(&format!(
                "Unable to connect to {addr}: TLS handshake failed: certificate not trusted"
            )),
            "{message}"
        );
        assert!(message.contains("--ca FILE"), "{message}");
        assert_eq!(me.wait().code(), Some(1));
        assert!(me.rest_of_stderr().is_empty(), "one line only");
        bob.send("/who");
        bob.expect("* 1 user here: bob");
    }

    /// A trusted certificate that does not name the host typed is refused
    /// as a name mismatch. (The listener is on 127.0.0.2, which the test
    /// certificate does not name.)
    fn refused_for_a_name_mismatch(engine: EngineKind) {
        let cert = TestCert::new();
        let listen = pollchat::config::TlsListen {
            addr: "127.0.0.2:0".parse().unwrap(),
            ..cert.listen()
        };
        let server = start_app_tls(engine, test_limits(), listen, Chat::new());
        let addr = tls_addr(&server).to_string();
        let mut me = ClientProcess::start_with_stdin(
            &["--tls", "--ca", &cert_arg(&cert), &addr],
            Stdio::null(),
        );
        assert_eq!(
            me.stderr_line(),
            format!(
                "Unable to connect to {addr}: TLS handshake failed: certificate name \
                 mismatch: the certificate does not name 127.0.0.2"
            )
        );
        assert_eq!(me.wait().code(), Some(1));
    }

    /// `--insecure` connects to the same untrusted server, after a warning
    /// on stderr, and chats.
    fn insecure_is_accepted_with_a_warning(engine: EngineKind) {
        let cert = TestCert::new();
        let (server, addr) = tls_room(engine, &cert);
        let mut bob = Client::join_as(server.local_addr(), "bob");
        let mut me = ClientProcess::start(&["--tls", "--insecure", &addr]);
        assert_eq!(me.stderr_line(), INSECURE_WARNING);
        assert_eq!(me.stderr_line(), connected_over_tls(&addr));
        let my_name = name_in_welcome(&me.line());
        me.type_line("unverified but encrypted");
        bob.skip_until(|l| l == format!("<{my_name}> unverified but encrypted"));
        me.close_input();
        bob.expect(&format!("* {my_name} left"));
        assert_eq!(me.wait().code(), Some(0));
    }

    /// `--tls` to the plain port: the greeting is no TLS record; one line
    /// says so (and suggests the TLS port), status 1.
    fn tls_to_the_plain_port_says_so(engine: EngineKind) {
        let cert = TestCert::new();
        let (server, _) = tls_room(engine, &cert);
        let addr = server.local_addr().to_string();
        let mut me =
            ClientProcess::start_with_stdin(&["--tls", "--insecure", &addr], Stdio::null());
        assert_eq!(me.stderr_line(), INSECURE_WARNING);
        let message = me.stderr_line();
        assert!(
            message.starts_with(&format!(
                "Unable to connect to {addr}: TLS handshake failed:"
            )) && message.contains("not TLS (is this its TLS port?)"),
            "{message}"
        );
        assert_eq!(me.wait().code(), Some(1));
    }

    engine_tests!(
        verified_with_ca_chats_with_a_plain_client,
        refused_without_ca,
        refused_for_a_name_mismatch,
        insecure_is_accepted_with_a_warning,
        tls_to_the_plain_port_says_so,
    );

    /// End of input over TLS: the last line, then `close_notify` before the
    /// FIN (a server reading with rustls sees a clean end, not a cut), and
    /// status 0. The server here is a rustls session on a plain socket, so
    /// the test sees exactly what the client sent.
    #[test]
    fn end_of_input_sends_close_notify() {
        use rustls::pki_types::PrivateKeyDer;
        use rustls::pki_types::pem::PemObject;
        use std::sync::Arc;

        let cert = TestCert::new();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der.clone()],
                PrivateKeyDer::from_pem_file(&cert.key).unwrap(),
            )
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut me = ClientProcess::start(&["--tls", "--ca", &cert_arg(&cert), &addr]);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(listener.accept().map(|(stream, _)| stream));
        });
        let sock = rx.recv_timeout(READ_TIMEOUT).unwrap().unwrap();
        sock.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let session = rustls::ServerConnection::new(Arc::new(config)).unwrap();
        let mut server = BufReader::new(rustls::StreamOwned::new(session, sock));
        server
            .get_mut()
            .write_all(b"* Welcome, you are user1\n")
            .unwrap();
        assert_eq!(me.stderr_line(), connected_over_tls(&addr));
        assert_eq!(me.line(), "* Welcome, you are user1");
        me.type_line("last words");
        me.close_input();
        let mut line = String::new();
        server.read_line(&mut line).unwrap();
        assert_eq!(line, "last words\n");
        // rustls answers Ok(0) only for a close_notify; a bare FIN is an
        // UnexpectedEof error.
        let mut rest = Vec::new();
        let end = server.read_to_end(&mut rest);
        assert!(end.is_ok() && rest.is_empty(), "{end:?} {rest:?}");
        drop(server);
        assert_eq!(me.wait().code(), Some(0));
    }
}

/// Flags that cannot be used are refused before connecting, with one line
/// and status 2: an unreadable `--ca` file, `--ca` or `--insecure` without
/// `--tls`, both at once.
#[test]
fn bad_tls_flags_give_exit_two() {
    let port = closed_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    #[cfg(feature = "tls")]
    let cases: &[(&[&str], &str)] = &[
        (
            &["--tls", "--ca", "/nonexistent/ca.pem"],
            "pollchat: --ca: cannot read /nonexistent/ca.pem",
        ),
        (
            &["--ca", "ca.pem"],
            "pollchat: --ca and --insecure go with --tls",
        ),
        (
            &["--insecure"],
            "pollchat: --ca and --insecure go with --tls",
        ),
        (
            &["--tls", "--ca", "ca.pem", "--insecure"],
            "pollchat: the argument",
        ),
    ];
    // The lean build still knows the flags, and refuses them as unbuilt.
    #[cfg(not(feature = "tls"))]
    let cases: &[(&[&str], &str)] = &[
        (
            &["--tls"],
            "pollchat: --tls: built without TLS support (rebuild with the default features)",
        ),
        (
            &["--tls", "--insecure"],
            "pollchat: --tls: built without TLS support",
        ),
        (
            &["--ca", "ca.pem"],
            "pollchat: --ca and --insecure go with --tls",
        ),
    ];
    for (flags, want) in cases {
        let mut args = flags.to_vec();
        args.push(&addr);
        let mut me = ClientProcess::start_with_stdin(&args, Stdio::null());
        let message = me.stderr_line();
        assert!(message.starts_with(want), "{flags:?}: {message}");
        assert_eq!(me.wait().code(), Some(2), "{flags:?}");
        assert!(me.rest_of_stderr().is_empty(), "{flags:?}: one line only");
    }
}
