//! The chat room: who is here, and who hears what.
//!
//! Every handler takes the event and an [`Outbox`]; the room never writes to
//! a socket. Chat lines go to everyone but the sender as `<name> text`;
//! notices start with `* `; errors go only to the one client and start with
//! `! `. Nothing a command produces is broadcast unless the command is meant
//! to be (a `/nick` change, a `/me` action, a departure).
//!
//! Other Apps reuse the room for their chat: the quiz embeds one, asks it
//! for names ([`ChatRoom::name`]) and hands it every command it does not
//! handle itself ([`ChatRoom::handle_command`]).

use std::cmp::Ordering;
use std::net::SocketAddr;
use std::time::Instant;

use super::command::{self, Command};
use super::names::Roster;
use crate::app::{App, ClientId, Outbox};

/// Names a `/who` reply lists before `... and N more`: names are at most
/// 24 bytes, so the reply stays under 1.5 KiB however big the room is.
pub const WHO_NAMES: usize = 50;

/// Characters of an unknown command echoed back in the error: the line
/// may be `--max-line` long, and the sender needs only enough to see
/// which typo it was.
pub const ECHOED_COMMAND_CHARS: usize = 32;

/// What `/help` prints, one line each. Public so an App that embeds the
/// room can print these and add its own.
pub const HELP: &[&str] = &[
    "* Commands:",
    "*   /nick NAME     change your name (1-24 of A-Z a-z 0-9 _ -)",
    "*   /who           list who is here",
    "*   /me ACTION     say what you are doing",
    "*   /quit [MSG]    leave, with an optional parting message",
    "*   /help          this list",
    "* Anything else is sent to everyone else; start a line with // to send a literal /.",
];

/// The chat room App.
#[derive(Debug)]
pub struct ChatRoom {
    /// Everyone in the room and their current name (unique ignoring case).
    members: Roster,
    /// The number for the next default `user<N>` name.
    next_default: u64,
    /// What the welcome line calls this place ("this chatroom", "the quiz"),
    /// so an App embedding the room greets people as itself.
    place: &'static str,
}

impl Default for ChatRoom {
    fn default() -> Self {
        Self::new()
    }
}

impl ChatRoom {
    pub fn new() -> Self {
        Self::welcoming_to("this chatroom")
    }

    /// A room whose welcome line reads `Welcome to {place}!`.
    pub fn welcoming_to(place: &'static str) -> Self {
        Self {
            members: Roster::default(),
            next_default: 0,
            place,
        }
    }

    /// The current name of a member.
    pub fn name(&self, client: ClientId) -> Option<&str> {
        self.members.get(client).map(|name| name.as_str())
    }

    /// Everyone here, in no particular order.
    pub fn members(&self) -> impl Iterator<Item = ClientId> + '_ {
        self.members.iter().map(|(id, _)| id)
    }

    /// How many members are here.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Carry out one parsed line from a member: what `handle_line` does
    /// after parsing. Lines from non-members are ignored.
    pub fn handle_command(&mut self, client: ClientId, command: Command<'_>, out: &mut Outbox) {
        let Some(&name) = self.members.get(client) else {
            return;
        };
        match command {
            Command::Say(text) => out.all_but(client, &format!("<{name}> {text}")),
            Command::Me(action) => out.all_but(client, &format!("* {name} {action}")),
            Command::Nick(new) => self.nick(client, new, out),
            Command::Who => self.who(client, out),
            Command::Quit(parting) => {
                out.to(client, "* Bye!");
                self.remove(client, parting, out);
                out.close(client);
            }
            Command::Help => {
                for line in HELP {
                    out.to(client, line);
                }
            }
            Command::Usage(usage) => out.to(client, &format!("! {usage}")),
            Command::Unknown(cmd) => {
                let (shown, cut) = match cmd.char_indices().nth(ECHOED_COMMAND_CHARS) {
                    Some((end, _)) => (&cmd[..end], "..."),
                    None => (cmd, ""),
                };
                out.to(
                    client,
                    &format!("! unknown command /{shown}{cut} (try /help)"),
                );
            }
        }
    }

    /// The first free `user<N>`.
    fn default_name(&mut self) -> String {
        loop {
            self.next_default += 1;
            let name = format!("user{}", self.next_default);
            if self.members.holder(&name).is_none() {
                return name;
            }
        }
    }

    fn nick(&mut self, client: ClientId, new: &str, out: &mut Outbox) {
        match self.members.set(client, new) {
            Ok(Some(old)) if old.as_str() != new => {
                out.all(&format!("* {old} is now known as {new}"));
            }
            Ok(_) => {}
            Err(err) => out.to(client, &format!("! {err}")),
        }
    }

    /// The count, then the first [`WHO_NAMES`] names ignoring case.
    fn who(&self, client: ClientId, out: &mut Outbox) {
        let mut names: Vec<&str> = self.members.iter().map(|(_, n)| n.as_str()).collect();
        let count = names.len();
        let by_folded = |a: &&str, b: &&str| cmp_ignoring_case(a, b);
        // Only the shown names need sorting: pick them out first, so a
        // `/who` in a big room costs one pass, not a full sort.
        if count > WHO_NAMES {
            names.select_nth_unstable_by(WHO_NAMES, by_folded);
            names.truncate(WHO_NAMES);
        }
        names.sort_unstable_by(by_folded);
        let noun = if count == 1 { "user" } else { "users" };
        let mut line = format!("* {count} {noun} here: {}", names.join(", "));
        let more = count - names.len();
        if more > 0 {
            line.push_str(&format!(", ... and {more} more"));
        }
        out.to(client, &line);
    }

    /// Forget a member and tell the others; `None` if it was not here.
    fn remove(&mut self, client: ClientId, parting: Option<&str>, out: &mut Outbox) -> Option<()> {
        let name = self.members.remove(client)?;
        match parting {
            Some(msg) => out.all_but(client, &format!("* {name} left ({msg})")),
            None => out.all_but(client, &format!("* {name} left")),
        }
        Some(())
    }
}

