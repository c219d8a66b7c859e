//! The scores of one game, and how they are ranked and shown. Pure.
//!
//! Scores belong to the game, not to a connection: a player who leaves
//! keeps their points under their name, and gets them back by taking that
//! name again (`/nick`) before the game ends. Ranks are competition style
//! (1, 1, 3): equal scores share a rank and are marked `=`.

use std::cmp::Reverse;
use std::collections::HashMap;

use crate::app::ClientId;

/// Players a tie for first place names before `and N others`: the line
/// goes to everyone, and a tie among thousands must stay one short line.
pub const TIE_NAMES: usize = 5;

/// One game's scores.
#[derive(Debug, Default)]
pub struct Scoreboard {
    /// Points of each player here who has been asked a question.
    points: HashMap<ClientId, u32>,
    /// Points of players who left, by lower-cased name, kept until the game
    /// ends so a rejoin under the same name restores them.
    departed: HashMap<String, u32>,
}

/// One row of the standings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    /// Who this row is, so each player can be told their own rank.
    pub player: ClientId,
    /// 1 for the leaders; equal scores share a rank.
    pub rank: usize,
    /// Someone else has the same rank.
    pub tied: bool,
    pub name: String,
    pub points: u32,
}

impl Scoreboard {
    /// Make sure `player` is on the board (with 0 points if new).
    pub fn enter(&mut self, player: ClientId) {
        self.points.entry(player).or_insert(0);
    }

    pub fn add(&mut self, player: ClientId, points: u32) {
        *self.points.entry(player).or_insert(0) += points;
    }

    pub fn points(&self, player: ClientId) -> u32 {
        self.points.get(&player).copied().unwrap_or(0)
    }

    /// `player`, called `name`, left: keep their points for a rejoin.
    pub fn leave(&mut self, player: ClientId, name: &str) {
        if let Some(points) = self.points.remove(&player) {
            self.departed.insert(name.to_ascii_lowercase(), points);
        }
    }

    /// `player` now goes by `name`. If a player of that name left this game
    /// and `player` has not scored yet, they are taken to be the same
    /// person: the kept points are restored and returned. (Names are the
    /// only identity a plain-TCP game has; a player who already scored
    /// keeps their own points instead, so scores never merge.)
    pub fn rejoin(&mut self, player: ClientId, name: &str) -> Option<u32> {
        if self.points(player) > 0 {
            return None;
        }
        let points = self.departed.remove(&name.to_ascii_lowercase())?;
        self.points.insert(player, points);
        Some(points)
    }

    /// Everyone on the board, best first; equal scores by name.
    /// `name_of` gives each player's current name.
    pub fn standings<'a>(&self, name_of: impl Fn(ClientId) -> Option<&'a str>) -> Vec<Standing> {
        let mut rows: Vec<(u32, &str, ClientId)> = self
            .points
            .iter()
            .filter_map(|(&player, &points)| Some((points, name_of(player)?, player)))
            .collect();
        rows.sort_by_cached_key(|&(points, name, _)| (Reverse(points), name.to_ascii_lowercase()));
        let mut standings: Vec<Standing> = Vec::with_capacity(rows.len());
        for (i, (points, name, player)) in rows.into_iter().enumerate() {
            let rank = match standings.last_mut() {
                Some(above) if above.points == points => {
                    above.tied = true;
                    above.rank
                }
                _ => i + 1,
            };
            standings.push(Standing {
                player,
                rank,
                tied: rank != i + 1,
                name: name.to_string(),
                points,
            });
        }
        standings
    }
}

/// The standings as `* ` lines, names and points in columns, ready to send
/// to everyone at once.
pub fn render(standings: &[Standing]) -> String {
    let width = standings.iter().map(|s| s.name.len()).max().unwrap_or(0);
    let mut text = String::new();
    for s in standings {
        let mark = if s.tied { '=' } else { '.' };
        text.push_str(&format!(
            "*  {:>2}{mark} {:<width$} {:>4}\n",
            s.rank, s.name, s.points
        ));
    }
    text
}

