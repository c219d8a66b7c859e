//! Helpers shared by the integration tests: start an in-process server on
//! `127.0.0.1:0`, and a line client whose every read is bounded by a timeout,
//! so a test waits for an expected line instead of sleeping.
//!
//! Scenarios are written once as `fn scenario(engine: EngineKind)` and
//! instantiated for each engine with [`engine_tests!`].

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use pollchat::app::App;
use pollchat::chat::Chat;
use pollchat::config::{Config, EngineKind, Limits};
use pollchat::engine::{RunningServer, Server};

/// How long any single expected line may take before the test fails. Generous:
/// it bounds a hung test, it is not a speed check, and CI machines are shared.
pub const READ_TIMEOUT: Duration = Duration::from_secs(20);

/// Generate one `#[test]` per engine for each scenario function.
#[macro_export]
macro_rules! engine_tests {
    ($($scenario:ident),* $(,)?) => {
        mod poll {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(pollchat::config::EngineKind::Poll);
                }
            )*
        }
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

/// Limits for tests: the defaults, but no flood control unless a test
/// wants it (tests send fast).
pub fn test_limits() -> Limits {
    Limits {
        rate: 0,
        ..Limits::default()
    }
}

/// Start a chat room on a free loopback port. Dropping the returned server
/// stops it.
pub fn start_chat(engine: EngineKind, limits: Limits) -> RunningServer {
    start_app(engine, limits, Chat::new())
}

pub fn start_app<A: App + Send + 'static>(
    engine: EngineKind,
    limits: Limits,
    app: A,
) -> RunningServer {
    start_configured(test_config(engine, limits), app)
}

/// A config on a free loopback port with these engine and limits.
pub fn test_config(engine: EngineKind, limits: Limits) -> Config {
    let mut config = Config::new("127.0.0.1:0".parse().unwrap());
    config.engine = engine;
    config.limits = limits;
    config
}

/// Bind `config` and run `app` on a thread of its own.
pub fn start_configured<A: App + Send + 'static>(config: Config, app: A) -> RunningServer {
    Server::bind(config, app)
        .expect("bind a test server")
        .spawn()
        .expect("spawn the server thread")
}

/// The default name in a welcome line (`... You are user7. ...`).
#[track_caller]
pub fn name_in_welcome(welcome: &str) -> String {
    welcome
        .split("You are ")
        .nth(1)
        .and_then(|rest| rest.split('.').next())
        .unwrap_or_else(|| panic!("no name in welcome line {welcome:?}"))
        .to_string()
}

/// A client connected from another loopback address (`127.0.0.2`, ...),
/// so that a ban of it leaves the test's other clients alone.
pub fn connect_from(addr: SocketAddr, ip: &str) -> Client {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    let ip: std::net::IpAddr = ip.parse().unwrap();
    socket
        .bind(&SocketAddr::new(ip, 0).into())
        .expect("bind the source address");
    socket.connect(&addr.into()).expect("connect");
    Client::from_stream(TcpStream::from(socket))
}

pub mod numbered;
pub mod redis;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "web")]
pub mod web;

/// Where a scenario's clients connect: the plain port, or the TLS port
/// with the certificate to trust. Scenarios written over a `Link` run the
/// same way over both.
#[derive(Clone, Copy)]
pub enum Link<'a> {
    Plain(SocketAddr, std::marker::PhantomData<&'a ()>),
    #[cfg(feature = "tls")]
    Tls(SocketAddr, &'a tls::TestCert),
    /// A WebSocket to the web port.
    #[cfg(feature = "web")]
    Web(SocketAddr),
}

impl Link<'_> {
    pub fn plain(addr: SocketAddr) -> Link<'static> {
        Link::Plain(addr, std::marker::PhantomData)
    }

    /// Connect, take `name`, wait for the rename.
    pub fn join_as(&self, name: &str) -> Client {
        match *self {
            Link::Plain(addr, _) => Client::join_as(addr, name),
            #[cfg(feature = "tls")]
            Link::Tls(addr, cert) => Client::join_tls_as(addr, cert, name),
            #[cfg(feature = "web")]
            Link::Web(addr) => Client::join_ws_as(addr, name),
        }
    }
}

/// A blocking line client with bounded reads, plain or TLS.
pub struct Client {
    /// The TCP socket itself (for shutdown, socket options, a reader
    /// thread). On a TLS client, writing to it directly breaks the session.
    pub stream: TcpStream,
    reader: BufReader<Conn>,
}

