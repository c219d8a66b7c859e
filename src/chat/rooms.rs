//! The rooms: their names, who is in each, and when an empty one goes.
//!
//! A room is `#` plus 1-32 of `[A-Za-z0-9_-]`, unique ignoring case, and
//! exists from its first join. `#lobby` always exists: everyone lands there.
//! An emptied room keeps its history and topic for [`EMPTY_ROOM_KEPT`], so
//! a group that drops off together (a lost network, a closed laptop) finds
//! its conversation when it comes back; after that it is forgotten, so the
//! rooms nobody uses cost nothing.
//!
//! Each room also keeps its members' names in order, so `/who` in a room of
//! any size reads the first few instead of sorting everyone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use super::history::History;
use super::names::Name;
use crate::app::{ClientId, RoomId};

/// Characters after the `#`.
pub const MAX_ROOM_NAME: usize = 32;
/// Where everyone starts, and where `/part` leads.
pub const LOBBY: &str = "#lobby";
/// How long an empty room is kept (see the module comment).
pub const EMPTY_ROOM_KEPT: Duration = Duration::from_secs(10 * 60);
/// The most characters of a topic kept.
pub const MAX_TOPIC: usize = 200;

/// Why a room name was refused; `Display` is the text after `! `.
#[derive(Debug, PartialEq, Eq)]
pub enum RoomNameError {
    NoHash,
    Empty,
    TooLong,
    BadCharacter(char),
}

impl fmt::Display for RoomNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomNameError::NoHash => write!(f, "room names start with #, like #rust"),
            RoomNameError::Empty => write!(f, "a room name needs at least one character after #"),
            RoomNameError::TooLong => {
                write!(
                    f,
                    "room name too long: at most {MAX_ROOM_NAME} characters after #"
                )
            }
            RoomNameError::BadCharacter(c) => {
                write!(f, "room names use only A-Z a-z 0-9 _ - after # (not {c:?})")
            }
        }
    }
}

/// Check a room name as typed.
pub fn check_name(name: &str) -> Result<(), RoomNameError> {
    let rest = name.strip_prefix('#').ok_or(RoomNameError::NoHash)?;
    if rest.is_empty() {
        return Err(RoomNameError::Empty);
    }
    if let Some(bad) = rest
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(RoomNameError::BadCharacter(bad));
    }
    if rest.len() > MAX_ROOM_NAME {
        return Err(RoomNameError::TooLong);
    }
    Ok(())
}

/// Joins and leaves not announced one by one in a big room, waiting for
/// the next summary.
#[derive(Debug, Default)]
pub struct Unannounced {
    pub joined: u32,
    pub left: u32,
    /// `--cluster`: of these, the ones on this node, for the other nodes'
    /// summaries (a [`Kind::Summary`](crate::cluster::Kind) entry).
    pub ours_joined: u32,
    pub ours_left: u32,
    /// When the summary is due; `None` while there is nothing to tell.
    pub due: Option<Instant>,
}

#[derive(Debug)]
pub struct Room {
    /// As first typed (`#Rust`); lookups ignore case.
    pub name: String,
    pub topic: Option<String>,
    pub members: HashSet<ClientId>,
    /// The members' names, lower-cased (unique, as names are), in order:
    /// kept in step with `members` by `add`, `remove` and `rename`.
    pub names: BTreeSet<Name>,
    pub history: History,
    pub unannounced: Unannounced,
    /// Since when nobody has been here (never set for the lobby).
    pub empty_since: Option<Instant>,
}

impl Room {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            topic: None,
            members: HashSet::new(),
            names: BTreeSet::new(),
            history: History::default(),
            unannounced: Unannounced::default(),
            empty_since: None,
        }
    }
}

/// Past `--max-rooms`: a new room cannot be made.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyRooms;

/// Every room, by id and by name.
#[derive(Debug)]
pub struct Rooms {
    /// Slot `i` is `RoomId(i)`; slot 0 is the lobby.
    slots: Vec<Option<Room>>,
    /// Emptied slots, reused before the vector grows.
    free: Vec<u32>,
    /// Lower-cased name → id.
    by_name: HashMap<String, RoomId>,
    /// `--max-rooms`, the lobby included.
    max: usize,
    /// No room has a deadline before this (see `next_deadline`).
    deadline: Option<Instant>,
    /// The room `find_or_make` last dropped to make way, until taken.
    evicted: Option<String>,
}

