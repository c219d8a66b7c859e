//! Rooms, private messages, history and moderation (issue 14) over real
//! sockets, each scenario run on both engines. The rules themselves are
//! unit-tested in `src/chat/`; here the engines must route what the core
//! decides: a room hears only its own lines, a moved client gets what it
//! was owed first, a closed one is closed, a banned address is refused.

mod common;

use std::time::Duration;

use common::numbered::{assert_in_order_from, numbered_line};
use common::{Client, start_app, start_chat, test_limits};
use pollchat::chat::moderation::OpSecret;
use pollchat::chat::{Chat, Settings};
use pollchat::config::EngineKind;
use pollchat::quiz::{Quiz, questions};

/// Join `room` and read up to the confirmation.
fn join_room(c: &mut Client, room: &str) {
    c.send(&format!("/join {room}"));
    c.skip_until(|l| l.starts_with(&format!("* you are now in {room} ")));
}

/// Two rooms: each hears its own chat, joins and leaves, never the
/// other's; a marker sent afterwards proves nothing else came first.
fn two_rooms_do_not_hear_each_other(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut alice = Client::join_as(addr, "alice");
    let mut bob = Client::join_as(addr, "bob");
    let mut carol = Client::join_as(addr, "carol");
    alice.skip_until(|l| l.ends_with("carol"));
    bob.skip_until(|l| l.ends_with("carol"));
    join_room(&mut alice, "#rust");
    carol.expect("* alice left for #rust");
    bob.expect("* alice left for #rust");
    join_room(&mut bob, "#rust");
    alice.expect("* bob joined");
    carol.expect("* bob left for #rust");
    alice.send("in rust");
    carol.send("in the lobby");
    bob.expect("<alice> in rust");
    bob.send("/who");
    bob.expect("* 2 users here: alice, bob");
    carol.send("/who");
    carol.expect("* 1 user here: carol");
    // Back in the lobby: carol hears bob again, and alice no more.
    bob.send("/part");
    bob.skip_until(|l| l == "* you are now in #lobby (2 users here)");
    // The lobby's history: carol's line, which bob did not hear live.
    bob.expect("* last 1 line of #lobby:");
    assert!(bob.line().ends_with("] <carol> in the lobby"));
    bob.expect("* end of history");
    alice.expect("* bob left for #lobby");
    carol.expect("* bob joined");
    bob.send("back");
    carol.expect("<bob> back");
    alice.send("still in rust");
    carol.send("marker");
    bob.expect("<carol> marker");
}

/// A member behind a small window, owed most of a burst, moves to
/// #quiet: everything said before the move still reaches it, in order,
/// then only #quiet's lines.
fn a_member_moving_mid_burst_gets_every_line_said_before(engine: EngineKind) {
    const BURST: usize = 500;
    let server = start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut sender = Client::join_as(addr, "sender");
    let mut mover = Client::from_stream(common::small_window_connection(addr, None));
    mover.line();
    mover.send("/nick mover");
    mover.expect_suffix(" is now known as mover");
    sender.skip_until(|l| l.ends_with("mover"));
    // 100 KB, far more than the mover's window: most of it is still owed
    // when the server has taken it all in (the /who reply says so).
    for i in 0..BURST {
        sender.send(&numbered_line(0, i, 200));
    }
    sender.send("/who");
    sender.expect("* 2 users here: mover, sender");
    mover.send("/join #quiet");
    sender.expect("* mover left for #quiet");
    sender.send("not for the mover");
    sender.send("/msg mover marker");
    sender.expect("-> mover: marker");
    let mut next = || Some(mover.line()).filter(|l| l.starts_with("<sender> "));
    assert_in_order_from(&mut next, 1, 0, BURST, "mover");
    mover.expect("* you are now in #quiet (1 user here)");
    mover.expect("*sender* marker");
}

