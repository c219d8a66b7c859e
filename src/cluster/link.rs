//! The link to Redis, sans-IO: bytes in, bytes out, `now` passed in. The
//! engine owns the two sockets and asks this machine what to do with them.
//!
//! Two connections, because a blocked `XREAD` holds its connection:
//! - **cmd** carries `XADD` (every local line, in order), `PING` (each
//!   second, to notice a dead link), the epoch check, and the `XREVRANGE`
//!   that finds where a newly followed room's stream ends;
//! - **reader** carries one `XREAD BLOCK 1000 … STREAMS <rooms> <ids>` at a
//!   time, re-issued after every reply, always from concrete last IDs, so
//!   nothing is skipped across a reconnect.
//!
//! Every entry carries its sender's room incarnation and sequence number
//! (`wire.rs`): this node drops its own echoes and any duplicate, and a
//! jump in a sequence becomes [`ClusterEvent::Lost`], never a silent loss.
//! Lines said while the link is down wait in a bounded queue and are sent
//! when it is back; past the bound the sender hears it
//! ([`ClusterEvent::NotSent`]) and the jump tells the other nodes.
//!
//! If anything goes wrong (a refused connection, EOF, a reply that is not
//! RESP, an error to a command that must succeed, no reply within
//! [`REPLY_WITHIN`]) the link is down: both connections are dropped and
//! tried again after a back-off of 100 ms doubling to 5 s, with jitter.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::names::{self, Script};
use super::resp::{self, Frame};
use super::wire::{self, Stamp};
use super::{Ask, ClusterEvent, Entry, MODERATION};

/// How long one `XREAD` waits for entries (ms, as Redis takes it).
pub const BLOCK_MS: &str = "1000";
/// About how many bytes one `XREAD` reply may bring: the entries it asks
/// for are this over the largest entry, shared among the rooms (at least
/// one each). Small replies keep the loop's parsing short.
pub const READ_BYTES: usize = 1024 * 1024;
/// A `PING` this often while the link is up.
pub const PING_EVERY: Duration = Duration::from_secs(1);
/// A request unanswered this long means the link is dead. For the reader
/// that is `XREAD`'s block plus 2 s.
pub const REPLY_WITHIN: Duration = Duration::from_secs(3);
/// The first retry after a failure, doubled after each further one.
pub const RETRY_FIRST: Duration = Duration::from_millis(100);
pub const RETRY_MAX: Duration = Duration::from_secs(5);
/// Lines kept for the other nodes while the link is down.
pub const QUEUE_ENTRIES: usize = 1000;
pub const QUEUE_BYTES: usize = 1024 * 1024;
/// Senders remembered per room for dedupe: one per node that restarted
/// or re-followed the room, so a few are plenty.
pub const SENDERS_PER_ROOM: usize = 256;
/// The most unparsed reply bytes held (a full `XREAD` reply is far less).
pub const MAX_PENDING_REPLY: usize = 16 * 1024 * 1024;
/// The key every node agrees on; a new value means Redis was emptied.
pub const EPOCH_KEY: &str = "pc:epoch";

/// Which of the two connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Cmd = 0,
    Reader = 1,
}

/// Who this node is and how to log in.
#[derive(Clone, Debug)]
pub struct LinkSettings {
    pub node: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    /// `--history`: how many of a room's last lines to fetch when this node
    /// starts following it.
    pub history: usize,
    /// The largest entry this node's nodes write (`--max-line` and a name):
    /// it sizes each `XREAD`.
    pub max_entry: usize,
    /// How long a name is held without a refresh (`--cluster-lease-ms`):
    /// a dead node's names are free within this and a third more.
    pub lease: Duration,
}

/// The default `--cluster-lease-ms`: names refreshed every 5 s, so a dead
/// node's names are free within 20 s.
pub const LEASE: Duration = Duration::from_secs(15);

/// The line this node's `publish` could not queue.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Down { retry_at: Instant },
    Connecting { since: Instant },
    Up,
}

/// What a reply on a connection answers, in the order they were sent.
#[derive(Debug)]
enum Request {
    Auth,
    Select,
    EpochSet,
    EpochGet,
    Ping,
    /// Where `room`'s stream ends (`XREVRANGE … COUNT 1`).
    Tail(String),
    /// The front of `queue`.
    Add,
    Read,
    /// A question from the core (names, `/who`).
    Ask(Ask),
    /// This node's leases extended.
    Refresh,
}

/// One connection's bytes and its requests awaiting replies.
#[derive(Debug, Default)]
struct Wire {
    connected: bool,
    /// Its handshake (AUTH, SELECT; the epoch on cmd) is answered.
    ready: bool,
    out: Vec<u8>,
    input: Vec<u8>,
    waiting: VecDeque<(Request, Instant)>,
    /// When the last reply came: a connection that answers steadily is
    /// alive, however long its queue of requests.
    last_reply: Option<Instant>,
}

impl Wire {
    /// When the front request is overdue: [`REPLY_WITHIN`] after it was
    /// sent or after the last reply, whichever is later.
    fn overdue_at(&self) -> Option<Instant> {
        let (_, sent) = self.waiting.front()?;
        Some((*sent).max(self.last_reply.unwrap_or(*sent)) + REPLY_WITHIN)
    }
}

impl Wire {
    fn send<A: AsRef<[u8]>>(&mut self, args: &[A], request: Request, now: Instant) {
        resp::encode(args, &mut self.out);
        self.waiting.push_back((request, now));
    }
}

/// A room this node has members in.
#[derive(Debug)]
struct Room {
    /// The last stream ID read; `None` until `XREVRANGE` says where the
    /// stream ends (then only newer entries are read).
    cursor: Option<String>,
    tail_asked: bool,
    /// This node's sender identity in the room: fresh each time the room
    /// is followed, so a sequence restarting at 1 is never a duplicate.
    incarnation: u64,
    seq: u64,
    /// The last sequence seen from each other sender.
    seen: HashMap<u64, u64>,
}

