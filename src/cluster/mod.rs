//! Rooms across processes (`--cluster redis://…`): several pollchat nodes
//! serve the same rooms through one Redis (docs/cluster.md).
//!
//! - this file: what the sans-IO core and the link say to each other
//!   through the engine: an [`Entry`] goes out, [`ClusterEvent`]s come in;
//! - `resp.rs`: the Redis wire format, encoded and decoded without I/O;
//! - `wire.rs`: how an [`Entry`] is written into and read from a stream;
//! - `names.rs`: names as leases Redis keeps (Lua scripts), for unique
//!   names and `/who` across nodes;
//! - `link.rs`: the link to Redis as a sans-IO state machine (connect,
//!   retry, publish, tail the rooms' streams, drop echoes and duplicates,
//!   notice gaps);
//! - `url.rs`: the `--cluster` address.
//!
//! The poll engine drives the link beside its clients
//! (`engine::poll_cluster`); the threaded engine refuses `--cluster`.

#[cfg(feature = "cluster")]
pub mod link;
#[cfg(feature = "cluster")]
pub mod names;
#[cfg(feature = "cluster")]
pub mod resp;
#[cfg(feature = "cluster")]
pub mod url;
#[cfg(feature = "cluster")]
pub mod wire;

use crate::app::ClientId;

/// The stream of bans and lifted bans, which every node follows.
pub const MODERATION: &str = "!mod";

/// A random number, different in every process: the std hasher's keys are
/// random (seeds the link's incarnations, and default node names).
#[cfg(feature = "cluster")]
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// What an entry says, so a node can render it and count joins and leaves
/// of big rooms (`--quiet-above`) like its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Say,
    Me,
    Join,
    Leave,
    Nick,
    /// A private message, in the target node's inbox stream.
    Msg,
    /// A line for the room as it is (an operator's action).
    Notice,
    /// The room's new topic (`t`), set by `f`.
    Topic,
    /// For the addressee's node: `f` kicks `o` (`t`: the reason, if any).
    Kick,
    /// For the addressee's node: `f` mutes `o` for `t` minutes (0 lifts).
    Mute,
    /// For the addressee's node: `f` bans `o`'s address for `t` minutes;
    /// in the `!mod` stream: the address `t` is banned (`IP MINUTES`).
    Ban,
    /// In the `!mod` stream: the ban on address `t` is lifted.
    Unban,
    /// A big room's joins and leaves on the sending node since its last
    /// summary, `t` = `JOINED LEFT`: counted into each node's own summary.
    /// (One entry a room per node every 30 s, where a join each would be
    /// read by every node: a million joins, fifty million reads.)
    Summary,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Say => "say",
            Kind::Me => "me",
            Kind::Join => "join",
            Kind::Leave => "leave",
            Kind::Nick => "nick",
            Kind::Msg => "msg",
            Kind::Notice => "notice",
            Kind::Topic => "topic",
            Kind::Kick => "kick",
            Kind::Mute => "mute",
            Kind::Ban => "ban",
            Kind::Unban => "unban",
            Kind::Summary => "summary",
        }
    }

    pub fn parse(s: &[u8]) -> Option<Kind> {
        Some(match s {
            b"say" => Kind::Say,
            b"me" => Kind::Me,
            b"join" => Kind::Join,
            b"leave" => Kind::Leave,
            b"nick" => Kind::Nick,
            b"msg" => Kind::Msg,
            b"notice" => Kind::Notice,
            b"topic" => Kind::Topic,
            b"kick" => Kind::Kick,
            b"mute" => Kind::Mute,
            b"ban" => Kind::Ban,
            b"unban" => Kind::Unban,
            b"summary" => Kind::Summary,
            _ => return None,
        })
    }
}

/// One thing said in a room, as it crosses to the other nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The room's name folded to lower case (`#lobby`): the stream's key.
    pub room: String,
    pub kind: Kind,
    /// Who said it, by the name they had.
    pub from: String,
    /// The line exactly as this node's own members saw it, without `\n`
    /// (a private message: only its text).
    pub text: String,
    /// A private message's addressee, by name.
    pub to: Option<String>,
}

/// A question the core asks of Redis through the link; the answer comes
/// back as a [`ClusterEvent`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ask {
    /// Hold `name` for `client`, as a member of `room` (both as shown;
    /// folded for the keys). With `old`, it is a rename, done atomically.
    /// Holding a name we hold already moves it to `room`.
    Claim {
        client: ClientId,
        name: String,
        old: Option<String>,
        room: String,
        /// When the member first took the name (Redis's millisecond, from
        /// an earlier [`ClusterEvent::Claimed`]): against a holder who took
        /// it later, the earlier one keeps it.
        since: Option<u64>,
    },
    /// Let a name go (its holder left).
    Release { name: String },
    /// Who is in `room`, on every node.
    Who { client: ClientId, room: String },
    /// The rooms with members on any node, biggest first.
    Rooms { client: ClientId },
    /// An entry for `to`, wherever they are connected, in their node's
    /// inbox: a private message ([`Kind::Msg`]) or an operator's action on
    /// them ([`Kind::Kick`], [`Kind::Mute`], [`Kind::Ban`]).
    Direct {
        client: ClientId,
        from: String,
        to: String,
        kind: Kind,
        text: String,
    },
}

/// What the link tells the core, through the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterEvent {
    /// Another node's entry, in its sender's order, each once.
    Remote(Entry),
    /// `count` entries from `node` in `room` were never seen here.
    Lost {
        room: String,
        node: String,
        count: u64,
    },
    /// The link could not be made at start-up (said once).
    Unreachable,
    /// The link was up and is lost: local chat goes on.
    Down,
    /// The link is up (again).
    Up,
    /// Redis came back empty: what it held (history) is gone.
    Reset,
    /// `client`'s line could not be queued for the other nodes (the link
    /// is down and its queue full): it reached this node only.
    NotSent { client: ClientId },
    /// The answer to [`Ask::Claim`]: `held` false means another node's
    /// user holds the name.
    Claimed {
        client: ClientId,
        name: String,
        held: bool,
        /// When the holder first took it (Redis's millisecond).
        since: u64,
    },
    /// Names this node's members held and lost to an earlier holder on
    /// another node (folded).
    NamesLost(Vec<String>),
    /// The answer to [`Ask::Who`]: how many, and the first names sorted.
    Who {
        client: ClientId,
        count: u64,
        names: Vec<String>,
    },
    /// The answer to [`Ask::Direct`]: `to` is the name as its holder has
    /// it, `None` if nobody holds it.
    DirectSent {
        client: ClientId,
        to: Option<String>,
        asked: String,
        kind: Kind,
        text: String,
    },
    /// The answer to [`Ask::Rooms`]: how many rooms, and the biggest with
    /// their members on every node.
    Rooms {
        client: ClientId,
        count: u64,
        rooms: Vec<(String, u64)>,
    },
    /// A room this node just started following already had these chat
    /// lines (oldest first, with the Unix millisecond each was added).
    History {
        room: String,
        lines: Vec<(u64, String)>,
    },
    /// The link went down before it could answer (or was down).
    NoAnswer(Ask),
    /// A name this node holds lapsed in Redis (the node was away longer
    /// than the lease) while its member is still here: hold it again.
    LeaseLapsed(String),
    /// This node is shutting down with the link up: say goodbye for its
    /// members on the other nodes, and give their names back.
    Stopping,
}
