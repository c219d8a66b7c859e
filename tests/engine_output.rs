//! How an engine carries out an App's outputs: every client hears what is
//! addressed to it, in the order the App said it, whatever mix of replies
//! and broadcasts one line produces. The poll engine keeps a tick's
//! broadcasts apart from each client's replies (`engine/broadcasts.rs`), so
//! this is where their interleaving is checked, on both engines.

mod common;

use std::net::SocketAddr;
use std::time::Instant;

use common::{Client, start_app, test_limits};
use pollchat::app::{App, ClientId, Outbox};
use pollchat::config::EngineKind;

/// An App that answers each of two words with a fixed mix of outputs.
struct Script;

impl App for Script {
    fn handle_joined(&mut self, client: ClientId, _: SocketAddr, _: Instant, out: &mut Outbox) {
        out.to(client, "hello");
    }

    fn handle_line(&mut self, client: ClientId, line: &str, _: Instant, out: &mut Outbox) {
        match line {
            "go" => {
                out.all("1");
                out.to(client, "2");
                out.all_but(client, "3");
                out.to(client, "4");
                out.all("5");
            }
            "again" => {
                out.all_but(client, "6");
                out.to(client, "7");
            }
            _ => out.to(client, "?"),
        }
    }

    fn handle_left(&mut self, _: ClientId, _: Instant, _: &mut Outbox) {}
}

/// Replies and broadcasts from one line, and from two lines sent in one
/// write (so most likely read in one tick), arrive in the order said.
fn replies_and_broadcasts_keep_their_order(engine: EngineKind) {
    let server = start_app(engine, test_limits(), Script);
    let mut speaker = Client::connect(server.local_addr());
    speaker.expect("hello");
    let mut other = Client::connect(server.local_addr());
    other.expect("hello");

    speaker.send_raw(b"go\nagain\n");
    for want in ["1", "2", "4", "5", "7"] {
        speaker.expect(want);
    }
    for want in ["1", "3", "5", "6"] {
        other.expect(want);
    }
    // Nothing else was queued for either: the next line is a fresh reply.
    speaker.send("ping");
    speaker.expect("?");
    other.send("ping");
    other.expect("?");
}

engine_tests!(replies_and_broadcasts_keep_their_order);