/// A local line on its way to Redis.
#[derive(Debug)]
struct Queued {
    command: Vec<u8>,
    sent: bool,
}

/// The link (see the module docs).
#[derive(Debug)]
pub struct Link {
    settings: LinkSettings,
    /// This process among the nodes, for its name leases (hex in Redis).
    id: u64,
    next_refresh: Option<Instant>,
    phase: Phase,
    backoff: Duration,
    /// Counts connection attempts: the engine opens new sockets when it
    /// changes and drops them while it is `None` ([`Link::session`]).
    session: u32,
    wires: [Wire; 2],
    rooms: BTreeMap<String, Room>,
    queue: VecDeque<Queued>,
    queue_bytes: usize,
    /// The `pc:epoch` value of the Redis we last saw.
    epoch: Option<Vec<u8>>,
    next_ping: Option<Instant>,
    ever_up: bool,
    told_unreachable: bool,
    rng: u64,
    events: VecDeque<ClusterEvent>,
    /// Entries from the broker that did not parse, so were skipped.
    skipped: u64,
    /// How many entries one `XREAD` asks for over all rooms: halved each
    /// time a reply was too big to take (and left so: a room of huge lines
    /// is read a few at a time).
    read_budget: usize,
}

impl Link {
    /// A link that will connect at the first `handle_timeout`. `seed` makes
    /// the incarnations and the jitter (any random number).
    pub fn new(settings: LinkSettings, seed: u64, now: Instant) -> Link {
        let mut rng = seed | 1;
        let id = xorshift(&mut rng);
        let mut link = Link {
            settings,
            id,
            next_refresh: None,
            phase: Phase::Down { retry_at: now },
            backoff: RETRY_FIRST,
            session: 0,
            wires: Default::default(),
            rooms: BTreeMap::new(),
            queue: VecDeque::new(),
            queue_bytes: 0,
            epoch: None,
            next_ping: None,
            ever_up: false,
            told_unreachable: false,
            rng,
            events: VecDeque::new(),
            skipped: 0,
            read_budget: 0,
        };
        link.read_budget = link.full_read_budget();
        // This node's inbox (private messages and operators' actions for
        // its members), and the bans every node keeps.
        link.follow(&format!("@{id:x}"), now);
        link.follow(MODERATION, now);
        link
    }

    pub fn node(&self) -> &str {
        &self.settings.node
    }

    pub fn is_up(&self) -> bool {
        self.phase == Phase::Up
    }

    /// Entries skipped because they did not parse.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Lines waiting for Redis.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// `Some(attempt)` while the engine should hold two sockets for this
    /// attempt; `None` while it should hold none.
    pub fn session(&self) -> Option<u32> {
        match self.phase {
            Phase::Down { .. } => None,
            _ => Some(self.session),
        }
    }

    /// The next event for the core, if any.
    pub fn poll_event(&mut self) -> Option<ClusterEvent> {
        self.events.pop_front()
    }

    /// Bytes waiting to be written on `conn`.
    pub fn transmit(&self, conn: Conn) -> &[u8] {
        &self.wires[conn as usize].out
    }

    /// The socket took `n` bytes of [`Link::transmit`].
    pub fn handle_written(&mut self, conn: Conn, n: usize) {
        self.wires[conn as usize].out.drain(..n);
    }

    /// Start tailing `room`'s stream (the rooms this node has members in).
    pub fn follow(&mut self, room: &str, now: Instant) {
        if self.rooms.contains_key(room) {
            return;
        }
        let incarnation = self.random();
        self.rooms.insert(
            room.to_string(),
            Room {
                cursor: None,
                tail_asked: false,
                incarnation,
                seq: 0,
                seen: HashMap::new(),
            },
        );
        if self.is_up() {
            self.ask_tails(now);
        }
    }

    /// Stop tailing `room` (it was dropped here).
    pub fn unfollow(&mut self, room: &str) {
        self.rooms.remove(room);
    }

    /// Send a local line to the other nodes: at once if the link is up,
    /// else when it is back, if the queue has room.
    pub fn publish(&mut self, entry: &Entry, now: Instant) -> Result<(), QueueFull> {
        self.follow(&entry.room, now);
        let Some(room) = self.rooms.get_mut(&entry.room) else {
            return Err(QueueFull);
        };
        // Taken even if the line is dropped below: the jump tells the
        // other nodes something was lost.
        room.seq += 1;
        let stamp = Stamp {
            node: self.settings.node.clone(),
            incarnation: room.incarnation,
            seq: room.seq,
        };
        let mut command = Vec::new();
        wire::encode_xadd(entry, &stamp, &mut command);
        if self.queue.len() >= QUEUE_ENTRIES || self.queue_bytes + command.len() > QUEUE_BYTES {
            return Err(QueueFull);
        }
        self.queue_bytes += command.len();
        let up = self.is_up();
        if up {
            let cmd = &mut self.wires[Conn::Cmd as usize];
            cmd.out.extend_from_slice(&command);
            cmd.waiting.push_back((Request::Add, now));
        }
        self.queue.push_back(Queued { command, sent: up });
        Ok(())
    }

