//! Start-up mistakes: one clear line on stderr, exit status 2, no panic.

mod common;

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(common::BIN)
        .args(args)
        .output()
        .expect("run pollchat")
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