/// What a [`Client`] reads lines from and writes lines to.
enum Conn {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
    #[cfg(feature = "web")]
    Ws(Box<web::WsLines<TcpStream>>),
    #[cfg(all(feature = "web", feature = "tls"))]
    Wss(Box<web::WsLines<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>>),
}

impl std::io::Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.read(buf),
            #[cfg(feature = "web")]
            Conn::Ws(s) => s.read(buf),
            #[cfg(all(feature = "web", feature = "tls"))]
            Conn::Wss(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.write(buf),
            #[cfg(feature = "web")]
            Conn::Ws(s) => s.write(buf),
            #[cfg(all(feature = "web", feature = "tls"))]
            Conn::Wss(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            #[cfg(feature = "tls")]
            Conn::Tls(s) => s.flush(),
            #[cfg(feature = "web")]
            Conn::Ws(s) => s.flush(),
            #[cfg(all(feature = "web", feature = "tls"))]
            Conn::Wss(s) => s.flush(),
        }
    }
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        Client::from_stream(TcpStream::connect(addr).expect("connect to test server"))
    }

    /// A client on a socket connected some other way (a small window, a
    /// source address of its own).
    pub fn from_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(Conn::Plain(stream.try_clone().unwrap()));
        Client { stream, reader }
    }

    /// Connect, read the welcome line, and return (client, default name).
    pub fn join(addr: SocketAddr) -> (Client, String) {
        let mut c = Client::connect(addr);
        let name = name_in_welcome(&c.line());
        (c, name)
    }

    /// Connect and take a name; waits for the rename to be confirmed.
    pub fn join_as(addr: SocketAddr, name: &str) -> Client {
        let (mut c, _) = Client::join(addr);
        c.send(&format!("/nick {name}"));
        c.expect_suffix(&format!(" is now known as {name}"));
        c
    }

    /// Two named clients, `alice` and `bob`, with alice past bob's arrival:
    /// the usual start of a two-person scenario.
    pub fn alice_and_bob(addr: SocketAddr) -> (Client, Client) {
        let mut a = Client::join_as(addr, "alice");
        let b = Client::join_as(addr, "bob");
        a.skip_until(|l| l.ends_with("bob"));
        (a, b)
    }

    pub fn send(&mut self, line: &str) {
        self.send_raw(format!("{line}\n").as_bytes());
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        let conn = self.reader.get_mut();
        conn.write_all(bytes).expect("write to server");
        conn.flush().expect("write to server");
    }

    /// The next line (without `\n`), or panic after `READ_TIMEOUT`.
    #[track_caller]
    pub fn line(&mut self) -> String {
        match self.try_line() {
            Some(line) => line,
            None => panic!("connection closed while waiting for a line"),
        }
    }

    /// The next line, or `None` at end of stream. Panics on timeout.
    #[track_caller]
    pub fn try_line(&mut self) -> Option<String> {
        let mut buf = Vec::new();
        match self.reader.read_until(b'\n', &mut buf) {
            Ok(0) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8(buf).expect("server sent invalid UTF-8"))
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no line within {READ_TIMEOUT:?}")
            }
            // A reset, or (over TLS) a close without `close_notify`.
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::UnexpectedEof
                ) =>
            {
                None
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }

    /// The next line must be exactly `want`.
    #[track_caller]
    pub fn expect(&mut self, want: &str) {
        let got = self.line();
        assert_eq!(got, want);
    }

    /// Skip lines until one ends with `suffix` (at most 10,000 lines).
    #[track_caller]
    pub fn expect_suffix(&mut self, suffix: &str) -> String {
        self.skip_until(|l| l.ends_with(suffix))
    }

    /// Skip lines until one satisfies `pred`; returns it. Bounded in count
    /// and, through the read timeout, in time.
    #[track_caller]
    pub fn skip_until(&mut self, pred: impl Fn(&str) -> bool) -> String {
        for _ in 0..10_000 {
            let line = self.line();
            if pred(&line) {
                return line;
            }
        }
        panic!("expected line not seen in 10,000 lines")
    }

    /// Read until the server closes the connection cleanly (end of stream;
    /// a reset fails the test); returns what arrived.
    #[track_caller]
    pub fn read_to_close_strict(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = Instant::now() + READ_TIMEOUT;
        loop {
            let mut buf = Vec::new();
            match self.reader.read_until(b'\n', &mut buf) {
                Ok(0) => return lines,
                Ok(_) => {
                    if buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    lines.push(String::from_utf8_lossy(&buf).into_owned());
                }
                Err(e) => {
                    let last = lines.last().map(|l| &l[..l.len().min(40)]);
                    panic!("{e} after {} lines, the last {last:?}", lines.len())
                }
            }
            assert!(
                Instant::now() < deadline,
                "server did not close the connection"
            );
        }
    }

    /// Read until the server closes the connection; returns what arrived.
    #[track_caller]
    pub fn read_to_close(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        let deadline = Instant::now() + READ_TIMEOUT;
        while let Some(line) = self.try_line() {
            lines.push(line);
            assert!(
                Instant::now() < deadline,
                "server did not close the connection"
            );
        }
        lines
    }
}

