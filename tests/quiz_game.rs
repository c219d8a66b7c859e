//! The quiz over real sockets: one short game per engine, played by two
//! clients who both answer every question, so no round waits for its timer.

mod common;

use std::time::Duration;

use common::{Client, start_app, test_limits};
use pollchat::config::EngineKind;
use pollchat::quiz::{Quiz, Settings, questions};

/// Two questions; the right answers are a, then b.
const TWO_QUESTIONS: &str = r#"
[[question]]
text = "Which system call waits for many sockets at once?"
choices = ["select", "fork", "exec"]
answer = "a"

[[question]]
text = "Two plus two?"
choices = ["3", "4"]
answer = "B"
"#;

/// Lines from the one starting with `header` up to the game's next prompt
/// (`* Next question ...` or `* Type /start ...`), both included.
#[track_caller]
fn board(client: &mut Client, header: &str) -> Vec<String> {
    let mut lines = vec![client.skip_until(|l| l == header)];
    for _ in 0..100 {
        let line = client.line();
        let last = line.starts_with("* Next question") || line.starts_with("* Type /start");
        lines.push(line);
        if last {
            return lines;
        }
    }
    panic!("no end to the board after {header:?}: {lines:?}")
}

/// A leaderboard row `*   1. alice  173` as (rank, name, points).
#[track_caller]
fn row(line: &str) -> (String, String, u32) {
    let fields: Vec<&str> = line.trim_start_matches('*').split_whitespace().collect();
    match fields[..] {
        [rank, name, points] => (rank.into(), name.into(), points.parse().unwrap()),
        _ => panic!("not a leaderboard row: {line:?}"),
    }
}

/// Two players, two 2-second questions. alice is right twice, bob once, so
/// alice wins whatever the speed bonuses; both players receive the same
/// leaderboard after question 1 and the same final standings.
fn two_player_game(engine: EngineKind) {
    let questions = questions::parse(TWO_QUESTIONS, "test questions").unwrap();
    let settings = Settings::new(Duration::from_secs(2), 2);
    let server = start_app(engine, test_limits(), Quiz::new(questions, settings));
    let mut alice = Client::join_as(server.local_addr(), "alice");
    let mut bob = Client::join_as(server.local_addr(), "bob");
    alice.expect_suffix("(/start to begin now).");
    alice.send("/start");

    for (player, answer) in [(&mut alice, "a"), (&mut bob, " B ")] {
        player.skip_until(|l| l == "* Question 1 of 2:");
        player.skip_until(|l| l.starts_with("* You have 2 seconds"));
        player.send(answer);
    }
    alice.expect("* You answered a) select.");
    let first = board(
        &mut alice,
        "* Everyone has answered. The answer was a) select.",
    );
    let bobs_first = board(
        &mut bob,
        "* Everyone has answered. The answer was a) select.",
    );
    // Line 1 is each player's own result; the rest is the same for both.
    assert_eq!(first[2..], bobs_first[2..]);
    assert_eq!(
        bobs_first[1],
        "* Wrong: you answered b. You have 0 points, rank 2 of 2."
    );
    assert_eq!(first[2], "* Leaderboard after question 1 of 2:");
    let (rank, name, alice_first) = row(&first[3]);
    assert_eq!((rank.as_str(), name.as_str()), ("1.", "alice"));
    assert!((101..=200).contains(&alice_first), "{first:?}");
    assert_eq!(
        first[1],
        format!("* Right! +{alice_first} points. You have {alice_first} points, rank 1 of 2.")
    );
    assert_eq!(row(&first[4]), ("2.".into(), "bob".into(), 0));
    assert_eq!(first[5], "* Next question in 3 seconds.");

    for player in [&mut alice, &mut bob] {
        player.skip_until(|l| l == "* Question 2 of 2:");
        player.skip_until(|l| l.starts_with("* You have 2 seconds"));
        player.send("b");
    }
    let last = board(&mut alice, "* Game over! Final standings:");
    assert_eq!(last, board(&mut bob, "* Game over! Final standings:"));
    let (rank, name, alice_total) = row(&last[1]);
    assert_eq!((rank.as_str(), name.as_str()), ("1.", "alice"));
    let (rank, name, bob_total) = row(&last[2]);
    assert_eq!((rank.as_str(), name.as_str()), ("2.", "bob"));
    assert!(alice_total > alice_first && (101..=200).contains(&bob_total));
    assert_eq!(
        last[3..],
        [
            format!("* The winner is alice with {alice_total} points!"),
            "* Type /start to play again.".into(),
        ]
    );
}

engine_tests!(two_player_game);