/// Who won: one line naming the winner, or the players sharing first
/// place: all of them, or the first [`TIE_NAMES`] and how many others.
/// `None` if nobody played.
pub fn winner_line(standings: &[Standing]) -> Option<String> {
    let best = standings.first()?;
    let points = best.points;
    // Rank 1 rows come first.
    let leaders = standings.iter().take_while(|s| s.rank == 1).count();
    let named: Vec<&str> = standings[..leaders.min(TIE_NAMES)]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    let others = leaders - named.len();
    Some(match (named.as_slice(), others) {
        ([one], 0) => format!("* The winner is {one} with {points} points!"),
        ([init @ .., last], 0) => format!(
            "* It's a tie! {} and {last} share first place with {points} points.",
            init.join(", ")
        ),
        (named, others) => {
            let noun = if others == 1 { "other" } else { "others" };
            format!(
                "* It's a tie! {} and {others} {noun} share first place with {points} points.",
                named.join(", ")
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(scores: &[(usize, u32)]) -> Scoreboard {
        let mut board = Scoreboard::default();
        for &(id, points) in scores {
            board.add(ClientId(id), points);
        }
        board
    }

    fn name(id: ClientId) -> Option<&'static str> {
        ["", "alice", "bob", "carol", "dave"].get(id.0).copied()
    }

    fn row(id: usize, rank: usize, tied: bool, points: u32) -> Standing {
        Standing {
            player: ClientId(id),
            name: name(ClientId(id)).unwrap().into(),
            rank,
            tied,
            points,
        }
    }

    #[test]
    fn standings_are_sorted_with_competition_ranks_for_ties() {
        let board = board(&[(1, 150), (2, 300), (3, 150), (4, 0)]);
        let standings = board.standings(name);
        assert_eq!(
            standings,
            vec![
                row(2, 1, false, 300),
                row(1, 2, true, 150),
                row(3, 2, true, 150),
                row(4, 4, false, 0),
            ]
        );
        assert_eq!(
            render(&standings),
            "*   1. bob    300\n*   2= alice  150\n*   2= carol  150\n*   4. dave     0\n"
        );
        assert_eq!(
            winner_line(&standings).unwrap(),
            "* The winner is bob with 300 points!"
        );
    }

    #[test]
    fn a_tie_for_first_names_everyone_sharing_it() {
        let standings = board(&[(1, 200), (2, 200), (3, 200), (4, 10)]).standings(name);
        assert_eq!(
            winner_line(&standings).unwrap(),
            "* It's a tie! alice, bob and carol share first place with 200 points."
        );
        assert_eq!(winner_line(&[]), None);
    }

    /// Issue 11: thousands sharing first place is still one short line.
    #[test]
    fn a_tie_among_5000_names_the_first_few_and_counts_the_others() {
        let names: Vec<String> = (0..=5000).map(|i| format!("player{i:04}")).collect();
        let mut board = Scoreboard::default();
        for id in 0..5000 {
            board.add(ClientId(id), 400);
        }
        board.add(ClientId(5000), 10);
        let standings = board.standings(|id| names.get(id.0).map(String::as_str));
        assert_eq!(
            winner_line(&standings).unwrap(),
            "* It's a tie! player0000, player0001, player0002, player0003, player0004 \
             and 4995 others share first place with 400 points."
        );
    }

    #[test]
    fn a_tie_one_past_the_cap_counts_one_other() {
        let names = ["p1", "p2", "p3", "p4", "p5", "p6"];
        let mut board = Scoreboard::default();
        for id in 0..names.len() {
            board.add(ClientId(id), 7);
        }
        let standings = board.standings(|id| names.get(id.0).copied());
        assert_eq!(TIE_NAMES + 1, names.len());
        assert_eq!(
            winner_line(&standings).unwrap(),
            "* It's a tie! p1, p2, p3, p4, p5 and 1 other share first place with 7 points."
        );
    }

    #[test]
    fn a_departed_score_comes_back_under_the_same_name_only_to_a_fresh_player() {
        let mut board = board(&[(1, 170), (2, 90)]);
        board.leave(ClientId(1), "Alice");
        assert_eq!(board.standings(name), vec![row(2, 1, false, 90)]);
        // bob already scored: taking the name does not merge the scores.
        assert_eq!(board.rejoin(ClientId(2), "alice"), None);
        board.enter(ClientId(5));
        assert_eq!(board.rejoin(ClientId(5), "bob"), None);
        assert_eq!(board.rejoin(ClientId(5), "ALICE"), Some(170));
        assert_eq!(board.points(ClientId(5)), 170);
        // Restored once only.
        assert_eq!(board.rejoin(ClientId(3), "alice"), None);
    }
}
