//! The chat service: the first [`App`](crate::app::App). Sans-IO: lines
//! in, outputs out, no sockets and no clock.
//!
//! - `command.rs` parses what a client typed (`/nick`, `/join`, ...).
//! - `names.rs` validates names and keeps them unique ignoring case.
//! - `rooms.rs` is the rooms: names, members, when an empty one goes.
//! - `history.rs` is a room's last lines, replayed to whoever joins.
//! - `moderation.rs` is the operator secret, bans and `/op` guessing.
//! - `cluster.rs` is what a node tells the others with `--cluster`.
//! - `service.rs` is the App: who hears what, and every command.

pub mod cluster;
pub mod command;
pub mod history;
pub mod moderation;
pub mod names;
pub mod rooms;
pub mod service;

pub use service::{Chat, Settings};
