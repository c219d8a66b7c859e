//! The contract between an engine and an application: the [`App`] trait.
//!
//! An App (the chat room, the quiz) is *sans-IO*: it never touches a socket
//! and never reads the clock. An engine (poll or threaded) feeds it events —
//! a client joined, sent a line, left, or time passed — with `now` passed in,
//! and the App answers by pushing [`Output`]s into an [`Outbox`]: which bytes go
//! to whom, which room a client now hears, and which clients to close.
//! Because both engines drive the same App, their observable behaviour
//! cannot drift apart.
//!
//! Naming follows quinn-proto: `handle_*` for inputs, `poll_*` for questions
//! the engine asks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use crate::cluster::{Ask, ClusterEvent, Entry};

/// The most bytes one [`Recipients::One`] send may hold (issue 11): a reply
/// must never be able to push its own recipient over `--sendq` by itself.
/// The default `--sendq` (256 KiB) is 16 times this; an operator may set it
/// lower, and then accepts that risk. Anything that grows with the room or
/// with `--max-line` (`/who`, an echoed unknown command) is capped well
/// below it.
pub const MAX_REPLY: usize = 16 * 1024;

/// An engine-assigned identifier for one connected client.
///
/// The poll engine uses its slab key; an id may be reused only after the App
/// has been told the previous holder left.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(pub usize);

/// A room, as engines know it: a number the App hands out. Every client
/// starts in [`RoomId::LOBBY`] and moves only when the App says
/// [`Output::Enter`]. An id may be reused once the App dropped the room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomId(pub u32);

impl RoomId {
    /// Where every client is when it joins.
    pub const LOBBY: RoomId = RoomId(0);
}

/// Who receives a [`Output::Send`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipients {
    /// Exactly one client (replies, errors, the welcome line).
    One(ClientId),
    /// Every client in a room (a rename, a topic).
    Room(RoomId),
    /// Every client in a room except one (chat lines, join/leave notices).
    RoomBut(RoomId, ClientId),
    /// Every joined client, in every room (the quiz's game, shutdown).
    All,
}

/// One instruction from the App to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Queue `bytes` for the recipients. The bytes are encoded once and shared:
    /// engines copy or reference them, never re-format per recipient.
    Send { to: Recipients, bytes: Arc<[u8]> },
    /// From now on `client` hears `room`'s broadcasts instead of its old
    /// room's. What it is owed from before still reaches it first.
    Enter { client: ClientId, room: RoomId },
    /// Close a client once what is already queued for it has been flushed.
    /// The App has already forgotten it; the engine must not report it again.
    Close { client: ClientId },
    /// `--cluster`: tell the other nodes what `sender` made this node say.
    /// If it cannot be queued, the engine answers
    /// [`ClusterEvent::NotSent`].
    Publish {
        sender: Option<ClientId>,
        entry: Entry,
    },
    /// `--cluster`: a room now exists here: hear the other nodes in it.
    Follow { room: String },
    /// `--cluster`: the room is gone here: stop hearing it.
    Unfollow { room: String },
    /// `--cluster`: ask Redis (names, `/who`); the answer comes back to
    /// [`App::handle_cluster`].
    Ask(Ask),
}

/// Where handlers put their outputs. Engines drain it after every call.
#[derive(Debug, Default)]
pub struct Outbox {
    items: Vec<Output>,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queue one already-terminated line (or several) for `to`.
    ///
    /// A [`Recipients::One`] send over [`MAX_REPLY`] is a bug (debug builds
    /// panic): whatever made it must be capped.
    pub fn send(&mut self, to: Recipients, text: impl Into<String>) {
        let text: String = text.into();
        if let Recipients::One(client) = to {
            debug_assert!(
                text.len() <= MAX_REPLY,
                "a {}-byte reply to {client:?} is over MAX_REPLY",
                text.len()
            );
        }
        self.send_shared(to, Arc::from(text.into_bytes()));
    }

    /// Queue bytes the App keeps a handle on (a history line): the same
    /// allocation is shared, not copied.
    pub fn send_shared(&mut self, to: Recipients, bytes: Arc<[u8]>) {
        self.items.push(Output::Send { to, bytes });
    }

