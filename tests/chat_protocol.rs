//! The chat protocol over real sockets, one scenario per behaviour, each run
//! against every engine.

mod common;

use common::{Client, start_chat, test_limits};
use pollchat::config::EngineKind;

/// A new client is welcomed by its default name; the others hear it joined.
fn welcome_and_join_notice(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, a_name) = Client::join(server.local_addr());
    assert!(a_name.starts_with("user"), "{a_name}");
    let (_b, b_name) = Client::join(server.local_addr());
    a.expect(&format!("* {b_name} joined"));
}

/// A chat line reaches everyone else with the sender's name, not the sender.
fn chat_reaches_everyone_else(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let mut a = Client::join_as(server.local_addr(), "alice");
    let mut b = Client::join_as(server.local_addr(), "bob");
    let mut c = Client::join_as(server.local_addr(), "carol");
    a.skip_until(|l| l.ends_with("carol"));
    b.skip_until(|l| l.ends_with("carol"));
    a.send("hello room");
    b.expect("<alice> hello room");
    c.expect("<alice> hello room");
    // a got no echo: the next thing it sees is b's reply.
    b.send("hi alice");
    a.expect("<bob> hi alice");
}

/// `/nick` renames and tells everyone; bad or taken names get a `! ` error
/// and nothing is broadcast.
fn nick_rules(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let mut a = Client::join_as(server.local_addr(), "alice");
    let (mut b, b_name) = Client::join(server.local_addr());
    a.expect(&format!("* {b_name} joined"));
    b.send("/nick ALICE");
    b.expect("! name taken: ALICE");
    b.send("/nick has space");
    assert!(b.line().starts_with("! invalid name"));
    b.send(&format!("/nick {}", "x".repeat(25)));
    assert!(b.line().starts_with("! invalid name"));
    b.send("/nick");
    b.expect("! usage: /nick NAME");
    b.send("/nick bob_2-x");
    b.expect(&format!("* {b_name} is now known as bob_2-x"));
    // a saw only the successful rename: no errors leaked to it.
    a.expect(&format!("* {b_name} is now known as bob_2-x"));
}

/// `/who` lists names with a count, to the asker only.
fn who_lists_everyone(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    b.send("/who");
    b.expect("* 2 users here: alice, bob");
    b.send("marker");
    a.expect("<bob> marker");
}

/// `/me`, `/help` and unknown commands; nothing from a command is broadcast
/// by mistake.
fn me_help_unknown(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    a.send("/me waves");
    b.expect("* alice waves");
    a.send("/help");
    assert_eq!(a.line(), "* Commands:");
    a.skip_until(|l| l.contains("//"));
    a.send("/frobnicate now");
    a.expect("! unknown command /frobnicate (try /help)");
    a.send("//literal slash");
    b.expect("<alice> /literal slash");
}

/// `/quit msg` says goodbye, closes, and tells the others with the message.
fn quit_with_message(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    b.send("/quit see you");
    assert_eq!(b.read_to_close(), vec!["* Bye!".to_string()]);
    a.expect("* bob left (see you)");
}

/// A client that just drops is announced as having left.
fn drop_announces_left(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let mut a = Client::join_as(server.local_addr(), "alice");
    let b = Client::join_as(server.local_addr(), "bob");
    a.skip_until(|l| l.ends_with("bob"));
    drop(b);
    a.expect("* bob left");
}

/// CRLF and LF both end lines, empty lines are ignored, and several lines
/// in one packet or one line over several packets are framed correctly.
fn framing_over_the_wire(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    a.send_raw(b"one\r\n\n\r\ntwo\nthr");
    b.expect("<alice> one");
    b.expect("<alice> two");
    a.send_raw(b"ee\n");
    b.expect("<alice> three");
}

/// Invalid UTF-8 becomes U+FFFD; control characters and ANSI escapes are
/// stripped before the text reaches anyone else.
fn sanitises_what_others_see(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    a.send_raw(b"\x1b[2J\x1b[31mred\x1b[0m \xff\x00bell\x07\x1b]0;title\x07!\n");
    b.expect("<alice> red \u{fffd}bell!");
}

/// Half-close: a client that sends lines and then FIN has them all
/// delivered, the last one even without a newline (`printf 'hi' | nc -N`),
/// and still gets what was queued for it.
fn unterminated_last_line_and_half_close(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let (mut a, mut b) = Client::alice_and_bob(server.local_addr());
    // Bob does not read while alice sends ~200 KB; the /who reply proves
    // the server has queued all of it for bob before bob half-closes.
    let payload = "x".repeat(100);
    for i in 0..2000 {
        a.send(&format!("{i} {payload}"));
    }
    a.send("/who");
    a.expect("* 2 users here: alice, bob");
    b.send_raw(b"one\ntwo\r\nhi");
    b.stream.shutdown(std::net::Shutdown::Write).unwrap();
    a.expect("<bob> one");
    a.expect("<bob> two");
    a.expect("<bob> hi");
    a.expect("* bob left");
    // Everything queued for bob before he left still arrives, then the close.
    let rest = b.read_to_close();
    assert_eq!(rest.len(), 2000);
    for (i, line) in rest.iter().enumerate() {
        assert_eq!(*line, format!("<alice> {i} {payload}"));
    }
}

engine_tests!(
    welcome_and_join_notice,
    chat_reaches_everyone_else,
    nick_rules,
    who_lists_everyone,
    me_help_unknown,
    quit_with_message,
    drop_announces_left,
    framing_over_the_wire,
    sanitises_what_others_see,
    unterminated_last_line_and_half_close,
);