    /// Ask Redis (see [`Ask`]); handed back if the link is not up.
    pub fn ask(&mut self, ask: Ask, now: Instant) -> Result<(), Ask> {
        if !self.is_up() {
            return Err(ask);
        }
        let inc = format!("{:x}", self.id);
        let lease = self.settings.lease.as_millis().to_string();
        let fold = |s: &str| s.to_ascii_lowercase();
        let (script, argv): (Script, Vec<String>) = match &ask {
            Ask::Claim {
                name,
                old,
                room,
                since,
                ..
            } => (
                Script::Claim,
                vec![
                    inc,
                    fold(name),
                    name.clone(),
                    fold(room),
                    lease,
                    old.as_deref().map(fold).unwrap_or_default(),
                    since.map(|s| s.to_string()).unwrap_or_default(),
                ],
            ),
            Ask::Release { name } => (Script::Release, vec![inc, fold(name)]),
            Ask::Who { room, .. } => (
                Script::Who,
                vec![fold(room), crate::chat::service::WHO_NAMES.to_string()],
            ),
            Ask::Rooms { .. } => (
                Script::Rooms,
                vec![crate::chat::service::ROOMS_LISTED.to_string()],
            ),
            Ask::Direct {
                from,
                to,
                kind,
                text,
                ..
            } => (
                Script::Direct,
                vec![
                    fold(to),
                    self.settings.node.clone(),
                    inc,
                    from.clone(),
                    text.clone(),
                    kind.as_str().to_string(),
                ],
            ),
        };
        let mut args = vec!["EVAL".to_string(), script.source(), "0".to_string()];
        args.extend(argv);
        self.wires[Conn::Cmd as usize].send(&args, Request::Ask(ask), now);
        Ok(())
    }

