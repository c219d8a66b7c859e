//! `pollchat connect`: a terminal client for the chat server, built like the
//! server itself: one `mio::Poll` loop over stdin and the socket, no threads.
//!
//! - [`address`]: the `HOST:PORT` argument.
//! - [`connect`]: name lookup and connecting, with a timeout.
//! - [`poll`]: the event loop. Start reading here.
//! - [`link`]: the server socket, plain or with TLS in front (shared with
//!   `pollchat bench`).
//! - [`tls`]: `--tls`, `--ca`, `--insecure`, and why a handshake failed
//!   (shared with `pollchat bench`).
//! - [`editor`]: the half-typed line, when a person types at a terminal.
//! - [`screen`]: what is printed: server lines made safe, the prompt.
//! - [`terminal`]: key-at-a-time terminal mode, restored on exit.
//! - [`unsent`]: what the server has not taken yet.

pub mod address;
pub mod connect;
pub mod editor;
pub mod link;
pub mod poll;
pub mod screen;
pub mod terminal;
pub mod tls;
pub mod unsent;

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use address::ServerAddress;
use poll::{Ending, Session};
use tls::TlsFlags;

/// Printed (on stderr) when the server goes away while we are talking.
pub const DISCONNECTED: &str = "Disconnected from chat server";

/// Connect, run the session, and say how it ended. Exit status: 0 when input
/// ended or after `/quit`, 1 when the connection failed (over TLS: the
/// handshake too, e.g. a certificate we do not trust) or the server went
/// away, 2 for TLS flags that cannot be used (a bad `--ca`, a lean build),
/// 128 + N after signal N (Ctrl-C at the prompt counts as SIGINT).
pub fn run(address: &ServerAddress, name: Option<&str>, tls: &TlsFlags) -> ExitCode {
    // TLS set-up comes first: a bad `--ca` is a mistake in the command, found
    // before anything is sent anywhere.
    let session = match tls.client_tls() {
        Ok(None) => None,
        Ok(Some(config)) => match config.session(&address.host) {
            Ok(session) => Some(session),
            Err(e) => return usage_error(&format!("--tls: {e}")),
        },
        Err(e) => return usage_error(&e),
    };
    let stream = match connect::connect(address) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };

    // Prompts and key-at-a-time input only when a person is at a terminal;
    // piped input or output never gets prompts or escape codes.
    let at_terminal = io::stdin().is_terminal() && io::stdout().is_terminal();
    let raw_keys = if at_terminal {
        terminal::RawKeys::enable().ok()
    } else {
        None
    };
    let ended = Session::new(stream, session, address.clone(), raw_keys.is_some()).and_then(
        |mut session| {
            if let Some(name) = name {
                session.send_line(format!("/nick {name}").as_bytes());
            }
            session.run()
        },
    );
    // Give the terminal back before the last words.
    drop(raw_keys);
    match ended {
        Ok(Ending::InputEnded | Ending::Quit) => ExitCode::SUCCESS,
        Ok(Ending::Disconnected) => {
            eprintln!("{DISCONNECTED}");
            ExitCode::FAILURE
        }
        Ok(Ending::Signal(signal)) => ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX)),
        // Worded like the other failed connects (see `connect.rs`).
        Ok(Ending::HandshakeFailed(why)) => {
            eprintln!("Unable to connect to {address}: {why}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("pollchat: connection loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Flags that cannot be used: one line, status 2, as for `serve`'s.
fn usage_error(e: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("pollchat: {e}");
    ExitCode::from(2)
}
