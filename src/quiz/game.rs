//! The quiz [`App`]: lobby → countdown → rounds (question, results,
//! leaderboard) → final standings → lobby again.
//!
//! Time comes in only as `now`. The quiz has at most one deadline at a time
//! (countdown end, question timer, pause before the next question):
//! `poll_timeout` reports it and `handle_timeout` acts on it, so the engine
//! sleeps in `poll` until then: no sleeping, no busy loop. Every handler
//! first catches up on a deadline that has already passed, so a line that
//! arrives in the same tick as the timer still finds the game in order.
//!
//! The student versions of this game kept a score per thread, let one
//! player's answer remove the question for everyone, and spun once the
//! questions ran out. Here there is one game state, every player gets the
//! same question at the same moment, and a finished game waits in the lobby
//! with no deadline at all.
//!
//! Whatever is not a quiz action (an answer, `/start`, `/help`) is chat: an
//! embedded [`Chat`] handles it, names and `/nick` included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::info;

use super::questions::Question;
use super::round::{Outcome, Round};
use super::scoreboard::{self, Scoreboard, Standing};
use crate::app::{App, ClientId, Clock, Outbox, Recipients};
use crate::chat::command::{self, Command};
use crate::chat::service::HELP;
use crate::chat::{Chat, Settings as ChatSettings};

/// The lobby countdown once enough players are here (the issue fixes it).
pub const COUNTDOWN: Duration = Duration::from_secs(5);
/// The pause after a round's results, long enough to read the leaderboard
/// before the next question pushes it up the screen.
pub const PAUSE: Duration = Duration::from_secs(3);
/// Rows shown in a leaderboard: enough for a room of friends, and a big
/// game does not send every player a thousand lines a round. Each player's
/// own rank is in their result line.
pub const LEADERBOARD_ROWS: usize = 10;

/// What `/help` adds to the chat room's list.
const QUIZ_HELP: &[&str] = &[
    "* Quiz:",
    "*   /start         start the game now",
    "*   a, b, c, ...   answer the question (your first answer counts)",
];

/// How a game is paced.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Time allowed per question (`--question-secs`).
    pub question_time: Duration,
    /// Players present before the countdown starts (`--min-players`).
    pub min_players: usize,
    /// Lobby countdown length.
    pub countdown: Duration,
    /// Pause between a round's results and the next question.
    pub pause: Duration,
}

impl Settings {
    /// The standard countdown and pause, with these flags.
    pub fn new(question_time: Duration, min_players: usize) -> Self {
        Self {
            question_time,
            min_players,
            countdown: COUNTDOWN,
            pause: PAUSE,
        }
    }
}

/// Where the game is.
#[derive(Debug)]
enum Phase {
    /// Waiting for players; `starts_at` is set while the countdown runs.
    Lobby { starts_at: Option<Instant> },
    /// A question is open.
    Asking(Round),
    /// Results are out; question `next` is asked at `at`.
    Pause { next: usize, at: Instant },
}

/// The quiz App.
#[derive(Debug)]
pub struct Quiz {
    /// Members, names and chat: lobby lines are chat.
    room: Chat,
    /// Every game plays all of them, in order; nothing is used up.
    questions: Vec<Question>,
    /// Question time, players needed, countdown and pause.
    settings: Settings,
    /// Where the game is; the source of the one deadline.
    phase: Phase,
    /// This game's scores; replaced at each game start.
    scores: Scoreboard,
}

impl Quiz {
    /// A quiz over `questions`, which must not be empty (the question file
    /// parser guarantees it).
    pub fn new(questions: Vec<Question>, settings: Settings) -> Self {
        assert!(!questions.is_empty(), "a quiz needs at least one question");
        Self {
            room: Chat::with(ChatSettings::single_room("the quiz")),
            questions,
            settings,
            phase: Phase::Lobby { starts_at: None },
            scores: Scoreboard::default(),
        }
    }