    /// When [`Link::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Down { retry_at } => Some(retry_at),
            Phase::Connecting { since } => Some(since + REPLY_WITHIN),
            Phase::Up => {
                let overdue = self.wires.iter().filter_map(Wire::overdue_at);
                overdue.chain(self.next_ping).chain(self.next_refresh).min()
            }
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        match self.phase {
            Phase::Down { retry_at } if now >= retry_at => {
                self.session = self.session.wrapping_add(1);
                self.wires = Default::default();
                self.phase = Phase::Connecting { since: now };
            }
            Phase::Connecting { since } if now >= since + REPLY_WITHIN => {
                self.fail(now, "no answer within 3 s");
            }
            Phase::Up => {
                let late = self
                    .wires
                    .iter()
                    .any(|w| w.overdue_at().is_some_and(|at| now >= at));
                if late {
                    self.fail(now, "no reply within 3 s");
                    return;
                }
                if self.next_ping.is_some_and(|at| now >= at) {
                    self.wires[Conn::Cmd as usize].send(&["PING"], Request::Ping, now);
                    self.next_ping = Some(now + PING_EVERY);
                }
                if self.next_refresh.is_some_and(|at| now >= at) {
                    let args = [
                        "EVAL".to_string(),
                        Script::Refresh.source(),
                        "0".into(),
                        format!("{:x}", self.id),
                        self.settings.lease.as_millis().to_string(),
                    ];
                    self.wires[Conn::Cmd as usize].send(&args, Request::Refresh, now);
                    self.next_refresh = Some(now + self.settings.lease / 3);
                }
            }
            _ => {}
        }
    }

    /// The engine's socket for `conn` finished connecting.
    pub fn handle_connected(&mut self, conn: Conn, now: Instant) {
        if !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        let settings = self.settings.clone();
        let epoch = format!("{:x}", self.random());
        let wire = &mut self.wires[conn as usize];
        wire.connected = true;
        match (&settings.user, &settings.password) {
            (Some(user), Some(pass)) => wire.send(&["AUTH", user, pass], Request::Auth, now),
            (None, Some(pass)) => wire.send(&["AUTH", pass], Request::Auth, now),
            _ => {}
        }
        if settings.db != 0 {
            wire.send(&["SELECT", &settings.db.to_string()], Request::Select, now);
        }
        if conn == Conn::Cmd {
            // SET NX then GET: whoever came first decides the epoch.
            wire.send(&["SET", EPOCH_KEY, &epoch, "NX"], Request::EpochSet, now);
            wire.send(&["GET", EPOCH_KEY], Request::EpochGet, now);
        } else if wire.waiting.is_empty() {
            wire.ready = true;
            self.maybe_up(now);
        }
    }

    /// The engine's socket for `conn` failed, or reached EOF.
    pub fn handle_closed(&mut self, conn: Conn, now: Instant, why: &str) {
        let which = if conn == Conn::Cmd {
            "command"
        } else {
            "reader"
        };
        self.fail(now, &format!("{which} connection: {why}"));
    }

    /// Bytes read from `conn`'s socket.
    pub fn handle_read(&mut self, conn: Conn, bytes: &[u8], now: Instant) {
        if self.session().is_none() {
            return;
        }
        let wire = &mut self.wires[conn as usize];
        wire.input.extend_from_slice(bytes);
        if wire.input.len() > MAX_PENDING_REPLY {
            // Ask for fewer entries at a time, or the same read fails again.
            self.read_budget = (self.read_budget / 2).max(1);
            self.fail(now, "a reply over 16 MiB");
            return;
        }
        loop {
            let wire = &mut self.wires[conn as usize];
            let (frame, used) = match resp::decode(&wire.input) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return,
                Err(e) => {
                    self.fail(now, &format!("not Redis: {e}"));
                    return;
                }
            };
            wire.input.drain(..used);
            wire.last_reply = Some(now);
            let Some((request, _)) = wire.waiting.pop_front() else {
                self.fail(now, "a reply nobody asked for");
                return;
            };
            self.handle_reply(conn, request, frame, now);
            if self.session().is_none() {
                return; // the reply failed the link
            }
        }
    }

    fn handle_reply(&mut self, conn: Conn, request: Request, frame: Frame, now: Instant) {
        if let (Request::Add, Frame::Error(e)) = (&request, &frame) {
            // Redis refused this one line (out of memory, a key of the
            // wrong type): say so, drop it, and go on with the rest.
            warn!("cluster: Redis refused a line: {e}");
        } else if let (Request::Ask(_) | Request::Refresh, Frame::Error(e)) = (&request, &frame) {
            // A script failed (a Redis without Lua, say): this question
            // has no answer, but the link is fine.
            warn!("cluster: Redis refused a name script: {e}");
            if let Request::Ask(ask) = request {
                self.events.push_back(ClusterEvent::NoAnswer(ask));
            }
            return;
        } else if let Frame::Error(e) = &frame {
            warn!("cluster: Redis answered {request:?} with an error: {e}");
            self.fail(now, "Redis refused a command");
            return;
        }
        match request {
            Request::Auth | Request::Select | Request::EpochSet | Request::Ping => {}
            Request::EpochGet => {
                let Some(epoch) = frame.as_bytes().map(<[u8]>::to_vec) else {
                    self.fail(now, "no epoch");
                    return;
                };
                if self.epoch.as_ref().is_some_and(|old| *old != epoch) {
                    info!(
                        "cluster: Redis was emptied (new epoch): reading every room from its start"
                    );
                    for room in self.rooms.values_mut() {
                        room.cursor = Some("0-0".into());
                    }
                    self.events.push_back(ClusterEvent::Reset);
                }
                self.epoch = Some(epoch);
            }
            Request::Tail(name) => {
                let id = frame
                    .as_array()
                    .and_then(|items| items.first())
                    .and_then(|item| item.as_array()?.first()?.as_bytes())
                    .and_then(valid_id);
                if let Some(room) = self.rooms.get_mut(&name)
                    && room.cursor.is_none()
                {
                    room.cursor = Some(id.unwrap_or("0-0").to_string());
                    let lines = history_of(&name, &frame, room.incarnation);
                    if !lines.is_empty() && self.settings.history > 0 {
                        self.events
                            .push_back(ClusterEvent::History { room: name, lines });
                    }
                }
            }
            Request::Add => {
                if let Some(done) = self.queue.pop_front() {
                    self.queue_bytes -= done.command.len();
                }
            }
            Request::Read => self.read_entries(&frame),
            Request::Ask(Ask::Release { .. }) => {}
            Request::Refresh => {
                let lost: Vec<String> = frame
                    .as_array()
                    .unwrap_or(&[])
                    .iter()
                    .filter_map(|n| Some(crate::sanitize::sanitize(n.as_bytes()?)))
                    .collect();
                if !lost.is_empty() {
                    self.events.push_back(ClusterEvent::NamesLost(lost));
                }
            }
            Request::Ask(Ask::Claim { client, name, .. }) => {
                let since = match frame {
                    Frame::Integer(since) => u64::try_from(since).unwrap_or(0),
                    _ => 0,
                };
                self.events.push_back(ClusterEvent::Claimed {
                    client,
                    name,
                    held: since > 0,
                    since,
                });
            }
            Request::Ask(Ask::Direct {
                client,
                text,
                kind,
                to: asked,
                ..
            }) => {
                let to = frame.as_bytes().map(crate::sanitize::sanitize);
                self.events.push_back(ClusterEvent::DirectSent {
                    client,
                    to,
                    asked,
                    kind,
                    text,
                });
            }
            // A list: its answer, or none if it does not parse.
            Request::Ask(ask @ (Ask::Rooms { .. } | Ask::Who { .. })) => {
                let answer = match ask {
                    Ask::Rooms { client } => {
                        names::parse_rooms(&frame).map(|(count, rooms)| ClusterEvent::Rooms {
                            client,
                            count,
                            rooms,
                        })
                    }
                    Ask::Who { client, .. } => {
                        names::parse_who(&frame).map(|(count, names)| ClusterEvent::Who {
                            client,
                            count,
                            names,
                        })
                    }
                    _ => None,
                };
                self.events
                    .push_back(answer.unwrap_or(ClusterEvent::NoAnswer(ask)));
            }
        }
        let wire = &mut self.wires[conn as usize];
        if !wire.ready && wire.waiting.is_empty() {
            wire.ready = true;
        }
        self.maybe_up(now);
        self.read_more(now);
    }

    /// Both connections are ready: the link is up.
    fn maybe_up(&mut self, now: Instant) {
        let ready = self.wires.iter().all(|w| w.connected && w.ready);
        if !ready || !matches!(self.phase, Phase::Connecting { .. }) {
            return;
        }
        info!("cluster: link up as node {}", self.settings.node);
        self.phase = Phase::Up;
        self.backoff = RETRY_FIRST;
        self.ever_up = true;
        self.next_ping = Some(now + PING_EVERY);
        self.next_refresh = Some(now + self.settings.lease / 3);
        self.events.push_back(ClusterEvent::Up);
        self.ask_tails(now);
        let cmd = &mut self.wires[Conn::Cmd as usize];
        for queued in self.queue.iter_mut().filter(|q| !q.sent) {
            cmd.out.extend_from_slice(&queued.command);
            cmd.waiting.push_back((Request::Add, now));
            queued.sent = true;
        }
    }

    /// Ask where the stream ends for rooms whose cursor is not known yet,
    /// with the room's last `--history` lines, so a room new here starts
    /// with the history it has on every node.
    fn ask_tails(&mut self, now: Instant) {
        let cmd = &mut self.wires[Conn::Cmd as usize];
        let count = self.settings.history.max(1).to_string();
        for (name, room) in self.rooms.iter_mut() {
            if room.cursor.is_none() && !room.tail_asked {
                let key = wire::stream_key(name);
                cmd.send(
                    &["XREVRANGE", &key, "+", "-", "COUNT", &count],
                    Request::Tail(name.clone()),
                    now,
                );
                room.tail_asked = true;
            }
        }
    }

    /// Keep one `XREAD` waiting on the reader whenever a room can be read.
    fn read_more(&mut self, now: Instant) {
        let reader = &self.wires[Conn::Reader as usize];
        if self.phase != Phase::Up || !reader.waiting.is_empty() {
            return;
        }
        // Tails asked are answered within a round trip: wait for them, so
        // the read covers every room (else the new ones wait for the next).
        let cmd = &self.wires[Conn::Cmd as usize];
        if cmd
            .waiting
            .iter()
            .any(|(r, _)| matches!(r, Request::Tail(_)))
        {
            return;
        }
        let known: Vec<(&String, &String)> = self
            .rooms
            .iter()
            .filter_map(|(name, room)| Some((name, room.cursor.as_ref()?)))
            .collect();
        if known.is_empty() {
            return;
        }
        let count = (self.read_budget / known.len()).max(1).to_string();
        let mut args: Vec<String> = ["XREAD", "BLOCK", BLOCK_MS, "COUNT", &count, "STREAMS"]
            .map(String::from)
            .to_vec();
        args.extend(known.iter().map(|(name, _)| wire::stream_key(name)));
        args.extend(known.iter().map(|(_, id)| id.to_string()));
        self.wires[Conn::Reader as usize].send(&args, Request::Read, now);
    }

    /// An `XREAD` reply: `[[key, [[id, fields], …]], …]`, or nil.
    fn read_entries(&mut self, frame: &Frame) {
        let Some(streams) = frame.as_array() else {
            if !frame.is_nil() {
                self.skipped += 1;
            }
            return;
        };
        for stream in streams {
            let Some([key, items]) = stream.as_array().map(|s| s.get(..2).unwrap_or(&[])) else {
                self.skipped += 1;
                continue;
            };
            let (Some(name), Some(items)) =
                (key.as_bytes().and_then(wire::room_of_key), items.as_array())
            else {
                self.skipped += 1;
                continue;
            };
            let Some(room) = self.rooms.get_mut(name) else {
                continue; // unfollowed while the read was out
            };
            if room.cursor.is_none() {
                continue; // followed again meanwhile: its tail decides
            }
            let own = format!("{:x}", self.id);
            for item in items {
                let id = item
                    .as_array()
                    .and_then(|parts| parts.first()?.as_bytes())
                    .and_then(valid_id);
                let Some(id) = id else {
                    self.skipped += 1;
                    continue;
                };
                room.cursor = Some(id.to_string());
                let Some((_, stamp, entry)) = wire::parse_entry(name, item) else {
                    self.skipped += 1;
                    debug!("cluster: skipped a malformed entry {id} in {name}");
                    continue;
                };
                if stamp.incarnation == room.incarnation {
                    continue; // our own echo: delivered here already
                }
                // What the scripts write ("server lost" leaves, with
                // incarnation 0, and the inbox's entries) is numbered by
                // counters in Redis that restart when it is emptied, and is
                // never sent twice: delivered as read, not deduped.
                if stamp.incarnation == 0 || name.starts_with('@') {
                    if stamp.incarnation == 0 && entry.to.as_deref() == Some(&own) {
                        // A lease of ours lapsed (we were away too long):
                        // our member is still here, so hold the name again.
                        self.events.push_back(ClusterEvent::LeaseLapsed(entry.from));
                    } else {
                        self.events.push_back(ClusterEvent::Remote(entry));
                    }
                    continue;
                }
                let last = room.seen.get(&stamp.incarnation).copied();
                match last {
                    Some(last) if stamp.seq <= last => continue, // a duplicate
                    Some(last) if stamp.seq > last + 1 => {
                        self.events.push_back(ClusterEvent::Lost {
                            room: name.to_string(),
                            node: stamp.node.clone(),
                            count: stamp.seq - last - 1,
                        });
                    }
                    _ => {}
                }
                if last.is_none() && room.seen.len() >= SENDERS_PER_ROOM {
                    // Forget the sender with the lowest sequence; a sender
                    // first seen is taken as it comes.
                    let quietest = room
                        .seen
                        .iter()
                        .min_by_key(|(_, seq)| **seq)
                        .map(|(k, _)| *k);
                    if let Some(quietest) = quietest {
                        room.seen.remove(&quietest);
                    }
                }
                room.seen.insert(stamp.incarnation, stamp.seq);
                self.events.push_back(ClusterEvent::Remote(entry));
            }
        }
    }

    /// The link is down: drop the connections, tell the core once, and try
    /// again after the back-off.
    fn fail(&mut self, now: Instant, why: &str) {
        if matches!(self.phase, Phase::Down { .. }) {
            return;
        }
        if self.phase == Phase::Up {
            warn!("cluster: link lost: {why}; retrying");
            self.events.push_back(ClusterEvent::Down);
        } else if !self.told_unreachable {
            warn!("cluster: Redis unreachable: {why}; serving this node's clients, retrying");
            self.told_unreachable = true;
            if !self.ever_up {
                self.events.push_back(ClusterEvent::Unreachable);
            }
        } else {
            debug!("cluster: retry failed: {why}");
        }
        // Questions in flight get no answer: say so, so nobody waits.
        let wires = std::mem::take(&mut self.wires);
        for wire in wires {
            for (request, _) in wire.waiting {
                if let Request::Ask(ask) = request {
                    self.events.push_back(ClusterEvent::NoAnswer(ask));
                }
            }
        }
        for queued in &mut self.queue {
            queued.sent = false;
        }
        for room in self.rooms.values_mut() {
            room.tail_asked = false;
        }
        self.next_ping = None;
        self.next_refresh = None;
        // Somewhere in the second half of the back-off, then double it.
        let half = self.backoff / 2;
        let jitter = Duration::from_nanos(self.random() % (half.as_nanos() as u64).max(1));
        self.phase = Phase::Down {
            retry_at: now + half + jitter,
        };
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
    }

    /// [`READ_BYTES`] worth of the largest entries.
    fn full_read_budget(&self) -> usize {
        (READ_BYTES / self.settings.max_entry.max(1)).clamp(1, 512)
    }

    fn random(&mut self) -> u64 {
        xorshift(&mut self.rng)
    }
}

