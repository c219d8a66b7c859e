//! One question in play: who may answer, what each said, and what it
//! earned. Pure; `now` is passed in.
//!
//! The first answer counts. Points are fixed when the answer arrives: 100
//! for a right answer plus a speed bonus of up to 100, in proportion to the
//! time left.

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

use super::questions::Question;
use crate::app::ClientId;

/// Points for a right answer, before the speed bonus.
pub const RIGHT: u32 = 100;
/// The speed bonus for an answer at the very first instant.
pub const MAX_BONUS: u32 = 100;

/// Why an answer was not taken; `Display` is the text after `! `.
#[derive(Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// Only the first answer counts.
    AlreadyAnswered,
    /// The letter is past the last choice; the player may try again.
    NotAChoice { letter: char, last: char },
    /// The client joined after the question was asked.
    NotPlaying,
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::AlreadyAnswered => f.write_str("you already answered"),
            AnswerError::NotAChoice { letter, last } => {
                write!(f, "{letter} is not one of the choices (a-{last})")
            }
            AnswerError::NotPlaying => f.write_str("you play from the next question"),
        }
    }
}

/// How one player did in a round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Right, with the points earned (bonus included).
    Right(u32),
    /// Wrong: the index of the choice given.
    Wrong(usize),
    NoAnswer,
}

impl Outcome {
    pub fn points(self) -> u32 {
        match self {
            Outcome::Right(points) => points,
            Outcome::Wrong(_) | Outcome::NoAnswer => 0,
        }
    }
}

/// A question being asked.
#[derive(Debug)]
pub struct Round {
    /// Which question (index into the game's list).
    pub index: usize,
    /// Everyone who was here when it was asked, and their answer so far.
    /// Late joiners are not in it: they play from the next question.
    answers: HashMap<ClientId, Option<Outcome>>,
    /// When the question went out: the speed bonus counts from here.
    asked: Instant,
    /// When time is up.
    deadline: Instant,
}

impl Round {
    pub fn new(
        index: usize,
        players: impl IntoIterator<Item = ClientId>,
        now: Instant,
        time: Duration,
    ) -> Self {
        Self {
            index,
            answers: players.into_iter().map(|p| (p, None)).collect(),
            asked: now,
            deadline: now + time,
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Take `letter` as `player`'s answer to `question`; returns the index
    /// of the choice it names.
    pub fn answer(
        &mut self,
        player: ClientId,
        letter: char,
        question: &Question,
        now: Instant,
    ) -> Result<usize, AnswerError> {
        let slot = self
            .answers
            .get_mut(&player)
            .ok_or(AnswerError::NotPlaying)?;
        if slot.is_some() {
            return Err(AnswerError::AlreadyAnswered);
        }
        let choice = question.choice_for(letter).ok_or(AnswerError::NotAChoice {
            letter,
            last: question.last_letter(),
        })?;
        *slot = Some(if choice == question.answer {
            Outcome::Right(RIGHT + speed_bonus(self.asked, self.deadline, now))
        } else {
            Outcome::Wrong(choice)
        });
        Ok(choice)
    }

    /// A player left: the round no longer waits for them.
    pub fn remove(&mut self, player: ClientId) {
        self.answers.remove(&player);
    }

    /// Every player still here has answered (true for a round nobody plays).
    pub fn everyone_answered(&self) -> bool {
        self.answers.values().all(Option::is_some)
    }

    /// Each player's outcome, once the round is over.
    pub fn outcomes(&self) -> impl Iterator<Item = (ClientId, Outcome)> + '_ {
        self.answers
            .iter()
            .map(|(&player, answer)| (player, answer.unwrap_or(Outcome::NoAnswer)))
    }
}

/// Up to [`MAX_BONUS`], in proportion to the time left before `deadline`.
pub fn speed_bonus(asked: Instant, deadline: Instant, now: Instant) -> u32 {
    let total = deadline.saturating_duration_since(asked).as_nanos();
    let left = deadline.saturating_duration_since(now).as_nanos();
    if total == 0 {
        return 0;
    }
    // left <= total, so this is at most MAX_BONUS and fits in u32.
    (u128::from(MAX_BONUS) * left / total) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pie() -> Question {
        Question {
            text: "What is the Italian word for pie?".into(),
            choices: ["Mozzarella", "Pasty", "Patty", "Pizza"]
                .map(String::from)
                .into(),
            answer: 3,
        }
    }

    const TIME: Duration = Duration::from_secs(20);

    #[test]
    fn the_bonus_is_proportional_to_the_time_left() {
        let t0 = Instant::now();
        let end = t0 + TIME;
        assert_eq!(speed_bonus(t0, end, t0), 100);
        assert_eq!(speed_bonus(t0, end, t0 + Duration::from_secs(5)), 75);
        assert_eq!(speed_bonus(t0, end, t0 + Duration::from_secs(10)), 50);
        assert_eq!(speed_bonus(t0, end, end), 0);
        assert_eq!(speed_bonus(t0, end, end + TIME), 0);
        assert_eq!(speed_bonus(t0, t0, t0), 0);
    }

    #[test]
    fn first_answer_counts_and_bad_letters_may_be_retried() {
        let t0 = Instant::now();
        let q = pie();
        let (alice, bob) = (ClientId(1), ClientId(2));
        let mut round = Round::new(0, [alice, bob], t0, TIME);
        assert_eq!(
            round.answer(alice, 'e', &q, t0),
            Err(AnswerError::NotAChoice {
                letter: 'e',
                last: 'd'
            })
        );
        assert!(!round.everyone_answered());
        let at = t0 + Duration::from_secs(4);
        assert_eq!(round.answer(alice, 'D', &q, at), Ok(3));
        assert_eq!(
            round.answer(alice, 'a', &q, at),
            Err(AnswerError::AlreadyAnswered)
        );
        assert_eq!(
            round.answer(ClientId(9), 'd', &q, at),
            Err(AnswerError::NotPlaying)
        );
        round.answer(bob, 'b', &q, at).unwrap();
        assert!(round.everyone_answered());
        let mut outcomes: Vec<_> = round.outcomes().collect();
        outcomes.sort_by_key(|(player, _)| *player);
        assert_eq!(
            outcomes,
            vec![(alice, Outcome::Right(180)), (bob, Outcome::Wrong(1))]
        );
    }

    #[test]
    fn leaving_players_are_not_waited_for_and_silence_scores_nothing() {
        let t0 = Instant::now();
        let q = pie();
        let (alice, bob, carol) = (ClientId(1), ClientId(2), ClientId(3));
        let mut round = Round::new(0, [alice, bob, carol], t0, TIME);
        round.answer(alice, 'd', &q, t0).unwrap();
        round.remove(bob);
        assert!(!round.everyone_answered());
        let outcomes: Vec<_> = round.outcomes().filter(|(p, _)| *p != alice).collect();
        assert_eq!(outcomes, vec![(carol, Outcome::NoAnswer)]);
        assert_eq!(Outcome::NoAnswer.points() + Outcome::Wrong(0).points(), 0);
        round.remove(carol);
        assert!(round.everyone_answered());
    }
}