/// `/msg` from the lobby to #rust and back: marked private, confirmed,
/// and an unknown name is an error.
fn private_messages_cross_rooms(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut alice, mut bob) = Client::alice_and_bob(server.local_addr());
    join_room(&mut bob, "#rust");
    alice.skip_until(|l| l == "* bob left for #rust");
    alice.send("/msg bob are you there?");
    bob.expect("*alice* are you there?");
    alice.expect("-> bob: are you there?");
    bob.send("/msg ALICE yes");
    alice.expect("*bob* yes");
    bob.expect("-> alice: yes");
    alice.send("/msg nobody hi");
    alice.expect("! no such user: nobody");
}

/// Joining a room shows its last lines, stamped and framed, before
/// anything live.
fn history_is_shown_on_join(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut alice, mut bob) = Client::alice_and_bob(server.local_addr());
    join_room(&mut alice, "#rust");
    for line in ["one", "two", "three"] {
        alice.send(line);
    }
    alice.send("/me waves");
    alice.send("/who");
    alice.expect("* 1 user here: alice");
    bob.expect("* alice left for #rust");
    bob.send("/join #rust");
    bob.expect("* you are now in #rust (2 users here)");
    bob.expect("* last 4 lines of #rust:");
    for want in [
        "<alice> one",
        "<alice> two",
        "<alice> three",
        "* alice waves",
    ] {
        let line = bob.line();
        let (stamp, text) = line.split_at(8);
        assert!(
            stamp.len() == 8
                && stamp.starts_with('[')
                && stamp.ends_with("] ")
                && stamp[1..3].chars().all(|c| c.is_ascii_digit())
                && &stamp[3..4] == ":"
                && stamp[4..6].chars().all(|c| c.is_ascii_digit()),
            "stamped [HH:MM]: {line:?}"
        );
        assert_eq!(text, want);
    }
    bob.expect("* end of history");
    alice.expect("* bob joined");
    alice.send("live");
    bob.expect("<alice> live");
}

/// A newcomer that types nothing new sees what the one-room server always
/// showed: the welcome, then live lines (no history, no room talk).
fn the_lobby_works_as_before(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut alice, mut bob) = Client::alice_and_bob(server.local_addr());
    alice.send("said before carol came");
    bob.expect("<alice> said before carol came");
    let (mut carol, name) = Client::join(server.local_addr());
    alice.expect(&format!("* {name} joined"));
    alice.send("hello carol");
    carol.expect("<alice> hello carol");
    carol.send("/who");
    carol.expect(&format!("* 3 users here: alice, bob, {name}"));
}

fn with_operators() -> Chat {
    Chat::with(Settings {
        op_secret: OpSecret::new("letmein"),
        ..Settings::default()
    })
}