/// xorshift64*: incarnations and jitter, no crate needed.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// The chat lines of an `XREVRANGE` reply (newest first), oldest first,
/// each with the millisecond its ID says it was added; not those this node
/// wrote as `own` (its members saw them).
fn history_of(room: &str, frame: &Frame, own: u64) -> Vec<(u64, String)> {
    let Some(items) = frame.as_array() else {
        return Vec::new();
    };
    let mut lines: Vec<(u64, String)> = items
        .iter()
        .filter_map(|item| {
            let (id, stamp, entry) = wire::parse_entry(room, item)?;
            let ms = valid_id(id)?.split_once('-')?.0.parse().ok()?;
            let chat = matches!(entry.kind, super::Kind::Say | super::Kind::Me);
            (chat && stamp.incarnation != own).then_some((ms, entry.text))
        })
        .collect();
    lines.reverse();
    lines
}

/// A stream ID as Redis writes them, `<ms>-<seq>`.
fn valid_id(id: &[u8]) -> Option<&str> {
    let s = std::str::from_utf8(id).ok()?;
    let (ms, seq) = s.split_once('-')?;
    let digits = |p: &str| !p.is_empty() && p.len() <= 20 && p.bytes().all(|b| b.is_ascii_digit());
    (digits(ms) && digits(seq)).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::Kind;

    fn bulk(s: &str) -> Frame {
        Frame::Bulk(Some(s.as_bytes().to_vec()))
    }

    fn array(items: Vec<Frame>) -> Frame {
        Frame::Array(Some(items))
    }

    /// A reply's bytes, as Redis would write them.
    fn bytes_of(frame: &Frame) -> Vec<u8> {
        match frame {
            Frame::Simple(s) => format!("+{s}\r\n").into_bytes(),
            Frame::Error(s) => format!("-{s}\r\n").into_bytes(),
            Frame::Integer(n) => format!(":{n}\r\n").into_bytes(),
            Frame::Bulk(None) => b"$-1\r\n".to_vec(),
            Frame::Bulk(Some(b)) => [format!("${}\r\n", b.len()).as_bytes(), b, b"\r\n"].concat(),
            Frame::Array(None) => b"*-1\r\n".to_vec(),
            Frame::Array(Some(items)) => {
                let mut out = format!("*{}\r\n", items.len()).into_bytes();
                for item in items {
                    out.extend(bytes_of(item));
                }
                out
            }
        }
    }

    /// The commands written on `conn` so far, as lists of strings.
    fn sent(link: &mut Link, conn: Conn) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        let mut buf = link.transmit(conn).to_vec();
        link.handle_written(conn, buf.len());
        while let Ok(Some((frame, used))) = resp::decode(&buf) {
            let args = frame.as_array().unwrap();
            out.push(
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_bytes().unwrap()).into_owned())
                    .collect(),
            );
            buf.drain(..used);
        }
        out
    }

    fn events(link: &mut Link) -> Vec<ClusterEvent> {
        std::iter::from_fn(|| link.poll_event()).collect()
    }

    fn settings() -> LinkSettings {
        LinkSettings {
            node: "a".into(),
            user: None,
            password: None,
            db: 0,
            history: 20,
            max_entry: 2048 + 64,
            lease: LEASE,
        }
    }

    fn line(text: &str) -> Entry {
        Entry {
            room: "#lobby".into(),
            kind: Kind::Say,
            from: "alice".into(),
            text: text.into(),
            to: None,
        }
    }

    /// Another node's entry in `#lobby`, as XREAD returns it.
    fn remote(id: &str, incarnation: u64, seq: u64, text: &str) -> Frame {
        let mut command = Vec::new();
        let stamp = Stamp {
            node: "b".into(),
            incarnation,
            seq,
        };
        wire::encode_xadd(&line(text), &stamp, &mut command);
        let (frame, _) = resp::decode(&command).unwrap().unwrap();
        let fields = frame.as_array().unwrap()[6..].to_vec();
        array(vec![bulk(id), array(fields)])
    }

    fn xread_reply(entries: Vec<Frame>) -> Vec<u8> {
        bytes_of(&array(vec![array(vec![
            bulk("pc:#lobby:log"),
            array(entries),
        ])]))
    }

    /// Where the lobby's key and cursor are in an XREAD's arguments: after
    /// `!mod`'s, and before the inbox's.
    const LOBBY_KEY: usize = 7;
    const LOBBY_CURSOR: usize = 10;

    /// A link following `#lobby`, up, with an empty stream, its XREAD out.
    fn up_link(t0: Instant) -> Link {
        let mut link = Link::new(settings(), 42, t0);
        link.follow("#lobby", t0);
        link.handle_timeout(t0);
        assert_eq!(link.session(), Some(1));
        link.handle_connected(Conn::Cmd, t0);
        link.handle_connected(Conn::Reader, t0);
        let handshake = sent(&mut link, Conn::Cmd);
        assert_eq!(handshake[0][..2], ["SET", EPOCH_KEY]);
        assert_eq!(handshake[1], ["GET", EPOCH_KEY]);
        link.handle_read(Conn::Cmd, b"+OK\r\n$2\r\ne1\r\n", t0);
        assert_eq!(events(&mut link), [ClusterEvent::Up]);
        // The tails of the bans' stream, the lobby and this node's inbox.
        let tail = sent(&mut link, Conn::Cmd);
        let keys: Vec<&str> = tail.iter().map(|t| t[1].as_str()).collect();
        assert_eq!(keys[..2], ["pc:!mod:log", "pc:#lobby:log"]);
        assert!(keys[2].starts_with("pc:@"), "{keys:?}");
        assert_eq!(
            tail[1],
            ["XREVRANGE", "pc:#lobby:log", "+", "-", "COUNT", "20"]
        );
        link.handle_read(Conn::Cmd, b"*0\r\n*0\r\n*0\r\n", t0);
        let read = sent(&mut link, Conn::Reader);
        // A megabyte of the largest entries, shared by the three streams.
        let count = (READ_BYTES / (2048 + 64) / 3).to_string();
        assert_eq!(
            read[0][..6],
            ["XREAD", "BLOCK", "1000", "COUNT", &count, "STREAMS"]
        );
        assert_eq!(read[0][LOBBY_KEY], "pc:#lobby:log");
        assert_eq!(read[0][9..], ["0-0", "0-0", "0-0"]);
        link
    }

    #[test]
    fn it_connects_checks_the_epoch_finds_the_tail_and_reads() {
        up_link(Instant::now());
    }

    #[test]
    fn a_line_is_added_to_its_rooms_stream_and_forgotten_once_redis_has_it() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.publish(&line("<alice> hi"), t0).unwrap();
        let add = sent(&mut link, Conn::Cmd);
        assert_eq!(
            add[0][..6],
            ["XADD", "pc:#lobby:log", "MAXLEN", "~", wire::MAXLEN, "*"]
        );
        assert_eq!(add[0].last().map(String::as_str), Some("<alice> hi"));
        assert_eq!(link.queued(), 1);
        link.handle_read(Conn::Cmd, b"$3\r\n1-1\r\n", t0);
        assert_eq!(link.queued(), 0);
    }

    #[test]
    fn echoes_and_duplicates_are_dropped_and_a_gap_is_told() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        // Our own line comes back too: take its incarnation from the XADD.
        link.publish(&line("mine"), t0).unwrap();
        let add = sent(&mut link, Conn::Cmd);
        let own: u64 = u64::from_str_radix(&add[0][11], 16).unwrap();
        let reply = xread_reply(vec![
            remote("1-1", 7, 1, "one"),
            remote("1-2", own, 1, "mine"),
            remote("1-3", 7, 2, "two"),
            remote("1-4", 7, 2, "two again"),
            remote("1-5", 7, 5, "five"),
        ]);
        link.handle_read(Conn::Reader, &reply, t0);
        let texts: Vec<String> = events(&mut link)
            .into_iter()
            .map(|e| match e {
                ClusterEvent::Remote(e) => e.text,
                ClusterEvent::Lost { room, node, count } => {
                    format!("lost {count} from {node} in {room}")
                }
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(texts, ["one", "two", "lost 2 from b in #lobby", "five"]);
        // The next read starts after the last entry seen.
        let read = sent(&mut link, Conn::Reader);
        assert_eq!(read[0][LOBBY_CURSOR], "1-5");
    }

    /// Found in review: what the scripts write is numbered by counters
    /// that restart with Redis, so it is delivered as read, not deduped;
    /// and a lapsed lease of our own is told apart from another node's.
    #[test]
    fn script_entries_are_not_deduped_and_our_own_lapsed_lease_is_told() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        let lease_leave = |id: &str, seq: &str, holder: &str| {
            let fields = [
                "v",
                "1",
                "n",
                "lease",
                "i",
                "0",
                "s",
                seq,
                "k",
                "leave",
                "f",
                "bob",
                "t",
                "* bob left (server lost)",
                "o",
                holder,
            ];
            array(vec![
                bulk(id),
                array(fields.iter().map(|f| bulk(f)).collect()),
            ])
        };
        let own = format!("{:x}", link.id);
        let reply = xread_reply(vec![
            lease_leave("1-1", "5", "99"),
            lease_leave("1-2", "1", "99"),
            lease_leave("1-3", "2", &own),
        ]);
        link.handle_read(Conn::Reader, &reply, t0);
        let got = events(&mut link);
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(matches!(&got[1], ClusterEvent::Remote(e) if e.text.contains("server lost")));
        assert_eq!(got[2], ClusterEvent::LeaseLapsed("bob".into()));
    }

    /// A reply too big to take fails the link, and the next read asks
    /// for half as many entries, so the same read cannot fail for ever.
    #[test]
    fn a_reply_too_big_halves_the_next_read() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        let before = link.read_budget;
        // Many entries of a megabyte each, more than the reply may hold.
        let part = resp::MAX_BULK / 2;
        let mut bulk_part = format!("${part}\r\n").into_bytes();
        bulk_part.extend(vec![b'x'; part]);
        bulk_part.extend(b"\r\n");
        link.handle_read(Conn::Reader, b"*40\r\n", t0);
        for _ in 0..(MAX_PENDING_REPLY / part + 1) {
            link.handle_read(Conn::Reader, &bulk_part, t0);
        }
        assert_eq!(events(&mut link), [ClusterEvent::Down]);
        assert_eq!(link.read_budget, before / 2);
    }

    /// A room's tail brings its last lines as history, but not this
    /// node's own (its members saw them).
    #[test]
    fn a_new_rooms_tail_brings_its_history_without_our_own_lines() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.follow("#lobby2", t0);
        let own = link.rooms["#lobby2"].incarnation;
        let tail = sent(&mut link, Conn::Cmd);
        assert_eq!(tail[0][1], "pc:#lobby2:log");
        let entry = |id: &str, inc: u64, text: &str| {
            let fields = [
                "v",
                "1",
                "n",
                "b",
                "i",
                &format!("{inc:x}"),
                "s",
                "1",
                "k",
                "say",
                "f",
                "x",
                "t",
                text,
            ]
            .map(bulk);
            array(vec![bulk(id), array(fields.to_vec())])
        };
        // Newest first, as XREVRANGE answers.
        let reply = bytes_of(&array(vec![
            entry("3-0", own, "mine"),
            entry("2-0", 7, "theirs"),
        ]));
        link.handle_read(Conn::Cmd, &reply, t0);
        let got = events(&mut link);
        assert_eq!(
            got,
            [ClusterEvent::History {
                room: "#lobby2".into(),
                lines: vec![(2, "theirs".into())]
            }]
        );
    }

    #[test]
    fn malformed_entries_are_skipped_and_counted_and_the_cursor_moves_on() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        let junk = array(vec![bulk("2-1"), array(vec![bulk("v"), bulk("9")])]);
        let reply = xread_reply(vec![junk, Frame::Integer(3), remote("2-3", 7, 1, "ok")]);
        link.handle_read(Conn::Reader, &reply, t0);
        assert_eq!(link.skipped(), 2);
        assert!(matches!(&events(&mut link)[..], [ClusterEvent::Remote(e)] if e.text == "ok"));
        assert_eq!(sent(&mut link, Conn::Reader)[0][LOBBY_CURSOR], "2-3");
    }

    #[test]
    fn a_lost_link_keeps_lines_and_sends_them_when_it_is_back() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.publish(&line("sent, not confirmed"), t0).unwrap();
        sent(&mut link, Conn::Cmd);
        link.handle_closed(Conn::Reader, t0, "EOF");
        assert_eq!(events(&mut link), [ClusterEvent::Down]);
        assert_eq!(link.session(), None);
        link.publish(&line("said while down"), t0).unwrap();
        let retry = link.poll_timeout().unwrap();
        assert!(
            retry >= t0 + RETRY_FIRST / 2 && retry <= t0 + RETRY_FIRST,
            "{:?}",
            retry - t0
        );
        link.handle_timeout(retry);
        assert_eq!(link.session(), Some(2));
        link.handle_connected(Conn::Cmd, retry);
        link.handle_connected(Conn::Reader, retry);
        sent(&mut link, Conn::Cmd);
        link.handle_read(Conn::Cmd, b"+OK\r\n$2\r\ne1\r\n", retry);
        assert_eq!(events(&mut link), [ClusterEvent::Up]);
        let resent: Vec<String> = sent(&mut link, Conn::Cmd)
            .iter()
            .map(|c| c.last().unwrap().clone())
            .collect();
        assert_eq!(resent, ["sent, not confirmed", "said while down"]);
        // The cursor is resumed, not asked again.
        assert_eq!(sent(&mut link, Conn::Reader)[0][LOBBY_CURSOR], "0-0");
    }

    #[test]
    fn redis_emptied_means_reading_every_room_from_the_start() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.handle_read(
            Conn::Reader,
            &xread_reply(vec![remote("5-1", 7, 1, "x")]),
            t0,
        );
        events(&mut link);
        link.handle_closed(Conn::Cmd, t0, "EOF");
        let retry = link.poll_timeout().unwrap();
        link.handle_timeout(retry);
        link.handle_connected(Conn::Cmd, retry);
        link.handle_connected(Conn::Reader, retry);
        sent(&mut link, Conn::Cmd);
        sent(&mut link, Conn::Reader);
        link.handle_read(Conn::Cmd, b"+OK\r\n$2\r\ne2\r\n", retry);
        assert_eq!(
            events(&mut link),
            [ClusterEvent::Down, ClusterEvent::Reset, ClusterEvent::Up]
        );
        assert_eq!(sent(&mut link, Conn::Reader)[0][LOBBY_CURSOR], "0-0");
    }

    #[test]
    fn unreachable_at_start_is_told_once_and_retries_back_off_to_5_s() {
        let t0 = Instant::now();
        let mut link = Link::new(settings(), 1, t0);
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            link.handle_timeout(now);
            link.handle_closed(Conn::Cmd, now, "connection refused");
            let next = link.poll_timeout().unwrap();
            waits.push(next - now);
            now = next;
        }
        assert_eq!(events(&mut link), [ClusterEvent::Unreachable]);
        assert!(
            waits[0] <= RETRY_FIRST && waits[1] > RETRY_FIRST / 2,
            "{waits:?}"
        );
        assert!(
            waits.iter().all(|w| *w <= RETRY_MAX) && waits[9] >= RETRY_MAX / 2,
            "{waits:?}"
        );
    }

    #[test]
    fn silence_past_the_reply_time_is_a_lost_link_and_pings_keep_it_checked() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.handle_timeout(t0 + PING_EVERY);
        assert_eq!(sent(&mut link, Conn::Cmd), [["PING"]]);
        assert_eq!(
            link.poll_timeout(),
            Some(t0 + 2 * PING_EVERY),
            "the next ping"
        );
        link.handle_timeout(t0 + REPLY_WITHIN);
        assert_eq!(events(&mut link), [ClusterEvent::Down]);
    }

    #[test]
    fn a_full_queue_refuses_and_still_takes_a_sequence_number() {
        let t0 = Instant::now();
        let mut link = Link::new(settings(), 3, t0);
        for i in 0..QUEUE_ENTRIES {
            link.publish(&line(&format!("line {i}")), t0).unwrap();
        }
        assert_eq!(link.publish(&line("one too many"), t0), Err(QueueFull));
        assert_eq!(link.queued(), QUEUE_ENTRIES);
        assert_eq!(link.rooms["#lobby"].seq, QUEUE_ENTRIES as u64 + 1);
    }

    #[test]
    fn garbage_or_an_error_from_redis_fails_the_link() {
        let t0 = Instant::now();
        let mut link = up_link(t0);
        link.handle_read(Conn::Reader, b"hello\r\n", t0);
        assert_eq!(events(&mut link), [ClusterEvent::Down]);
        let mut link = Link::new(
            LinkSettings {
                password: Some("x".into()),
                ..settings()
            },
            4,
            t0,
        );
        link.handle_timeout(t0);
        link.handle_connected(Conn::Cmd, t0);
        assert_eq!(sent(&mut link, Conn::Cmd)[0], ["AUTH", "x"]);
        link.handle_read(Conn::Cmd, b"-WRONGPASS invalid password\r\n", t0);
        assert_eq!(link.session(), None);
        assert_eq!(events(&mut link), [ClusterEvent::Unreachable]);
    }
}
