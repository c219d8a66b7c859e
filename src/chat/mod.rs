//! The chat room: the first [`App`](crate::app::App). Sans-IO: lines in,
//! outputs out, no sockets and no clock.
//!
//! - `command.rs` parses what a client typed (`/nick`, `/who`, ...).
//! - `names.rs` validates names and keeps them unique ignoring case.
//! - `room.rs` is the room itself: who is here and who hears what.

pub mod command;
pub mod names;
pub mod room;

pub use room::ChatRoom;