/// `/kick` closes the connection with the reason; the room hears it; a
/// kicked client may come back. `/ban` closes every connection from the
/// address, refuses new ones, and `/unban` lets them in again.
fn kick_and_ban_with_reconnect_refused(engine: EngineKind) {
    let server = start_app(engine, test_limits(), with_operators());
    let addr = server.local_addr();
    let mut op = Client::join_as(addr, "op");
    op.send("/op wrong");
    op.expect("! wrong operator secret");
    op.send("/op letmein");
    op.expect("* you are now an operator (/help lists the commands)");
    let mut troll = common::connect_from(addr, "127.0.0.2");
    troll.line();
    troll.send("/nick troll");
    op.skip_until(|l| l.ends_with("is now known as troll"));
    let mut friend = common::connect_from(addr, "127.0.0.3");
    friend.line();
    friend.send("/nick friend");
    op.skip_until(|l| l.ends_with("is now known as friend"));

    op.send("/kick troll spamming");
    let last_words = troll.read_to_close_strict();
    assert_eq!(
        last_words.last().map(String::as_str),
        Some("! you were kicked by op (spamming)"),
        "{last_words:?}"
    );
    op.expect("* troll was kicked by op (spamming)");
    friend.skip_until(|l| l == "* troll was kicked by op (spamming)");

    let mut again = common::connect_from(addr, "127.0.0.2");
    assert!(again.line().starts_with("* Welcome"), "a kick is not a ban");
    let mut second = common::connect_from(addr, "127.0.0.2");
    second.line();
    again.send("/nick troll");
    op.skip_until(|l| l.ends_with("is now known as troll"));
    op.send("/ban troll 5");
    op.expect("* troll was banned by op for 5 minute(s)");
    op.expect("* the ban is on 127.0.0.2 (/unban 127.0.0.2 lifts it)");
    op.expect_suffix(" left (banned)");
    for conn in [&mut again, &mut second] {
        let rest = conn.read_to_close_strict();
        assert_eq!(
            rest.last().map(String::as_str),
            Some("! you are banned (5 minute(s))"),
            "{rest:?}"
        );
    }

    let mut refused = common::connect_from(addr, "127.0.0.2");
    assert_eq!(
        refused.read_to_close_strict(),
        vec!["! you are banned (5 more minute(s))".to_string()]
    );
    op.send("/bans");
    op.expect("* 1 ban(s):");
    op.expect("*   127.0.0.2 (5 minute(s) left)");
    friend.send("still here");
    op.skip_until(|l| l == "<friend> still here");
    op.send("/unban 127.0.0.2");
    op.skip_until(|l| l == "* op lifted the ban on 127.0.0.2");
    let mut back = common::connect_from(addr, "127.0.0.2");
    assert!(back.line().starts_with("* Welcome"), "unbanned");
}

/// A muted member's chat is refused with a reason; others keep talking.
fn mute_refuses_chat_lines(engine: EngineKind) {
    let server = start_app(engine, test_limits(), with_operators());
    let addr = server.local_addr();
    let mut op = Client::join_as(addr, "op");
    op.send("/op letmein");
    op.expect("* you are now an operator (/help lists the commands)");
    let mut loud = common::connect_from(addr, "127.0.0.2");
    loud.line();
    loud.send("/nick loud");
    op.skip_until(|l| l.ends_with("is now known as loud"));
    op.send("/mute loud 3");
    op.expect("* loud was muted by op for 3 minute(s)");
    loud.skip_until(|l| l == "* loud was muted by op for 3 minute(s)");
    loud.send("LOUD NOISES");
    loud.expect("! you are muted (3 more minute(s))");
    op.send("/mute loud 0");
    op.expect("* op lifted the mute on loud");
    loud.send("sorry");
    op.expect("<loud> sorry");
}

/// The quiz keeps its one room: room and operator commands say they are
/// not available there, and `/msg` works.
fn the_quiz_refuses_rooms_but_passes_private_messages(engine: EngineKind) {
    let quiz = Quiz::new(
        questions::builtin(),
        pollchat::quiz::Settings::new(Duration::from_secs(20), 5),
    );
    let server = start_app(engine, test_limits(), quiz);
    let addr = server.local_addr();
    let mut alice = Client::join_as(addr, "alice");
    let mut bob = Client::join_as(addr, "bob");
    alice.skip_until(|l| l.ends_with("bob"));
    for (line, what) in [
        ("/join #side", "/join"),
        ("/rooms", "/rooms"),
        ("/op x", "/op"),
        ("/ban bob", "/ban"),
    ] {
        alice.send(line);
        alice.expect(&format!("! {what} is not available in the quiz"));
    }
    alice.send("/msg bob psst");
    bob.skip_until(|l| l == "*alice* psst");
    alice.expect("-> bob: psst");
}

engine_tests!(
    two_rooms_do_not_hear_each_other,
    a_member_moving_mid_burst_gets_every_line_said_before,
    private_messages_cross_rooms,
    history_is_shown_on_join,
    the_lobby_works_as_before,
    kick_and_ban_with_reconnect_refused,
    mute_refuses_chat_lines,
    the_quiz_refuses_rooms_but_passes_private_messages,
);
