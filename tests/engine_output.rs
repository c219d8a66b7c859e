//! How an engine carries out an App's outputs: every client hears what is
//! addressed to it, in the order the App said it, whatever mix of replies
//! and broadcasts one line produces. Both engines keep broadcasts in the
//! shared log and each client's replies in its private queue, tagged with
//! the log position they follow (`engine/out_queue.rs`), so this is where
//! their interleaving is checked, on both engines.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Client, start_app, test_limits};
use pollchat::app::{App, ClientId, Clock, Outbox, Recipients, RoomId};
use pollchat::config::EngineKind;

/// An App that answers each of two words with a fixed mix of outputs.
struct Script;

impl App for Script {
    fn handle_joined(&mut self, client: ClientId, _: SocketAddr, _: Instant, out: &mut Outbox) {
        out.to(client, "hello");
    }

    fn handle_line(&mut self, client: ClientId, line: &str, _: Clock, out: &mut Outbox) {
        match line {
            "go" => {
                out.all("1");
                out.to(client, "2");
                out.room_but(RoomId::LOBBY, client, "3");
                out.to(client, "4");
                out.all("5");
            }
            "again" => {
                out.room_but(RoomId::LOBBY, client, "6");
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

/// Lines in one burst: more than one `writev` gathers (64 slices), since
/// each line goes to a different `AllBut` and so is a slice of its own.
const BURST: usize = 100;

/// An App that answers "burst" with `BURST` numbered lines, then as many
/// again from its timer, which is due one tick later.
#[derive(Default)]
struct Bursts {
    /// When the second burst is due.
    timer: Option<Instant>,
    /// The number of the next line.
    next: usize,
}

impl Bursts {
    fn burst(&mut self, out: &mut Outbox) {
        for _ in 0..BURST {
            self.next += 1;
            // Alternating ids no client has: everyone hears every line, and
            // no two neighbours can share a broadcast segment.
            let except = ClientId(1_000_000 + self.next % 2);
            out.send(
                Recipients::RoomBut(RoomId::LOBBY, except),
                format!("{}\n", self.next),
            );
        }
    }
}

impl App for Bursts {
    fn handle_joined(&mut self, client: ClientId, _: SocketAddr, _: Instant, out: &mut Outbox) {
        out.to(client, "hello");
    }

    fn handle_line(&mut self, _: ClientId, _: &str, now: Clock, out: &mut Outbox) {
        self.burst(out);
        self.timer = Some(now.now + Duration::from_nanos(1));
    }

    fn handle_left(&mut self, _: ClientId, _: Instant, _: &mut Outbox) {}

    fn handle_timeout(&mut self, _: Instant, out: &mut Outbox) {
        self.timer = None;
        self.burst(out);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.timer
    }
}

/// More slices than one `writev` carries, two ticks running: the poll
/// engine's first write leaves the rest queued and asks for WRITABLE, and
/// the second tick spends that event on another full `writev` into a socket
/// that still has room, so no new event will come. What is left must still
/// be written, without waiting for someone else to speak.
fn output_past_one_writev_is_not_left_waiting(engine: EngineKind) {
    let server = start_app(engine, test_limits(), Bursts::default());
    let mut client = Client::connect(server.local_addr());
    client.expect("hello");
    client.send("burst");
    for n in 1..=2 * BURST {
        client.expect(&n.to_string());
    }
}

engine_tests!(
    replies_and_broadcasts_keep_their_order,
    output_past_one_writev_is_not_left_waiting
);