    /// Act on every deadline up to `now`. Each step moves the game forward
    /// (countdown → question → pause → next question → ... → lobby, which
    /// has no deadline), so this ends even if the engine calls very late.
    fn catch_up(&mut self, now: Instant, out: &mut Outbox) {
        while self.game_deadline().is_some_and(|at| at <= now) {
            match self.phase {
                Phase::Lobby { .. } => self.start_game(now, out),
                Phase::Asking(_) => self.end_round(now, out),
                Phase::Pause { next, .. } => self.ask(next, now, out),
            }
        }
    }

    // ----- lobby -------------------------------------------------------------

    fn start_countdown(&mut self, now: Instant, out: &mut Outbox) {
        self.phase = Phase::Lobby {
            starts_at: Some(now + self.settings.countdown),
        };
        let here = match self.room.len() {
            1 => "1 player is here".to_string(),
            n => format!("{n} players are here"),
        };
        out.all(&format!(
            "* {here}: the game starts in {} seconds (/start to begin now).",
            self.settings.countdown.as_secs()
        ));
    }

    /// What starts a game from an idle lobby.
    fn waiting_for(&self) -> String {
        format!(
            "The game starts when {} players are here, or when someone types /start.",
            self.settings.min_players
        )
    }

    /// `/start`: begin now, from the lobby with or without a countdown.
    fn start_command(&mut self, client: ClientId, now: Instant, out: &mut Outbox) {
        match self.phase {
            Phase::Lobby { .. } => self.start_game(now, out),
            _ => out.to(client, "! the game is already on"),
        }
    }

    fn start_game(&mut self, now: Instant, out: &mut Outbox) {
        info!("game started with {} player(s)", self.room.len());
        self.scores = Scoreboard::default();
        out.all(&format!(
            "* The game begins: {} questions, {} seconds each. Faster right answers score more.",
            self.questions.len(),
            self.settings.question_time.as_secs()
        ));
        self.ask(0, now, out);
    }

    // ----- rounds ------------------------------------------------------------

    /// Send question `index` to everyone at once; everyone here plays it.
    fn ask(&mut self, index: usize, now: Instant, out: &mut Outbox) {
        let players: Vec<ClientId> = self.room.members().collect();
        for &player in &players {
            self.scores.enter(player);
        }
        let question = &self.questions[index];
        let mut text = format!(
            "* Question {} of {}:\n* {}\n",
            index + 1,
            self.questions.len(),
            question.text
        );
        for (i, choice) in question.choices.iter().enumerate() {
            text.push_str(&format!("*   {}) {choice}\n", Question::letter(i)));
        }
        text.push_str(&format!(
            "* You have {} seconds: answer with a letter.\n",
            self.settings.question_time.as_secs()
        ));
        out.send(Recipients::All, text);
        self.phase = Phase::Asking(Round::new(index, players, now, self.settings.question_time));
    }

    /// A single letter during a question is an answer.
    fn answer(&mut self, client: ClientId, letter: char, now: Instant, out: &mut Outbox) {
        let Phase::Asking(round) = &mut self.phase else {
            return;
        };
        let question = &self.questions[round.index];
        match round.answer(client, letter, question, now) {
            Ok(choice) => {
                out.to(
                    client,
                    &format!(
                        "* You answered {}) {}.",
                        Question::letter(choice),
                        question.choices[choice]
                    ),
                );
                if round.everyone_answered() {
                    self.end_round(now, out);
                }
            }
            Err(e) => out.to(client, &format!("! {e}")),
        }
    }

