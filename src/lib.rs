//! pollchat: a small chat server built twice — as one `mio::Poll` event loop
//! and as a thread per client — around one sans-IO core.
//!
//! # Layout
//!
//! - [`app`]: the `App` trait, the contract between engines and applications.
//! - [`chat`]: the chat room, an `App`. No sockets, no clock.
//! - [`cluster`]: rooms across processes through Redis (`--cluster`):
//!   the entries, a RESP codec and the sans-IO link.
//! - [`quiz`]: the quiz game, a second `App` on the same engines.
//! - [`framing`]: bytes → lines, with a length cap.
//! - [`sanitize`]: lines → text safe to show on a terminal.
//! - [`tls`]: rustls sessions in front of sockets, certificates, reload.
//! - [`web`]: the browser front: the chat page, HTTP heads, WebSockets.
//! - [`flood`]: the token bucket behind `--rate`/`--burst`.
//! - [`inbound`]: framing + flood control + sanitising for one client.
//! - [`admission`]: `--max-clients` and `--max-per-ip`.
//! - [`protocol`]: the lines engines send on their own (refusals, errors).
//! - [`config`]: addresses, engine choice and limits.
//! - [`error`]: typed start-up errors.
//! - [`logging`]: the stderr logger, which never blocks or panics.
//! - [`engine`]: the I/O. `engine::poll` is the event loop this project is
//!   about; `engine::threaded` is its thread-per-client twin
//!   (`docs/engines.md` compares them).
//! - [`cli`]: the command-line interface used by `main.rs`.
//! - [`client`]: `pollchat connect`, a terminal client built on its own
//!   `mio::Poll` loop over stdin and the socket.
//! - [`bench`]: `pollchat bench`, a fan-out load generator for any line
//!   chat server, or WebSocket one with `--ws` (not used by the server
//!   itself).

#![forbid(unsafe_code)]

pub mod admission;
pub mod app;
pub mod bench;
pub mod chat;
pub mod cli;
pub mod client;
pub mod cluster;
pub mod config;
pub mod engine;
pub mod error;
pub mod flood;
pub mod framing;
pub mod inbound;
pub mod logging;
pub mod protocol;
pub mod quiz;
pub mod sanitize;
pub mod tls;
pub mod web;