/// The order of the lower-cased names, compared byte by byte so a sort
/// allocates nothing per comparison.
fn cmp_ignoring_case(a: &str, b: &str) -> Ordering {
    let fold = |c: u8| c.to_ascii_lowercase();
    a.bytes().map(fold).cmp(b.bytes().map(fold))
}

impl App for ChatRoom {
    fn handle_joined(
        &mut self,
        client: ClientId,
        _peer: SocketAddr,
        _now: Instant,
        out: &mut Outbox,
    ) {
        let name = self.default_name();
        // Valid and free by construction; a failure would only mean the
        // client already had a name, which engines never cause.
        let _ = self.members.set(client, &name);
        out.to(
            client,
            &format!(
                "* Welcome to {}! You are {name}. Type /help for commands.",
                self.place
            ),
        );
        out.all_but(client, &format!("* {name} joined"));
    }

    fn handle_line(&mut self, client: ClientId, line: &str, _now: Instant, out: &mut Outbox) {
        self.handle_command(client, command::parse(line), out);
    }

    fn handle_left(&mut self, client: ClientId, _now: Instant, out: &mut Outbox) {
        self.remove(client, None, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::{Output, Recipients};

    /// Drive the room like an engine would and record who got which lines.
    struct Harness {
        room: ChatRoom,
        out: Outbox,
        now: Instant,
    }

    impl Harness {
        fn new() -> Self {
            Self {
                room: ChatRoom::new(),
                out: Outbox::new(),
                now: Instant::now(),
            }
        }

        fn join(&mut self, id: usize) -> Vec<(Recipients, String)> {
            let peer = "127.0.0.1:5000".parse().unwrap();
            self.room
                .handle_joined(ClientId(id), peer, self.now, &mut self.out);
            self.take()
        }

        fn say(&mut self, id: usize, line: &str) -> Vec<(Recipients, String)> {
            self.room
                .handle_line(ClientId(id), line, self.now, &mut self.out);
            self.take()
        }

        fn leave(&mut self, id: usize) -> Vec<(Recipients, String)> {
            self.room.handle_left(ClientId(id), self.now, &mut self.out);
            self.take()
        }

        fn take(&mut self) -> Vec<(Recipients, String)> {
            self.out
                .drain()
                .map(|o| match o {
                    Output::Send { to, bytes } => (to, String::from_utf8(bytes.to_vec()).unwrap()),
                    Output::Close { client } => (Recipients::One(client), "<close>".into()),
                })
                .collect()
        }
    }

    fn one(id: usize, s: &str) -> (Recipients, String) {
        (Recipients::One(ClientId(id)), s.to_string())
    }

    #[test]
    fn join_welcomes_with_default_name_and_tells_others() {
        let mut h = Harness::new();
        assert_eq!(
            h.join(1),
            vec![
                one(
                    1,
                    "* Welcome to this chatroom! You are user1. Type /help for commands.\n"
                ),
                (Recipients::AllBut(ClientId(1)), "* user1 joined\n".into()),
            ]
        );
    }

    #[test]
    fn chat_goes_to_everyone_else_with_name_prefix() {
        let mut h = Harness::new();
        h.join(1);
        h.join(2);
        assert_eq!(
            h.say(1, "hi there"),
            vec![(Recipients::AllBut(ClientId(1)), "<user1> hi there\n".into())]
        );
        assert_eq!(
            h.say(2, "//slash"),
            vec![(Recipients::AllBut(ClientId(2)), "<user2> /slash\n".into())]
        );
    }

    #[test]
    fn nick_rename_validation_and_case_insensitive_uniqueness() {
        let mut h = Harness::new();
        h.join(1);
        h.join(2);
        assert_eq!(
            h.say(1, "/nick Alice"),
            vec![(Recipients::All, "* user1 is now known as Alice\n".into())]
        );
        let taken = h.say(2, "/nick alice");
        assert_eq!(taken, vec![one(2, "! name taken: alice\n")]);
        let invalid = h.say(2, "/nick bad name!");
        assert!(invalid[0].1.starts_with("! invalid name"), "{invalid:?}");
        assert_eq!(
            h.say(1, "/nick ALICE"),
            vec![(Recipients::All, "* Alice is now known as ALICE\n".into())]
        );
        assert_eq!(
            h.say(2, "/nick Alice"),
            vec![one(2, "! name taken: Alice\n")]
        );
        assert_eq!(
            h.say(2, "<msg>"),
            vec![(Recipients::AllBut(ClientId(2)), "<user2> <msg>\n".into())]
        );
    }

    #[test]
    fn default_name_skips_names_claimed_by_nick() {
        let mut h = Harness::new();
        h.join(1);
        h.say(1, "/nick user2");
        let welcome = h.join(2);
        assert!(welcome[0].1.contains("You are user3."), "{welcome:?}");
    }

    #[test]
    fn who_lists_names_and_count_only_to_asker() {
        let mut h = Harness::new();
        h.join(1);
        h.join(2);
        h.say(2, "/nick bob");
        assert_eq!(
            h.say(1, "/who"),
            vec![one(1, "* 2 users here: bob, user1\n")]
        );
    }

    /// Issue 11: the reply to `/who` in a full server is one bounded line.
    #[test]
    fn who_in_a_room_of_10000_names_the_first_ones_and_counts_the_rest() {
        let mut h = Harness::new();
        for id in 1..=10_000 {
            h.join(id);
        }
        let reply = h.say(1, "/who");
        assert_eq!(reply.len(), 1, "one reply");
        let (to, line) = &reply[0];
        assert_eq!(*to, Recipients::One(ClientId(1)));
        assert!(line.len() < 1536, "{} bytes", line.len());
        assert!(
            line.starts_with("* 10000 users here: user1, user10, user100, user1000, user10000, "),
            "sorted as before: {line}"
        );
        let more = format!(", ... and {} more\n", 10_000 - WHO_NAMES);
        assert!(line.ends_with(&more), "{line}");
        assert_eq!(line.matches(", ").count(), WHO_NAMES, "{line}");
    }

    #[test]
    fn who_lists_everyone_up_to_the_cap_then_says_how_many_more() {
        let mut h = Harness::new();
        for id in 1..=WHO_NAMES {
            h.join(id);
        }
        let all = h.say(1, "/who");
        assert!(!all[0].1.contains("more"), "{all:?}");
        assert_eq!(all[0].1.matches(", ").count(), WHO_NAMES - 1);
        // The longest names: the cap holds the line under 1.5 KiB.
        h.join(WHO_NAMES + 1);
        for id in 1..=WHO_NAMES + 1 {
            h.say(id, &format!("/nick {id:0>24}"));
        }
        let capped = h.say(1, "/who");
        let line = &capped[0].1;
        assert!(line.ends_with(", ... and 1 more\n"), "{capped:?}");
        assert!(line.len() < 1536, "{} bytes", line.len());
    }

    /// A `--max-line` long typo is not bounced back whole.
    #[test]
    fn an_unknown_command_is_echoed_cut_short() {
        let mut h = Harness::new();
        h.join(1);
        let long = "é".repeat(50_000);
        let shown = "é".repeat(ECHOED_COMMAND_CHARS);
        assert_eq!(
            h.say(1, &format!("/{long}")),
            vec![one(
                1,
                &format!("! unknown command /{shown}... (try /help)\n")
            )]
        );
    }

    #[test]
    fn me_quit_help_and_unknown() {
        let mut h = Harness::new();
        h.join(1);
        h.join(2);
        assert_eq!(
            h.say(1, "/me waves"),
            vec![(Recipients::AllBut(ClientId(1)), "* user1 waves\n".into())]
        );
        assert_eq!(
            h.say(1, "/dance"),
            vec![one(1, "! unknown command /dance (try /help)\n")]
        );
        assert_eq!(h.say(1, "/me"), vec![one(1, "! usage: /me ACTION\n")]);
        let help = h.say(1, "/help");
        assert!(
            help.len() == HELP.len()
                && help
                    .iter()
                    .all(|(to, _)| *to == Recipients::One(ClientId(1)))
        );
        assert_eq!(
            h.say(2, "/quit gotta go"),
            vec![
                one(2, "* Bye!\n"),
                (
                    Recipients::AllBut(ClientId(2)),
                    "* user2 left (gotta go)\n".into()
                ),
                one(2, "<close>"),
            ]
        );
        // The engine never reports a client the room closed, and a stray
        // report is ignored.
        assert_eq!(h.leave(2), vec![]);
    }

    #[test]
    fn leaving_frees_the_name_and_tells_the_rest() {
        let mut h = Harness::new();
        h.join(1);
        h.join(2);
        h.say(1, "/nick carol");
        assert_eq!(
            h.leave(1),
            vec![(Recipients::AllBut(ClientId(1)), "* carol left\n".into())]
        );
        assert_eq!(
            h.say(2, "/nick carol"),
            vec![(Recipients::All, "* user2 is now known as carol\n".into())]
        );
        assert_eq!(h.say(1, "ghost"), vec![]);
    }

    /// Property tests: any sequence of joins, lines (chat, commands, nick
    /// changes, anything) and leaves, driven the way an engine drives the
    /// room, keeps the room's promises.
    mod properties {
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::super::*;
        use crate::app::{Output, Recipients};
        use crate::chat::names;

        /// Client ids come from a small pool, so they are reused after a
        /// leave just as the poll engine reuses slab keys.
        const IDS: usize = 6;

        #[derive(Clone, Debug)]
        enum Op {
            Join(usize),
            Line(usize, String),
            Leave(usize),
        }

        /// Names that collide (ignoring case, or with default names), and
        /// invalid ones.
        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                "[aAbB]{1,2}",
                "[uU]ser[1-6]",
                "[A-Za-z0-9_-]{1,24}",
                Just("x".repeat(25)),
                Just("bad name".to_string()),
            ]
        }

        /// What a client may type: chat, `//` escapes, every command, and
        /// arbitrary text.
        fn line() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-z][a-z <>*!]{0,8}",
                1 => "//[a-z]{0,4}",
                3 => name().prop_map(|n| format!("/nick {n}")),
                1 => "/me( [a-z]{1,5})?",
                1 => "/quit( [a-z]{1,4})?",
                1 => prop_oneof![Just("/who"), Just("/help"), Just("/NICK"), Just("/")]
                    .prop_map(String::from),
                1 => "/[a-zA-Z]{1,5}( .{0,6})?",
                1 => ".{1,12}",
            ]
            // Engines hand the room sanitised, non-blank lines.
            .prop_map(|l| crate::sanitize::sanitize(l.as_bytes()))
            .prop_filter("blank", |l| !l.trim().is_empty())
        }

        fn op() -> impl Strategy<Value = Op> {
            let id = 0..IDS;
            prop_oneof![
                2 => id.clone().prop_map(Op::Join),
                6 => (id.clone(), line()).prop_map(|(id, l)| Op::Line(id, l)),
                1 => id.prop_map(Op::Leave),
            ]
        }

        /// A stand-in engine: who is connected, and every line each
        /// connection received.
        struct Engine {
            room: ChatRoom,
            out: Outbox,
            now: Instant,
            connected: BTreeSet<usize>,
            received: BTreeMap<usize, Vec<String>>,
            /// The chat lines (`<name> text`) each connection must get, in
            /// order: every one said by someone else while it was here.
            owed: BTreeMap<usize, Vec<String>>,
        }

        impl Engine {
            fn new() -> Self {
                Self {
                    room: ChatRoom::new(),
                    out: Outbox::new(),
                    now: Instant::now(),
                    connected: BTreeSet::new(),
                    received: BTreeMap::new(),
                    owed: BTreeMap::new(),
                }
            }

            fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
                match *op {
                    Op::Join(id) if !self.connected.contains(&id) => {
                        self.connected.insert(id);
                        self.received.insert(id, Vec::new());
                        self.owed.insert(id, Vec::new());
                        let peer = "127.0.0.1:5000".parse().unwrap();
                        self.room
                            .handle_joined(ClientId(id), peer, self.now, &mut self.out);
                    }
                    Op::Line(id, ref line) if self.connected.contains(&id) => {
                        let name = self.room.name(ClientId(id)).map(str::to_string);
                        let name = name.ok_or_else(|| {
                            TestCaseError::fail(format!("connected {id} has no name"))
                        })?;
                        if let Command::Say(text) = command::parse(line) {
                            for other in self.connected.iter().filter(|&&c| c != id) {
                                self.owed
                                    .get_mut(other)
                                    .unwrap()
                                    .push(format!("<{name}> {text}"));
                            }
                        }
                        self.room
                            .handle_line(ClientId(id), line, self.now, &mut self.out);
                    }
                    Op::Leave(id) if self.connected.contains(&id) => {
                        self.disconnect(id)?;
                        self.room.handle_left(ClientId(id), self.now, &mut self.out);
                    }
                    _ => {} // an engine never reports these
                }
                self.route()?;
                self.check_room()
            }

            /// Deliver the outbox the way engines do.
            fn route(&mut self) -> Result<(), TestCaseError> {
                let outputs: Vec<Output> = self.out.drain().collect();
                for output in outputs {
                    match output {
                        Output::Send { to, bytes } => {
                            let text = String::from_utf8(bytes.to_vec()).unwrap();
                            prop_assert!(text.ends_with('\n'), "not a whole line: {text:?}");
                            let to: Vec<usize> = match to {
                                Recipients::One(ClientId(c)) => {
                                    prop_assert!(
                                        self.connected.contains(&c),
                                        "output for {c}, who is not here: {text:?}"
                                    );
                                    vec![c]
                                }
                                Recipients::AllBut(ClientId(x)) => {
                                    self.connected.iter().copied().filter(|&c| c != x).collect()
                                }
                                Recipients::All => self.connected.iter().copied().collect(),
                            };
                            for c in to {
                                let inbox = self.received.get_mut(&c).unwrap();
                                inbox.extend(
                                    text.trim_end_matches('\n').split('\n').map(str::to_string),
                                );
                            }
                        }
                        Output::Close {
                            client: ClientId(c),
                        } => {
                            prop_assert!(self.connected.contains(&c), "closing absent {c}");
                            self.disconnect(c)?;
                        }
                    }
                }
                Ok(())
            }

            /// A connection ends: it must have had every chat line owed.
            fn disconnect(&mut self, id: usize) -> Result<(), TestCaseError> {
                self.connected.remove(&id);
                let received = self.received.remove(&id).unwrap();
                let owed = self.owed.remove(&id).unwrap();
                let chat: Vec<&String> = received.iter().filter(|l| l.starts_with('<')).collect();
                let owed: Vec<&String> = owed.iter().collect();
                prop_assert_eq!(chat, owed, "chat lines seen by {}", id);
                Ok(())
            }

            /// The room holds exactly the connected clients, under valid
            /// names that are unique ignoring case.
            fn check_room(&self) -> Result<(), TestCaseError> {
                let members: BTreeSet<usize> = self.room.members().map(|c| c.0).collect();
                prop_assert_eq!(&members, &self.connected);
                let mut folded = BTreeSet::new();
                for &c in &members {
                    let name = self.room.name(ClientId(c)).unwrap();
                    prop_assert!(names::is_valid(name), "invalid name {name:?}");
                    prop_assert!(
                        folded.insert(name.to_ascii_lowercase()),
                        "name {name:?} held twice"
                    );
                }
                Ok(())
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Names stay unique, everyone here gets every chat line from
            /// the others in order, and nothing goes to a client that left.
            #[test]
            fn any_session_keeps_the_room_invariants(
                ops in prop::collection::vec(op(), 0..80),
            ) {
                let mut engine = Engine::new();
                for op in &ops {
                    engine.apply(op)?;
                }
                let still_here: Vec<usize> = engine.connected.iter().copied().collect();
                for id in still_here {
                    engine.disconnect(id)?;
                }
            }
        }
    }
}
