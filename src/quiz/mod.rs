//! The quiz game: the second [`App`](crate::app::App), on the same engines
//! as the chat room. Sans-IO: lines and `now` in, outputs and the next
//! deadline out.
//!
//! - `questions.rs` reads and checks the TOML question file; the built-in
//!   set (`builtin.toml`) is compiled in.
//! - `round.rs` is one question in play: who may answer, what they said,
//!   and the points each answer earns.
//! - `scoreboard.rs` keeps the game's scores (also for players who left and
//!   may come back) and ranks them, ties included.
//! - `game.rs` is the App: lobby, countdown, rounds, results, game end. Its
//!   chat is an embedded [`Chat`](crate::chat::Chat).
//! - `sim.rs` (tests only) steps the App with simulated clients and a
//!   simulated clock.

pub mod game;
pub mod questions;
pub mod round;
pub mod scoreboard;
#[cfg(test)]
mod sim;

pub use game::{Quiz, Settings};