    /// A line for one client; the `\n` is added here.
    pub fn to(&mut self, client: ClientId, line: &str) {
        self.send(Recipients::One(client), format!("{line}\n"));
    }

    /// A line for everyone in `room` but `client`; the `\n` is added here.
    pub fn room_but(&mut self, room: RoomId, client: ClientId, line: &str) {
        self.send(Recipients::RoomBut(room, client), format!("{line}\n"));
    }

    /// A line for everyone in `room`; the `\n` is added here.
    pub fn room(&mut self, room: RoomId, line: &str) {
        self.send(Recipients::Room(room), format!("{line}\n"));
    }

    /// A line for everyone; the `\n` is added here.
    pub fn all(&mut self, line: &str) {
        self.send(Recipients::All, format!("{line}\n"));
    }

    pub fn enter(&mut self, client: ClientId, room: RoomId) {
        self.items.push(Output::Enter { client, room });
    }

    pub fn close(&mut self, client: ClientId) {
        self.items.push(Output::Close { client });
    }

    pub fn publish(&mut self, sender: Option<ClientId>, entry: Entry) {
        self.items.push(Output::Publish { sender, entry });
    }

    pub fn follow(&mut self, room: &str) {
        self.items.push(Output::Follow {
            room: room.to_string(),
        });
    }

    pub fn unfollow(&mut self, room: &str) {
        self.items.push(Output::Unfollow {
            room: room.to_string(),
        });
    }

    pub fn ask(&mut self, ask: Ask) {
        self.items.push(Output::Ask(ask));
    }

    /// The queued outputs, oldest first, left in place.
    pub fn iter(&self) -> std::slice::Iter<'_, Output> {
        self.items.iter()
    }

    /// Take every queued output, oldest first.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Output> {
        self.items.drain(..)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The two clocks an engine reads for a line: `now` for deadlines (it
/// never jumps), `wall` for what people read (it can).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    pub now: Instant,
    pub wall: SystemTime,
}

impl Clock {
    /// The engine's `now` with the wall clock read beside it: for engines
    /// only, never the App.
    pub fn with_wall(now: Instant) -> Self {
        Self {
            now,
            wall: SystemTime::now(),
        }
    }
}

/// A sans-IO application driven by an engine.
///
/// Every handler receives `now`; none may block or read the clock. A line
/// also comes with `wall`, the wall-clock time it arrived, for what people
/// read (history stamps), never for deadlines. The engine
/// guarantees: `handle_joined` before any `handle_line` for a client, and
/// `handle_left` at most once, never for a client the App closed itself.
pub trait App {
    /// A client connected and was admitted by the engine's limits.
    fn handle_joined(&mut self, client: ClientId, peer: SocketAddr, now: Instant, out: &mut Outbox);

    /// One complete, sanitised, non-empty line from a client (no line end).
    fn handle_line(&mut self, client: ClientId, line: &str, now: Clock, out: &mut Outbox);

    /// A client disconnected (FIN, reset, limit, timeout). Not called for
    /// clients the App closed through [`Outbox::close`].
    fn handle_left(&mut self, client: ClientId, now: Instant, out: &mut Outbox);

    /// The deadline returned by [`App::poll_timeout`] has passed.
    fn handle_timeout(&mut self, _now: Instant, _out: &mut Outbox) {}

    /// `--cluster`: the link to the other nodes has news (poll engine only).
    fn handle_cluster(&mut self, _event: ClusterEvent, _now: Clock, _out: &mut Outbox) {}

    /// The next moment the App wants `handle_timeout`, if any.
    fn poll_timeout(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "over MAX_REPLY")]
    fn a_reply_over_max_reply_panics_in_debug_builds() {
        Outbox::new().send(Recipients::One(ClientId(1)), "x".repeat(MAX_REPLY + 1));
    }

    /// Only replies are capped here: a broadcast is bounded by its sender.
    #[test]
    fn a_reply_of_max_reply_and_a_bigger_broadcast_are_sent() {
        let mut out = Outbox::new();
        out.send(Recipients::One(ClientId(1)), "x".repeat(MAX_REPLY));
        out.send(Recipients::All, "x".repeat(MAX_REPLY + 1));
        assert_eq!(out.drain().count(), 2);
    }
}
