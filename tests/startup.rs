//! Start-up mistakes: one clear line on stderr, exit status 2, no panic.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{ChildServer, Client};
use pollchat::config::{EngineKind, MAX_IDLE_TIMEOUT_SECS};

/// Run pollchat to its exit, or for 10 s: arguments that should have been
/// refused but start a server get it killed then (and no exit code).
fn run(args: &[&str]) -> Output {
    let child = Command::new(common::BIN)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pollchat");
    let pid = child.id().to_string();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let output = match done.recv_timeout(Duration::from_secs(10)) {
        Ok(output) => output,
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            done.recv()
                .expect("the waiting thread ends once pollchat does")
        }
    };
    output.expect("wait for pollchat")
}

#[track_caller]
fn assert_usage_error(args: &[&str], needle: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "args {args:?}: {stderr}");
    assert_eq!(
        stderr.lines().count(),
        1,
        "args {args:?}: not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "args {args:?}: {stderr:?} lacks {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// An unknown flag.
#[test]
fn unknown_flag() {
    assert_usage_error(&["serve", "--bogus"], "--bogus");
}

/// Ports 0 and 70000 are refused before anything binds.
#[test]
fn bad_ports() {
    assert_usage_error(&["serve", "--port", "0"], "--port");
    assert_usage_error(&["serve", "--port", "70000"], "--port");
}

/// `--max-line 0` makes no sense.
#[test]
fn zero_max_line() {
    assert_usage_error(&["serve", "--max-line", "0"], "--max-line");
}

/// `--idle-timeout` past ten years is refused, as is 0 (leaving the flag
/// out means no timeout). The engines add the timeout to the clock, and
/// 18446744073709551615 used to be accepted: the server started, and each
/// threaded reader panicked on `Instant + Duration` as its client joined.
#[test]
fn idle_timeout_out_of_range() {
    let port = common::free_port().to_string();
    let too_long = (MAX_IDLE_TIMEOUT_SECS + 1).to_string();
    for command in ["serve", "quiz"] {
        for secs in ["18446744073709551615", too_long.as_str(), "0"] {
            assert_usage_error(
                &[command, "--port", &port, "--idle-timeout", secs],
                "--idle-timeout",
            );
        }
    }
}

/// The longest accepted `--idle-timeout` starts, and serves: the threaded
/// engine's reader adds it to the clock for each read, the poll engine a
/// tenth of it at start-up and at each sweep.
#[test]
fn longest_idle_timeout_serves_clients() {
    let longest = MAX_IDLE_TIMEOUT_SECS.to_string();
    for engine in [EngineKind::Poll, EngineKind::Threaded] {
        let server = ChildServer::start(engine, &["--idle-timeout", &longest]);
        let (mut client, name) = Client::join(server.addr);
        client.send("/who");
        client.expect(&format!("* 1 user here: {name}"));
    }
}

/// A host that isn't an address.
#[test]
fn host_not_an_address() {
    assert_usage_error(&["serve", "--host", "chat.example"], "--host");
}

/// A port already in use: the message names the address and says so.
#[test]
fn port_in_use() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    assert_usage_error(
        &["serve", "--port", &port],
        &format!("127.0.0.1:{port}: address already in use"),
    );
}

/// `--help` lists every flag with an example, and exits 0.
#[test]
fn help_lists_flags_and_example() {
    let out = run(&["serve", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--host",
        "--port",
        "--engine",
        "--max-clients",
        "--max-line",
        "--sendq",
        "--rate",
        "--burst",
        "--max-per-ip",
        "--idle-timeout",
        "--verbose",
        "--quiet",
        "Example",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

// ----- TLS files (issue 12) --------------------------------------------------

/// `serve --tls-port` with these certificate and key files must refuse to
/// start, with one line that contains `needle`.
#[cfg(feature = "tls")]
#[track_caller]
fn assert_tls_files_refused(cert: &std::path::Path, key: &std::path::Path, needle: &str) {
    let port = common::free_port().to_string();
    let tls_port = common::free_port().to_string();
    let (cert, key) = (cert.display().to_string(), key.display().to_string());
    assert_usage_error(
        &[
            "serve",
            "--port",
            &port,
            "--tls-port",
            &tls_port,
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ],
        needle,
    );
}

/// A missing certificate, a directory as the key, a file with no PEM in it,
/// a damaged PEM block, a certificate given as the key, and a key that
/// belongs to another certificate: each stops start-up with one line that
/// names the file and the problem.
#[cfg(feature = "tls")]
#[test]
fn bad_tls_files_are_refused_with_one_line() {
    let good = common::tls::TestCert::new();
    let other = common::tls::TestCert::new();
    let missing = good.dir.join("missing.pem");
    let no_pem = good.dir.join("notes.txt");
    std::fs::write(&no_pem, "just some text\n").unwrap();
    let damaged = good.dir.join("damaged.pem");
    std::fs::write(&damaged, "-----BEGIN CERTIFICATE-----\nMIIB\n").unwrap();

    let name = |p: &std::path::Path| p.display().to_string();
    assert_tls_files_refused(
        &missing,
        &good.key,
        &format!("cannot read {}", name(&missing)),
    );
    assert_tls_files_refused(
        &good.cert,
        &good.dir,
        &format!("cannot read {}", name(&good.dir)),
    );
    assert_tls_files_refused(
        &no_pem,
        &good.key,
        &format!("{}: no certificate found", name(&no_pem)),
    );
    assert_tls_files_refused(
        &damaged,
        &good.key,
        &format!("{}: damaged PEM", name(&damaged)),
    );
    assert_tls_files_refused(
        &good.cert,
        &good.cert,
        &format!("{}: no private key found", name(&good.cert)),
    );
    assert_tls_files_refused(
        &good.cert,
        &other.key,
        &format!(
            "{}: the key does not match the certificate",
            name(&other.key)
        ),
    );
}

/// `--tls-only` and the other TLS flags need `--tls-port`.
#[test]
fn tls_flags_need_a_tls_port() {
    assert_usage_error(&["serve", "--tls-only"], "--tls-port");
    assert_usage_error(&["quiz", "--tls-cert", "c.pem"], "--tls-port");
}

/// `--web-origin` needs `--web-port`, and the certificate flags need a
/// port to serve them on.
#[test]
fn web_flags_need_a_web_port() {
    assert_usage_error(
        &["serve", "--web-origin", "https://x.example"],
        "--web-port",
    );
    assert_usage_error(
        &["serve", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
        "--web-port",
    );
    assert_usage_error(
        &["serve", "--web-port", "8080", "--tls-cert", "c.pem"],
        "--tls-key",
    );
}

/// The lean build has no web front either: `--web-port` is a start-up
/// error that says so.
#[cfg(not(feature = "web"))]
#[test]
fn lean_build_refuses_web() {
    let port = common::free_port().to_string();
    let web = common::free_port().to_string();
    assert_usage_error(
        &["serve", "--port", &port, "--web-port", &web],
        "built without web support",
    );
}

/// The lean build (`--no-default-features`) has no TLS: asking for it is a
/// start-up error that says so.
#[cfg(not(feature = "tls"))]
#[test]
fn lean_build_refuses_tls() {
    let port = common::free_port().to_string();
    assert_usage_error(
        &[
            "serve",
            "--port",
            &port,
            "--tls-port",
            "9443",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
        ],
        "built without TLS support",
    );
}

/// `--op-secret-file` must name a readable, non-empty file.
#[test]
fn op_secret_file_must_be_readable_and_not_empty() {
    assert_usage_error(
        &["serve", "--op-secret-file", "/nonexistent/pollchat-secret"],
        "cannot read --op-secret-file /nonexistent/pollchat-secret",
    );
    let dir = std::env::temp_dir().join(format!("pollchat-op-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let empty = empty.to_str().unwrap();
    assert_usage_error(&["serve", "--op-secret-file", empty], "is empty");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The secret from a file (its trailing newline dropped), and from
/// `POLLCHAT_OP_SECRET`; the other one does not work.
#[test]
fn op_secret_from_a_file_or_the_environment() {
    let dir = std::env::temp_dir().join(format!("pollchat-op-ok-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("secret");
    std::fs::write(&file, "from-the-file\n").unwrap();
    let server = ChildServer::start(
        EngineKind::Poll,
        &["--op-secret-file", file.to_str().unwrap()],
    );
    let (mut client, _) = Client::join(server.addr);
    client.send("/op from-the-file");
    client.expect("* you are now an operator (/help lists the commands)");
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);

    let port = common::free_port();
    let mut child = common::serve_command(EngineKind::Threaded, port, &[])
        .env(pollchat::cli::OP_SECRET_ENV, "from-the-env")
        .spawn()
        .expect("start pollchat serve");
    let log = common::forward_lines(child.stderr.take().unwrap());
    let started = (0..20)
        .map_while(|_| log.recv_timeout(Duration::from_secs(10)).ok())
        .any(|line| line.contains("listening on"));
    assert!(started, "the server did not start");
    let (mut client, _) = Client::join(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    client.send("/op from-the-file");
    client.expect("! wrong operator secret");
    client.send("/op from-the-env");
    client.expect("* you are now an operator (/help lists the commands)");
    let _ = child.kill();
    let _ = child.wait();
}

/// `--cluster` mistakes: a URL that is not one, the threaded engine, a bad
/// `--node`, and `--cluster-required` with no Redis: each one line, exit 2.
#[cfg(feature = "cluster")]
#[test]
fn cluster_mistakes_exit_2_with_one_line() {
    assert_usage_error(
        &["serve", "--cluster", "http://127.0.0.1:6379"],
        "bad --cluster URL \"http://127.0.0.1:6379\": it must start with redis://",
    );
    assert_usage_error(
        &["serve", "--cluster", "redis://h:x"],
        "the port is not a number",
    );
    assert_usage_error(
        &[
            "serve",
            "--engine",
            "threaded",
            "--cluster",
            "redis://127.0.0.1:1",
        ],
        "--cluster needs --engine poll",
    );
    assert_usage_error(
        &["serve", "--cluster", "redis://127.0.0.1:1", "--node", "a.b"],
        "--node",
    );
    assert_usage_error(&["serve", "--node", "a"], "--cluster");
    // Nothing listens on a port that was just free: Redis "does not answer".
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let port = common::free_port().to_string();
    assert_usage_error(
        &[
            "serve",
            "--port",
            &port,
            "--cluster",
            &url,
            "--cluster-required",
        ],
        "--cluster-required: Redis at 127.0.0.1:",
    );
}

/// `pollchat serve ARGS` under `prlimit --nofile=100:4096`: its log up to
/// and with the "listening" line, and its `Max open files` line from /proc.
fn serve_with_100_open_files(args: &[&str]) -> (Vec<String>, String) {
    let port = common::free_port().to_string();
    let mut child = Command::new("prlimit")
        .args(["--nofile=100:4096", common::BIN, "serve", "--port", &port])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run prlimit pollchat");
    let log = common::forward_lines(child.stderr.take().unwrap());
    let mut lines = Vec::new();
    while let Ok(line) = log.recv_timeout(Duration::from_secs(10)) {
        let last = line.contains("listening on");
        lines.push(line);
        if last || lines.len() > 20 {
            break;
        }
    }
    let limits =
        std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    let open_files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_default()
        .to_string();
    (lines, open_files)
}

/// The server raises its soft open-file limit to the hard one at start,
/// and its "listening" line says what caps its clients: the flag, or the
/// open-file limit.
#[test]
fn the_open_file_limit_is_raised_and_what_caps_clients_is_said() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        eprintln!("skipped: no prlimit (util-linux)");
        return;
    }
    let (lines, open_files) = serve_with_100_open_files(&[]);
    let said = lines.join("\n");
    assert!(
        said.contains("open-file limit raised from 100 to 4096"),
        "{said}"
    );
    assert_eq!(
        open_files.split_whitespace().nth(3),
        Some("4096"),
        "{open_files}"
    );
    let listening = lines.last().cloned().unwrap_or_default();
    assert!(
        listening.contains("at most 4064 clients, capped by the hard open-file limit of 4096"),
        "{listening}"
    );
    let (lines, _) = serve_with_100_open_files(&["--max-clients", "50"]);
    let listening = lines.last().cloned().unwrap_or_default();
    assert!(
        listening.contains("at most 50 clients, set by --max-clients"),
        "{listening}"
    );
}