    /// Everyone answered or time is up: the answer, each player's result,
    /// the leaderboard; then a pause, or the end of the game.
    fn end_round(&mut self, now: Instant, out: &mut Outbox) {
        let Phase::Asking(round) =
            std::mem::replace(&mut self.phase, Phase::Lobby { starts_at: None })
        else {
            return;
        };
        let question = &self.questions[round.index];
        let why = if round.everyone_answered() {
            "Everyone has answered."
        } else {
            "Time is up!"
        };
        out.all(&format!(
            "* {why} The answer was {}) {}.",
            Question::letter(question.answer),
            question.choices[question.answer]
        ));

        for (player, outcome) in round.outcomes() {
            self.scores.add(player, outcome.points());
        }
        let standings = self.scores.standings(|id| self.room.name(id));
        let ranks: HashMap<ClientId, &Standing> = standings.iter().map(|s| (s.player, s)).collect();
        for (player, outcome) in round.outcomes() {
            let result = match outcome {
                Outcome::Right(points) => format!("Right! +{points} points"),
                Outcome::Wrong(choice) => {
                    format!("Wrong: you answered {}", Question::letter(choice))
                }
                Outcome::NoAnswer => "No answer".to_string(),
            };
            let rank = match ranks.get(&player) {
                Some(s) if s.tied => format!("{}=", s.rank),
                Some(s) => s.rank.to_string(),
                None => "-".into(),
            };
            out.to(
                player,
                &format!(
                    "* {result}. You have {} points, rank {rank} of {}.",
                    self.scores.points(player),
                    standings.len()
                ),
            );
        }

        let next = round.index + 1;
        if next < self.questions.len() {
            let mut text = format!(
                "* Leaderboard after question {next} of {}:\n",
                self.questions.len()
            );
            text.push_str(&board(&standings));
            text.push_str(&format!(
                "* Next question in {} seconds.\n",
                self.settings.pause.as_secs()
            ));
            out.send(Recipients::All, text);
            self.phase = Phase::Pause {
                next,
                at: now + self.settings.pause,
            };
        } else {
            self.game_over(&standings, out);
        }
    }

    /// The last round's leaderboard is the final standings, with the winner.
    fn game_over(&mut self, standings: &[Standing], out: &mut Outbox) {
        let mut text = String::from("* Game over! Final standings:\n");
        text.push_str(&board(standings));
        if let Some(winner) = scoreboard::winner_line(standings) {
            info!("game over: {}", winner.trim_start_matches("* "));
            text.push_str(&winner);
            text.push('\n');
        }
        text.push_str("* Type /start to play again.\n");
        out.send(Recipients::All, text);
        self.phase = Phase::Lobby { starts_at: None };
        self.scores = Scoreboard::default();
    }

    // ----- people coming and going ------------------------------------------

    /// `client`, who was called `name`, is gone (already out of the room).
    fn departed(&mut self, client: ClientId, name: &str, now: Instant, out: &mut Outbox) {
        if self.room.is_empty() {
            if !matches!(self.phase, Phase::Lobby { .. }) {
                info!("everyone left; back to the lobby");
            }
            // Nobody left to play or to tell.
            self.phase = Phase::Lobby { starts_at: None };
            self.scores = Scoreboard::default();
            return;
        }
        match &mut self.phase {
            Phase::Lobby { starts_at } => {
                if starts_at.is_some() && self.room.len() < self.settings.min_players {
                    *starts_at = None;
                    out.all(&format!(
                        "* Not enough players: the countdown is off. {}",
                        self.waiting_for()
                    ));
                }
            }
            Phase::Asking(round) => {
                self.scores.leave(client, name);
                round.remove(client);
                if round.everyone_answered() {
                    self.end_round(now, out);
                }
            }
            Phase::Pause { .. } => self.scores.leave(client, name),
        }
    }

    /// `client` took a new name: if a player of that name left this game,
    /// this is them coming back.
    fn renamed(&mut self, client: ClientId, out: &mut Outbox) {
        if matches!(self.phase, Phase::Lobby { .. }) {
            return;
        }
        let Some(name) = self.room.name(client) else {
            return;
        };
        if let Some(points) = self.scores.rejoin(client, name) {
            out.all(&format!("* {name} is back, with {points} points."));
        }
    }
}

/// The top rows of the standings, and how many more there are.
fn board(standings: &[Standing]) -> String {
    let shown = &standings[..standings.len().min(LEADERBOARD_ROWS)];
    let mut text = scoreboard::render(shown);
    let more = standings.len() - shown.len();
    if more > 0 {
        text.push_str(&format!("*   ... and {more} more\n"));
    }
    text
}

/// The letter in a line that is one letter, surrounding spaces ignored.
fn single_letter(text: &str) -> Option<char> {
    let mut chars = text.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c),
        _ => None,
    }
}

