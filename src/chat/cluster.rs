//! The chat's side of `--cluster`: what this node tells the others, and
//! what its members hear about the link. Sans-IO like the rest of the
//! chat: lines go out as `Output::Publish`, the link's news comes in as
//! [`ClusterEvent`]s (the service renders other nodes' lines itself).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::app::{ClientId, Outbox};
use crate::cluster::{Ask, ClusterEvent, Entry, Kind};

/// The most names of members who left while the link was down that are
/// kept to give back when it is up (past it, the oldest are forgotten and
/// stay held while this node lives: a bounded leak, not an unbounded one).
pub const UNRELEASED: usize = 10_000;

/// What members are told when the link is down as they join.
pub const DOWN_ON_JOIN: &str =
    "* the cluster link is down: for now only this server's users hear you";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LinkState {
    /// Not up yet, and not known to be down.
    Starting,
    Up,
    Down,
}

/// This node in the cluster, as the chat sees it.
#[derive(Debug)]
pub struct Bridge {
    node: String,
    link: LinkState,
    /// Members told, since the link went down, that a line of theirs
    /// reached this node only: each is told once, not once per line.
    told_not_sent: HashSet<ClientId>,
    /// Renames waiting for Redis to say the name is free everywhere.
    pending_nick: HashMap<ClientId, String>,
    /// Names of members who left while the link was down, oldest first:
    /// given back as soon as it is up, or this node would go on
    /// refreshing them.
    unreleased: VecDeque<String>,
    /// Redis was emptied: the next claims say since when names are held.
    reset: bool,
}

impl Bridge {
    pub fn new(node: String) -> Bridge {
        Bridge {
            node,
            link: LinkState::Starting,
            told_not_sent: HashSet::new(),
            pending_nick: HashMap::new(),
            unreleased: VecDeque::new(),
            reset: false,
        }
    }

    /// A member left: give its name back now, or once the link is up.
    pub fn release(&mut self, name: &str, out: &mut Outbox) {
        if self.is_up() {
            out.ask(Ask::Release {
                name: name.to_string(),
            });
            return;
        }
        self.release_later(name.to_string());
    }

    /// Give `name` back once the link is up.
    pub fn release_later(&mut self, name: String) {
        if self.unreleased.len() >= UNRELEASED {
            self.unreleased.pop_front();
        }
        self.unreleased.push_back(name);
    }

    /// Whether Redis was emptied since the last time the link came up.
    pub fn take_reset(&mut self) -> bool {
        std::mem::take(&mut self.reset)
    }

    /// Whether some member's rename to `name` is waiting for Redis.
    pub fn is_pending(&self, name: &str) -> bool {
        self.pending_nick
            .values()
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    pub fn is_up(&self) -> bool {
        self.link == LinkState::Up
    }

    /// `client` asked for `name`; Redis will answer.
    pub fn expect_nick(&mut self, client: ClientId, name: &str) {
        self.pending_nick.insert(client, name.to_string());
    }

    /// Whether `client` was waiting to be renamed `name` (and no longer is).
    pub fn take_nick(&mut self, client: ClientId, name: &str) -> bool {
        if self.pending_nick.get(&client).is_some_and(|n| n == name) {
            self.pending_nick.remove(&client);
            return true;
        }
        false
    }

    /// Default names carry the node, so they are unique across nodes
    /// without asking Redis.
    pub fn default_name(&self, n: u64) -> String {
        format!("user{n}-{}", self.node)
    }

    /// Tell the other nodes what `from` made this node show in `room`.
    pub fn publish(
        &self,
        out: &mut Outbox,
        sender: Option<ClientId>,
        room: &str,
        kind: Kind,
        from: &str,
        line: &str,
    ) {
        out.publish(
            sender,
            Entry {
                room: room.to_ascii_lowercase(),
                kind,
                from: from.to_string(),
                text: line.trim_end_matches('\n').to_string(),
                to: None,
            },
        );
    }

    /// A line for a member joining now, if the link is down.
    pub fn on_join(&self) -> Option<&'static str> {
        (self.link == LinkState::Down).then_some(DOWN_ON_JOIN)
    }

    /// The link's own news (not other nodes' lines): who hears what.
    /// Returns true when the link (re)connected, so the caller re-follows
    /// its rooms.
    pub fn link_news(&mut self, event: &ClusterEvent, out: &mut Outbox) -> bool {
        match event {
            ClusterEvent::Unreachable => {
                self.link = LinkState::Down;
                out.all(DOWN_ON_JOIN);
            }
            ClusterEvent::Down => {
                self.link = LinkState::Down;
                out.all("* cluster link lost");
            }
            ClusterEvent::Up => {
                if self.link == LinkState::Down {
                    out.all("* cluster link restored");
                }
                self.link = LinkState::Up;
                self.told_not_sent.clear();
                for name in std::mem::take(&mut self.unreleased) {
                    out.ask(Ask::Release { name });
                }
                return true;
            }
            ClusterEvent::Reset => {
                self.reset = true;
                out.all("* the cluster's shared state was reset (Redis restarted empty)");
            }
            // (Told once per member while the link is down.)
            ClusterEvent::NotSent { client } if self.told_not_sent.insert(*client) => {
                out.to(
                    *client,
                    "! the cluster link is down or behind and its queue is full: your lines reach only this server until it catches up",
                );
            }
            // The service answers these itself.
            _ => {}
        }
        false
    }

    /// A member left: forget it was told.
    pub fn forget(&mut self, client: ClientId) {
        self.told_not_sent.remove(&client);
        self.pending_nick.remove(&client);
    }
}