impl Rooms {
    pub fn new(max: usize) -> Self {
        let mut by_name = HashMap::new();
        by_name.insert(LOBBY.to_string(), RoomId::LOBBY);
        Self {
            slots: vec![Some(Room::new(LOBBY))],
            free: Vec::new(),
            by_name,
            max: max.max(1),
            deadline: None,
            evicted: None,
        }
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn find(&self, name: &str) -> Option<RoomId> {
        self.by_name.get(&name.to_ascii_lowercase()).copied()
    }

    /// The room called `name` (already checked), made if it is new. At
    /// `--max-rooms`, the room empty the longest makes way (so nobody can
    /// block new rooms by making and leaving empty ones); if none is empty,
    /// there are too many.
    pub fn find_or_make(&mut self, name: &str) -> Result<RoomId, TooManyRooms> {
        if let Some(id) = self.find(name) {
            return Ok(id);
        }
        if self.len() >= self.max {
            let oldest_empty = self
                .iter()
                .filter_map(|(id, room)| Some((room.empty_since?, id)))
                .min();
            let Some((_, id)) = oldest_empty else {
                return Err(TooManyRooms);
            };
            self.evicted = self.forget(id);
        }
        let room = Some(Room::new(name));
        let id = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = room;
                RoomId(i)
            }
            None => {
                self.slots.push(room);
                RoomId((self.slots.len() - 1) as u32)
            }
        };
        self.by_name.insert(name.to_ascii_lowercase(), id);
        Ok(id)
    }

    /// The room the last `find_or_make` dropped to make way, if any.
    pub fn take_evicted(&mut self) -> Option<String> {
        self.evicted.take()
    }

    pub fn get(&self, id: RoomId) -> Option<&Room> {
        self.slots.get(id.0 as usize)?.as_ref()
    }

    pub fn get_mut(&mut self, id: RoomId) -> Option<&mut Room> {
        self.slots.get_mut(id.0 as usize)?.as_mut()
    }

    pub fn iter(&self) -> impl Iterator<Item = (RoomId, &Room)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, room)| Some((RoomId(i as u32), room.as_ref()?)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (RoomId, &mut Room)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, room)| Some((RoomId(i as u32), room.as_mut()?)))
    }

    /// `client`, called `name`, is now in `id`.
    pub fn add(&mut self, id: RoomId, client: ClientId, name: Name) {
        if let Some(room) = self.get_mut(id) {
            room.members.insert(client);
            room.names.insert(name.folded());
            room.empty_since = None;
        }
    }

    /// A member of `id` is now called `new`.
    pub fn rename(&mut self, id: RoomId, old: Name, new: Name) {
        if let Some(room) = self.get_mut(id) {
            room.names.remove(&old.folded());
            room.names.insert(new.folded());
        }
    }

    /// `client`, called `name`, left `id`; an emptied room (not the lobby)
    /// starts its wait.
    pub fn remove(&mut self, id: RoomId, client: ClientId, name: Name, now: Instant) {
        if let Some(room) = self.get_mut(id) {
            room.members.remove(&client);
            room.names.remove(&name.folded());
            if room.members.is_empty() && id != RoomId::LOBBY {
                room.empty_since = Some(now);
                room.members.shrink_to_fit();
                self.schedule(now + EMPTY_ROOM_KEPT);
            }
        }
    }

    /// Forget the rooms empty for [`EMPTY_ROOM_KEPT`]; returns their names.
    pub fn drop_long_empty(&mut self, now: Instant) -> Vec<String> {
        let mut dropped = Vec::new();
        for i in 1..self.slots.len() {
            let expired = self.slots[i].as_ref().is_some_and(|room| {
                room.empty_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= EMPTY_ROOM_KEPT)
            });
            if expired && let Some(name) = self.forget(RoomId(i as u32)) {
                dropped.push(name);
            }
        }
        self.recompute_deadline();
        dropped
    }

    /// Drop a room (never the lobby); returns its name.
    fn forget(&mut self, id: RoomId) -> Option<String> {
        if id == RoomId::LOBBY {
            return None;
        }
        let room = self.slots.get_mut(id.0 as usize)?.take()?;
        self.by_name.remove(&room.name.to_ascii_lowercase());
        self.free.push(id.0);
        Some(room.name)
    }

    /// The next moment an empty room goes, or a summary is due (perhaps
    /// earlier: a room refilled in time keeps its old deadline here until
    /// the next `recompute_deadline`, which costs one spurious wake-up).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Something is due at `at`.
    pub fn schedule(&mut self, at: Instant) {
        self.deadline = Some(self.deadline.map_or(at, |d| d.min(at)));
    }

    /// The earliest deadline of any room, found by looking at them all:
    /// only after deadlines ran, not on every call.
    pub fn recompute_deadline(&mut self) {
        self.deadline = self
            .iter()
            .flat_map(|(_, room)| {
                let gone = room.empty_since.map(|since| since + EMPTY_ROOM_KEPT);
                [gone, room.unannounced.due]
            })
            .flatten()
            .min();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_need_a_hash_and_1_to_32_safe_characters() {
        assert_eq!(check_name("#rust"), Ok(()));
        assert_eq!(check_name("#A_b-9"), Ok(()));
        assert_eq!(check_name(&format!("#{}", "x".repeat(32))), Ok(()));
        assert_eq!(check_name("rust"), Err(RoomNameError::NoHash));
        assert_eq!(check_name("#"), Err(RoomNameError::Empty));
        assert_eq!(
            check_name(&format!("#{}", "x".repeat(33))),
            Err(RoomNameError::TooLong)
        );
        assert_eq!(check_name("#a b"), Err(RoomNameError::BadCharacter(' ')));
        assert_eq!(check_name("#café"), Err(RoomNameError::BadCharacter('é')));
        assert!(
            RoomNameError::TooLong.to_string().contains("32"),
            "the error says why"
        );
    }

    fn name(s: &str) -> Name {
        Name::new(s).unwrap()
    }

    /// A room's names follow joins, renames and leaves, lower-cased and in
    /// order, and count what its members do.
    #[test]
    fn a_rooms_names_are_in_order_and_follow_renames() {
        let t0 = Instant::now();
        let mut rooms = Rooms::new(3);
        let rust = rooms.find_or_make("#rust").unwrap();
        rooms.add(rust, ClientId(1), name("Zed"));
        rooms.add(rust, ClientId(2), name("amy"));
        rooms.add(RoomId::LOBBY, ClientId(3), name("Bob"));
        rooms.rename(rust, name("Zed"), name("Carl"));
        rooms.add(rust, ClientId(4), name("BOB2"));
        let names = |rooms: &Rooms, id| -> Vec<String> {
            let room = rooms.get(id).unwrap();
            assert_eq!(room.names.len(), room.members.len());
            room.names.iter().map(|n| n.to_string()).collect()
        };
        assert_eq!(names(&rooms, rust), ["amy", "bob2", "carl"]);
        assert_eq!(names(&rooms, RoomId::LOBBY), ["bob"]);
        rooms.remove(rust, ClientId(2), name("amy"), t0);
        assert_eq!(names(&rooms, rust), ["bob2", "carl"]);
    }

    #[test]
    fn names_are_unique_ignoring_case_and_the_lobby_always_exists() {
        let mut rooms = Rooms::new(3);
        assert_eq!(rooms.find("#LOBBY"), Some(RoomId::LOBBY));
        let rust = rooms.find_or_make("#Rust").unwrap();
        assert_eq!(rooms.find_or_make("#rUST"), Ok(rust));
        assert_eq!(rooms.get(rust).unwrap().name, "#Rust");
        let t0 = Instant::now();
        let go = rooms.find_or_make("#go").unwrap();
        rooms.add(rust, ClientId(1), name("a"));
        rooms.add(go, ClientId(2), name("b"));
        assert_eq!(rooms.find_or_make("#zig"), Err(TooManyRooms));
        assert_eq!(rooms.len(), 3);
        // Once one is empty, a new room takes its place.
        rooms.remove(go, ClientId(2), name("b"), t0);
        assert_eq!(rooms.find_or_make("#zig"), Ok(go));
        assert_eq!(rooms.find("#go"), None);
    }

    #[test]
    fn an_empty_room_goes_after_the_wait_and_its_slot_is_reused() {
        let t0 = Instant::now();
        let mut rooms = Rooms::new(10);
        let a = rooms.find_or_make("#a").unwrap();
        rooms.add(a, ClientId(1), name("a"));
        rooms.remove(a, ClientId(1), name("a"), t0);
        rooms.remove(RoomId::LOBBY, ClientId(2), name("b"), t0);
        assert_eq!(rooms.next_deadline(), Some(t0 + EMPTY_ROOM_KEPT));
        assert!(rooms.drop_long_empty(t0 + EMPTY_ROOM_KEPT / 2).is_empty());
        // Someone came back in time: it stays.
        rooms.add(a, ClientId(3), name("c"));
        assert!(rooms.drop_long_empty(t0 + EMPTY_ROOM_KEPT).is_empty());
        rooms.remove(a, ClientId(3), name("c"), t0 + EMPTY_ROOM_KEPT);
        assert_eq!(
            rooms.drop_long_empty(t0 + 2 * EMPTY_ROOM_KEPT),
            vec!["#a".to_string()]
        );
        assert_eq!(rooms.find("#a"), None);
        assert_eq!(rooms.next_deadline(), None);
        assert_eq!(rooms.find_or_make("#b"), Ok(a), "the slot is reused");
        assert!(rooms.get(RoomId::LOBBY).is_some(), "the lobby never goes");
    }
}