impl App for Quiz {
    fn handle_joined(
        &mut self,
        client: ClientId,
        peer: SocketAddr,
        now: Instant,
        out: &mut Outbox,
    ) {
        self.catch_up(now, out);
        self.room.handle_joined(client, peer, now, out);
        match self.phase {
            Phase::Lobby {
                starts_at: Some(at),
            } => {
                let secs = at.saturating_duration_since(now).as_secs_f64().ceil();
                out.to(
                    client,
                    &format!("* The game starts in {secs} seconds (/start to begin now)."),
                );
            }
            Phase::Lobby { starts_at: None } => {
                if self.room.len() >= self.settings.min_players {
                    self.start_countdown(now, out);
                } else {
                    out.to(client, &format!("* {}", self.waiting_for()));
                }
            }
            Phase::Asking(_) | Phase::Pause { .. } => {
                out.to(client, "* A game is on: you play from the next question.");
            }
        }
    }

    fn handle_line(&mut self, client: ClientId, line: &str, clock: Clock, out: &mut Outbox) {
        let now = clock.now;
        self.catch_up(now, out);
        if self.room.name(client).is_none() {
            return;
        }
        let command = command::parse(line);
        match command {
            Command::Say(text) if matches!(self.phase, Phase::Asking(_)) => {
                match single_letter(text) {
                    Some(letter) => self.answer(client, letter, now, out),
                    None => self.room.handle_command(client, command, clock, out),
                }
            }
            Command::Unknown(cmd) if cmd.eq_ignore_ascii_case("start") => {
                self.start_command(client, now, out);
            }
            Command::Help => {
                for line in HELP.iter().chain(QUIZ_HELP) {
                    out.to(client, line);
                }
            }
            Command::Nick(_) => {
                let old = self.room.name(client).map(str::to_string);
                self.room.handle_command(client, command, clock, out);
                if self.room.name(client) != old.as_deref() {
                    self.renamed(client, out);
                }
            }
            Command::Quit(_) => {
                let Some(name) = self.room.name(client).map(str::to_string) else {
                    return;
                };
                self.room.handle_command(client, command, clock, out);
                self.departed(client, &name, now, out);
            }
            _ => self.room.handle_command(client, command, clock, out),
        }
    }

    fn handle_left(&mut self, client: ClientId, now: Instant, out: &mut Outbox) {
        self.catch_up(now, out);
        let Some(name) = self.room.name(client).map(str::to_string) else {
            return;
        };
        self.room.handle_left(client, now, out);
        self.departed(client, &name, now, out);
    }

    fn handle_timeout(&mut self, now: Instant, out: &mut Outbox) {
        self.catch_up(now, out);
        if self.room.poll_timeout().is_some_and(|at| at <= now) {
            self.room.handle_timeout(now, out);
        }
    }

