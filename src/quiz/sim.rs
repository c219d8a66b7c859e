//! A simulated quiz table for tests, in the style of quinn-proto's `Pair`:
//! clients and the clock live in memory, the App is stepped the way an
//! engine steps it, and time moves by jumping from deadline to deadline.
//! No sockets, no waiting.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use super::game::{Quiz, Settings};
use super::questions;
use crate::app::{App, ClientId, Clock, Outbox, Output, Recipients};

/// Three short questions: answers d, b, b.
pub const QUESTIONS: &str = r#"
[[question]]
text = "What is the Italian word for pie?"
choices = ["Mozzarella", "Pasty", "Patty", "Pizza"]
answer = "d"

[[question]]
text = "Two plus two?"
choices = ["3", "4"]
answer = "b"

[[question]]
text = "What colour is a clear sky?"
choices = ["Green", "Blue", "Red"]
answer = "b"
"#;

/// A quiz, its clients' inboxes and a fake clock.
pub struct Table {
    pub quiz: Quiz,
    /// The simulated time; starts at a real `Instant` only because
    /// `Instant` has no other constructor.
    pub now: Instant,
    out: Outbox,
    /// Clients an engine would still count as joined.
    connected: BTreeSet<usize>,
    /// Lines each client has received and the test has not read yet.
    inboxes: HashMap<usize, VecDeque<String>>,
}

impl Table {
    /// [`QUESTIONS`] with 20-second questions and 2 players to start.
    pub fn new() -> Self {
        Self::with(Settings::new(Duration::from_secs(20), 2))
    }

    pub fn with(settings: Settings) -> Self {
        let questions = questions::parse(QUESTIONS, "test").unwrap();
        Self {
            quiz: Quiz::new(questions, settings),
            now: Instant::now(),
            out: Outbox::new(),
            connected: BTreeSet::new(),
            inboxes: HashMap::new(),
        }
    }

    pub fn join(&mut self, id: usize) {
        let peer = "127.0.0.1:5000".parse().unwrap();
        self.connected.insert(id);
        self.quiz
            .handle_joined(ClientId(id), peer, self.now, &mut self.out);
        self.deliver();
    }

    pub fn say(&mut self, id: usize, line: &str) {
        self.quiz
            .handle_line(ClientId(id), line, self.clock(), &mut self.out);
        self.deliver();
    }

    pub fn leave(&mut self, id: usize) {
        self.connected.remove(&id);
        self.quiz.handle_left(ClientId(id), self.now, &mut self.out);
        self.deliver();
    }

    /// Let `time` pass, waking the App at each deadline on the way, as the
    /// poll engine does with `poll_timeout` as its `poll` timeout.
    pub fn wait(&mut self, time: Duration) {
        let until = self.now + time;
        for _ in 0..1000 {
            match self.quiz.poll_timeout() {
                Some(at) if at <= until => {
                    self.now = self.now.max(at);
                    self.quiz.handle_timeout(self.now, &mut self.out);
                    self.deliver();
                }
                _ => {
                    self.now = until;
                    return;
                }
            }
        }
        panic!("the quiz asked for more than 1000 wake-ups in {time:?}");
    }

    /// Join as client `id` and take `name`.
    pub fn join_as(&mut self, id: usize, name: &str) {
        self.join(id);
        self.say(id, &format!("/nick {name}"));
    }

    /// Seat `names` as clients 1, 2, ..., `/start`, and forget everything
    /// said so far (question 1 included): question 1 is open.
    pub fn start_with(&mut self, names: &[&str]) {
        for (i, name) in names.iter().enumerate() {
            self.join_as(i + 1, name);
        }
        self.say(1, "/start");
        for id in 1..=names.len() {
            self.lines(id);
        }
    }

    /// What `id` received since the last call, one line each.
    pub fn lines(&mut self, id: usize) -> Vec<String> {
        self.inboxes
            .get_mut(&id)
            .map(|inbox| inbox.drain(..).collect())
            .unwrap_or_default()
    }

    /// The last `n` lines `id` received since the last read.
    pub fn last_lines(&mut self, id: usize, n: usize) -> Vec<String> {
        let lines = self.lines(id);
        lines[lines.len().saturating_sub(n)..].to_vec()
    }

    pub fn is_connected(&self, id: usize) -> bool {
        self.connected.contains(&id)
    }

    /// The simulated clocks: the wall clock is 1970 plus nothing, since
    /// the quiz never shows it.
    fn clock(&self) -> Clock {
        Clock {
            now: self.now,
            wall: SystemTime::UNIX_EPOCH,
        }
    }

    /// Route the App's outputs like an engine: to one, to all but one, or
    /// to all joined clients (the quiz has one room); a close disconnects.
    fn deliver(&mut self) {
        let outputs: Vec<Output> = self.out.drain().collect();
        for output in outputs {
            match output {
                Output::Send { to, bytes } => {
                    let text = String::from_utf8(bytes.to_vec()).unwrap();
                    let targets: Vec<usize> = match to {
                        Recipients::One(ClientId(id)) => vec![id],
                        Recipients::RoomBut(_, ClientId(id)) => self
                            .connected
                            .iter()
                            .copied()
                            .filter(|&c| c != id)
                            .collect(),
                        Recipients::All | Recipients::Room(_) => {
                            self.connected.iter().copied().collect()
                        }
                    };
                    for id in targets {
                        let inbox = self.inboxes.entry(id).or_default();
                        inbox.extend(text.lines().map(str::to_string));
                    }
                }
                Output::Close { client } => {
                    self.connected.remove(&client.0);
                }
                Output::Enter { client, room } => {
                    panic!("the quiz has one room, yet {client:?} entered {room:?}")
                }
                other => panic!("the quiz has no --cluster, yet {other:?}"),
            }
        }
    }
}