/// The `pollchat` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_pollchat");

/// A `pollchat serve` child process, for what only a separate process shows:
/// its memory, its CPU, its fd limit, signals and exit status. Killed on drop.
pub struct ChildServer {
    pub child: std::process::Child,
    pub addr: SocketAddr,
    /// Lines the server logged to stderr, as they arrive.
    pub log: std::sync::mpsc::Receiver<String>,
}

impl ChildServer {
    /// Start `pollchat serve --engine ENGINE ARGS...` on a free loopback
    /// port and wait (bounded) for its "listening on" line.
    pub fn start(engine: EngineKind, args: &[&str]) -> ChildServer {
        for _ in 0..5 {
            let port = free_port();
            let mut child = serve_command(engine, port, args)
                .spawn()
                .expect("start pollchat serve");
            let log = forward_lines(child.stderr.take().unwrap());
            let deadline = Instant::now() + Duration::from_secs(10);
            while let Ok(line) =
                log.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                if line.contains("listening on") {
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    return ChildServer { child, addr, log };
                }
                if line.contains("in use") {
                    break; // lost a race for the port: try another
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("pollchat serve did not start");
    }

    /// Like [`ChildServer::start`], but stderr is handed back unread after
    /// the "listening on" line (`log` receives nothing): for tests of a log
    /// that nobody reads. The server is already guarded (killed on drop)
    /// while that first line is awaited.
    pub fn start_unread(
        engine: EngineKind,
        args: &[&str],
    ) -> (ChildServer, BufReader<std::process::ChildStderr>) {
        for _ in 0..5 {
            let port = free_port();
            let mut child = serve_command(engine, port, args)
                .spawn()
                .expect("start pollchat serve");
            let mut stderr = BufReader::new(child.stderr.take().unwrap());
            let (first_tx, first_rx) = std::sync::mpsc::channel();
            // Up to the "listening on" line (`-vv` logs mio's first).
            std::thread::spawn(move || {
                let mut line = String::new();
                for _ in 0..100 {
                    line.clear();
                    match stderr.read_line(&mut line) {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                    if line.contains("listening on") || line.contains("in use") {
                        break;
                    }
                }
                let _ = first_tx.send((line, stderr));
            });
            let (_, log) = std::sync::mpsc::channel();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let server = ChildServer { child, addr, log };
            match first_rx.recv_timeout(Duration::from_secs(10)) {
                Ok((first, stderr)) if first.contains("listening on") => return (server, stderr),
                Ok((first, _)) if first.contains("in use") => continue, // lost a race for the port
                Ok((first, _)) => panic!("pollchat serve did not start: {first:?}"),
                Err(_) => panic!("pollchat serve said nothing within 10 s"),
            }
        }
        panic!("pollchat serve did not start");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal by name (`TERM`, `INT`) with the `kill` command.
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Wait (bounded) for the process to exit; returns its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("wait for server") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not exit within {within:?}");
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid(), "VmRSS:")
    }

    /// User + system CPU time in clock ticks, from /proc/PID/stat.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        // Fields after the command name (which may contain spaces).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `pollchat serve --port PORT --engine ENGINE ARGS...`, stdin and stdout
/// closed, stderr piped (where the server logs).
pub fn serve_command(engine: EngineKind, port: u16, args: &[&str]) -> std::process::Command {
    use std::process::Stdio;
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "serve",
            "--port",
            &port.to_string(),
            "--engine",
            &engine.to_string(),
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `Name:   123 kB` line from /proc/PID/status, in KiB.
pub fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Read lines from a pipe on a thread and hand them over a channel.
pub fn forward_lines(
    pipe: impl std::io::Read + Send + 'static,
) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

// ----- helpers for the hardening scenarios (issue 7) ------------------------

/// A connection that never reads, with the smallest receive buffer the
/// kernel allows and small (536-byte) segments, so the server's kernel
/// buffers little for it and the server's own queue fills soon after. The
/// server's kernel sizes a connection's send buffer from the segments its
/// peer offers: with loopback's 64 KB segments it takes about 4 MB for a
/// peer that never reads, with these tens of KB (200 KB at most, seen on
/// 1,000 such peers). Both options must be set before connecting.
pub fn stalled_connection(addr: SocketAddr) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket
        .set_recv_buffer_size(1)
        .expect("shrink the receive buffer");
    socket.set_tcp_mss(536).expect("ask for small segments");
    socket
        .connect(&addr.into())
        .expect("connect a stalled client");
    socket.into()
}

/// A connection behind a small TCP window, as on a phone or a distant link:
/// a 4 KiB receive buffer and 536-byte segments (set before connecting),
/// optionally from another loopback address (`127.0.0.2`, say) so it does
/// not count against `--max-per-ip` with the test's other clients.
pub fn small_window_connection(addr: SocketAddr, from: Option<std::net::IpAddr>) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).unwrap();
    socket
        .set_recv_buffer_size(4096)
        .expect("set the receive buffer");
    socket.set_tcp_mss(536).expect("ask for small segments");
    if let Some(ip) = from {
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .expect("bind the source address");
    }
    socket.connect(&addr.into()).expect("connect");
    socket.into()
}

/// Read a connection at most `bytes_per_sec`, as a slow link delivers it:
/// each second's worth is read in tenths, and the reader waits out the
/// rest of each tenth. Lines go to the returned channel as they complete;
/// it closes when the connection does (or after `READ_TIMEOUT` silence).
pub fn slow_reader(stream: TcpStream, bytes_per_sec: usize) -> std::sync::mpsc::Receiver<String> {
    use std::io::Read;
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stream = stream;
        let slice = (bytes_per_sec / 10).max(1);
        let mut buf = vec![0u8; slice];
        let mut partial = Vec::new();
        let start = Instant::now();
        let mut taken = 0usize;
        loop {
            // Pace: never ahead of `bytes_per_sec` since the start.
            let due = Duration::from_secs_f64(taken as f64 / bytes_per_sec as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            let n = match stream.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            taken += n;
            partial.extend_from_slice(&buf[..n]);
            while let Some(end) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line[..end]).into_owned();
                if tx.send(text).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

/// Hand every line a client receives to a channel, from a thread, so a test
/// can keep sending while it waits (bounded) for what comes back. The
/// channel closes when the connection does, or after `READ_TIMEOUT` silence.
/// Call it when the client has read everything sent to it so far: from then
/// on, read through the channel only.
pub fn lines_of(client: &Client) -> std::sync::mpsc::Receiver<String> {
    forward_lines(client.stream.try_clone().expect("clone the client socket"))
}

/// The next line from [`lines_of`] that satisfies `pred`, skipping at most
/// `max_skip` others; panics on timeout or close.
#[track_caller]
pub fn recv_until(
    lines: &std::sync::mpsc::Receiver<String>,
    max_skip: usize,
    pred: impl Fn(&str) -> bool,
) -> String {
    for _ in 0..=max_skip {
        let line = lines
            .recv_timeout(READ_TIMEOUT)
            .expect("no line within the read timeout");
        if pred(&line) {
            return line;
        }
    }
    panic!("expected line not seen in {max_skip} lines")
}

/// Hold this for the whole test to run one at a time among the tests of
/// one binary that take it (they run in parallel otherwise).
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Make sure this process may open `want` files, raising the soft
/// `RLIMIT_NOFILE` towards the hard one if needed (with `prlimit`, as for
/// the fd-exhaustion test: no `unsafe`, no extra crate). Child servers
/// started afterwards inherit the limit.
pub fn ensure_fd_limit(want: usize) {
    let soft = pollchat::config::fd_limit().expect("a finite open-file limit");
    if soft >= want {
        return;
    }
    let status = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={want}:"),
        ])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(
        status.success(),
        "this test needs {want} open files; the soft limit is {soft} and the hard limit \
         is lower than {want} (raise it with `ulimit -Hn`)"
    );
}

/// Print a measured figure for the record (resource use of a child server,
/// loss counts); see them with `cargo test -- --nocapture | grep figure:`.
/// Figures are reported, never compared with a speed.
pub fn figure(text: &str) {
    eprintln!("figure: {text}");
}

/// Read until the server closes the connection (end of stream or reset),
/// skipping what it sends first (an alert); fails if it stays open.
#[track_caller]
pub fn assert_closed_by_server(stream: &mut TcpStream, what: &str) {
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match std::io::Read::read(stream, &mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server did not close it: {e}"),
        }
    }
    panic!("{what}: endless bytes from the server");
}