    /// The game's deadline, or the chat's (a big room's summary).
    fn poll_timeout(&self) -> Option<Instant> {
        [self.game_deadline(), self.room.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Quiz {
    /// The one deadline of the game's phase.
    fn game_deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Lobby { starts_at } => *starts_at,
            Phase::Asking(round) => Some(round.deadline()),
            Phase::Pause { at, .. } => Some(*at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quiz::sim::Table;

    const SEC: Duration = Duration::from_secs(1);

    /// Question 1 of the simulated table, exactly as every player sees it.
    const QUESTION_1: [&str; 7] = [
        "* Question 1 of 3:",
        "* What is the Italian word for pie?",
        "*   a) Mozzarella",
        "*   b) Pasty",
        "*   c) Patty",
        "*   d) Pizza",
        "* You have 20 seconds: answer with a letter.",
    ];

    #[test]
    fn lobby_lines_are_chat_and_min_players_start_a_countdown() {
        let mut t = Table::new();
        t.join(1);
        assert_eq!(
            t.lines(1),
            [
                "* Welcome to the quiz! You are user1. Type /help for commands.",
                "* The game starts when 2 players are here, or when someone types /start.",
            ]
        );
        assert_eq!(
            t.quiz.poll_timeout(),
            None,
            "an empty lobby has no deadline"
        );
        t.say(1, "/nick alice");
        t.join(2);
        t.say(2, "hi");
        t.say(2, "a");
        t.say(2, "/me waves");
        assert_eq!(
            t.lines(1),
            [
                "* user1 is now known as alice",
                "* user2 joined",
                "* 2 players are here: the game starts in 5 seconds (/start to begin now).",
                "<user2> hi",
                "<user2> a",
                "* user2 waves",
            ]
        );
        assert_eq!(t.quiz.poll_timeout(), Some(t.now + 5 * SEC));
        t.wait(2 * SEC);
        t.join(3);
        assert_eq!(
            t.lines(3)[1],
            "* The game starts in 3 seconds (/start to begin now)."
        );
        t.wait(2 * SEC);
        assert_eq!(t.lines(1), ["* user3 joined"]);
        t.lines(2);
        t.lines(3);
        t.wait(SEC);
        let lines = t.lines(1);
        assert_eq!(
            lines[0],
            "* The game begins: 3 questions, 20 seconds each. Faster right answers score more."
        );
        assert_eq!(lines[1..], QUESTION_1);
        assert_eq!(t.lines(2), lines, "every player gets the same question");
        assert_eq!(t.lines(3), lines);
    }

    #[test]
    fn start_skips_the_countdown_even_below_min_players() {
        let mut t = Table::new();
        t.join(1);
        t.lines(1);
        t.say(1, "/START");
        assert_eq!(t.lines(1)[1..], QUESTION_1);
        t.say(1, "/start");
        assert_eq!(t.lines(1), ["! the game is already on"]);
    }

    #[test]
    fn the_countdown_stops_when_players_drop_below_the_minimum() {
        let mut t = Table::new();
        t.join(1);
        t.join(2);
        t.leave(2);
        assert_eq!(
            t.lines(1)[4..],
            [
                "* user2 left",
                "* Not enough players: the countdown is off. The game starts when 2 players are here, or when someone types /start.",
            ]
        );
        assert_eq!(t.quiz.poll_timeout(), None);
        t.wait(60 * SEC);
        assert_eq!(t.lines(1), Vec::<String>::new());
    }

    #[test]
    fn first_answer_counts_and_invalid_answers_are_errors() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob", "carol"]);
        t.say(1, "e");
        assert_eq!(t.lines(1), ["! e is not one of the choices (a-d)"]);
        t.say(1, "  D ");
        assert_eq!(t.lines(1), ["* You answered d) Pizza."]);
        t.say(1, "a");
        assert_eq!(t.lines(1), ["! you already answered"]);
        t.say(1, "d?");
        t.say(1, "//d");
        assert_eq!(
            t.lines(2),
            ["<alice> d?", "<alice> /d"],
            "other lines are chat"
        );
        t.join_as(4, "dave");
        t.say(4, "d");
        assert_eq!(t.lines(4)[3..], ["! you play from the next question"]);
        t.say(2, "b");
        t.say(3, "D");
        let alice = t.lines(1);
        assert_eq!(
            alice[..2],
            ["* user4 joined", "* user4 is now known as dave"]
        );
        assert_eq!(
            alice[2],
            "* Everyone has answered. The answer was d) Pizza."
        );
        assert_eq!(
            alice[3],
            "* Right! +200 points. You have 200 points, rank 1= of 3."
        );
        assert_eq!(
            t.lines(2)[2..],
            [
                "* You answered b) Pasty.",
                "* Everyone has answered. The answer was d) Pizza.",
                "* Wrong: you answered b. You have 0 points, rank 3 of 3.",
                "* Leaderboard after question 1 of 3:",
                "*   1= alice  200",
                "*   1= carol  200",
                "*   3. bob      0",
                "* Next question in 3 seconds.",
            ]
        );
    }

    #[test]
    fn the_speed_bonus_is_proportional_to_the_time_left() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob", "carol"]);
        t.wait(5 * SEC);
        t.say(2, "d");
        t.wait(5 * SEC);
        t.say(1, "d");
        t.wait(5 * SEC);
        t.say(3, "a");
        assert_eq!(
            t.lines(1)[3..7],
            [
                "* Leaderboard after question 1 of 3:",
                "*   1. bob    175",
                "*   2. alice  150",
                "*   3. carol    0",
            ]
        );
    }

    #[test]
    fn everyone_answering_ends_the_round_early() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        let question_deadline = t.quiz.poll_timeout();
        assert_eq!(question_deadline, Some(t.now + 20 * SEC));
        t.wait(2 * SEC);
        t.say(1, "d");
        assert_eq!(
            t.lines(2),
            Vec::<String>::new(),
            "bob is not told alice answered"
        );
        t.say(2, "d");
        assert_eq!(
            t.lines(2)[1..],
            [
                "* Everyone has answered. The answer was d) Pizza.",
                "* Right! +190 points. You have 190 points, rank 1= of 2.",
                "* Leaderboard after question 1 of 3:",
                "*   1= alice  190",
                "*   1= bob    190",
                "* Next question in 3 seconds.",
            ]
        );
        assert_eq!(t.quiz.poll_timeout(), Some(t.now + PAUSE));
        t.lines(1);
        t.wait(PAUSE);
        assert_eq!(t.lines(1)[0], "* Question 2 of 3:");
    }

    #[test]
    fn the_timer_ends_the_round_for_those_who_did_not_answer() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        t.say(1, "c");
        t.wait(19 * SEC);
        assert_eq!(t.lines(2), Vec::<String>::new());
        t.wait(SEC);
        assert_eq!(
            t.lines(2)[..2],
            [
                "* Time is up! The answer was d) Pizza.",
                "* No answer. You have 0 points, rank 1= of 2.",
            ]
        );
        assert_eq!(
            t.lines(1)[2],
            "* Wrong: you answered c. You have 0 points, rank 1= of 2."
        );
    }

    #[test]
    fn a_line_arriving_after_the_deadline_finds_the_round_closed() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        // The engine has not woken the quiz yet when alice's line arrives.
        t.now += 21 * SEC;
        t.say(1, "d");
        let bob = t.lines(2);
        assert_eq!(bob[0], "* Time is up! The answer was d) Pizza.");
        assert_eq!(bob.last().unwrap(), "<alice> d", "too late: it is chat now");
        assert!(bob.contains(&"*   1= alice    0".to_string()), "{bob:?}");
    }

    #[test]
    fn final_standings_show_the_winner_and_ties_as_ties() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob", "carol"]);
        for _ in 0..3 {
            t.say(1, "b");
            t.say(2, "b");
            t.say(3, "a");
            t.wait(PAUSE);
        }
        let end = t.last_lines(3, 6);
        assert_eq!(
            end,
            [
                "* Game over! Final standings:",
                "*   1= alice  400",
                "*   1= bob    400",
                "*   3. carol    0",
                "* It's a tie! alice and bob share first place with 400 points.",
                "* Type /start to play again.",
            ]
        );

        t.say(1, "/start");
        t.say(1, "a");
        t.say(2, "d");
        t.say(3, "d");
        for _ in 0..2 {
            t.wait(PAUSE);
            t.say(1, "b");
            t.say(2, "b");
            t.say(3, "b");
        }
        let end = t.last_lines(1, 6);
        assert_eq!(
            end,
            [
                "* Game over! Final standings:",
                "*   1= bob    600",
                "*   1= carol  600",
                "*   3. alice  400",
                "* It's a tie! bob and carol share first place with 600 points.",
                "* Type /start to play again.",
            ],
            "a new game starts from zero"
        );
    }

    #[test]
    fn a_rejoin_under_the_same_name_keeps_the_score_within_the_game() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        t.say(1, "d");
        t.say(2, "a");
        t.leave(1);
        t.wait(PAUSE);
        t.lines(2);
        // alice comes back on a new connection during question 2.
        t.join(3);
        assert_eq!(
            t.lines(3)[1],
            "* A game is on: you play from the next question."
        );
        t.say(3, "/nick alice");
        assert_eq!(
            t.lines(2),
            [
                "* user3 joined",
                "* user3 is now known as alice",
                "* alice is back, with 200 points."
            ]
        );
        t.lines(3);
        t.wait(10 * SEC);
        t.say(2, "b");
        assert_eq!(
            t.lines(3)[1..5],
            [
                "* Leaderboard after question 2 of 3:",
                "*   1. alice  200",
                "*   2. bob    150",
                "* Next question in 3 seconds.",
            ]
        );
        // After the game, the name no longer carries a score.
        t.wait(PAUSE);
        t.say(3, "b");
        t.say(2, "b");
        t.leave(3);
        t.say(2, "/start");
        t.join_as(4, "alice");
        assert!(
            !t.lines(2).iter().any(|l| l.contains("is back")),
            "a new game starts from zero"
        );
    }

    #[test]
    fn a_player_who_joins_mid_game_plays_from_the_next_question() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        t.join_as(3, "carol");
        t.say(1, "d");
        t.say(2, "d");
        assert!(
            t.lines(3)
                .contains(&"* Everyone has answered. The answer was d) Pizza.".into()),
            "the round did not wait for carol"
        );
        t.wait(PAUSE);
        t.say(1, "b");
        t.say(2, "b");
        assert_eq!(
            t.quiz.poll_timeout(),
            Some(t.now + 20 * SEC),
            "carol plays now"
        );
        t.say(3, "b");
        assert!(t.lines(3).contains(&"*   3. carol  200".into()));
    }

    #[test]
    fn a_player_leaving_mid_round_is_not_waited_for() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob", "carol"]);
        t.say(1, "d");
        t.say(2, "d");
        t.say(3, "/quit bye");
        assert_eq!(
            t.lines(1)[1..3],
            [
                "* carol left (bye)",
                "* Everyone has answered. The answer was d) Pizza.",
            ]
        );
        assert!(!t.is_connected(3));
    }

    #[test]
    fn everyone_leaving_returns_to_the_lobby() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        t.say(1, "d");
        t.leave(1);
        t.leave(2);
        assert_eq!(t.quiz.poll_timeout(), None, "no game, no deadline");
        t.join(3);
        assert_eq!(
            t.lines(3)[1],
            "* The game starts when 2 players are here, or when someone types /start."
        );
        t.say(3, "/nick alice");
        t.join(4);
        t.lines(3);
        t.wait(5 * SEC);
        assert_eq!(
            t.lines(3)[1],
            "* Question 1 of 3:",
            "a new game from question 1"
        );
    }

    #[test]
    fn a_finished_game_waits_in_the_lobby_until_start_or_a_new_player() {
        let mut t = Table::new();
        t.start_with(&["alice", "bob"]);
        for _ in 0..3 {
            t.wait(20 * SEC);
            t.wait(PAUSE);
        }
        assert!(t.lines(1).contains(&"* Type /start to play again.".into()));
        assert_eq!(t.quiz.poll_timeout(), None, "the game does not spin");
        t.wait(3600 * SEC);
        assert_eq!(t.lines(1), Vec::<String>::new());
        t.join(3);
        assert_eq!(
            t.lines(1),
            [
                "* user3 joined",
                "* 3 players are here: the game starts in 5 seconds (/start to begin now).",
            ]
        );
    }

    #[test]
    fn help_adds_the_quiz_commands_to_the_chat_ones() {
        let mut t = Table::new();
        t.join(1);
        t.lines(1);
        t.say(1, "/help");
        let help = t.lines(1);
        assert_eq!(help.len(), HELP.len() + QUIZ_HELP.len());
        assert_eq!(help[0], "* Commands:");
        assert!(help.contains(&"*   /start         start the game now".into()));
    }

    /// Issue 11 through the game: nobody answers, so all 300 tie on 0 and
    /// the final standings name five of them.
    #[test]
    fn a_game_where_hundreds_tie_ends_with_one_short_winner_line() {
        let mut t = Table::new();
        for id in 1..=300 {
            t.join(id);
        }
        t.say(1, "/start");
        t.wait(100 * SEC);
        let lines = t.lines(1);
        let tie: Vec<&String> = lines.iter().filter(|l| l.contains("tie")).collect();
        assert_eq!(
            tie,
            [
                "* It's a tie! user1, user10, user100, user101, user102 and 295 others \
              share first place with 0 points."
            ]
        );
    }
}
