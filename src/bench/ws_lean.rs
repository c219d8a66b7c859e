//! The lean build's `bench --ws`: none. [`WsConn`] has no values (an enum
//! with no variants), so a connection's `Option<Box<WsConn>>` is always
//! `None` and the swarm's WebSocket arms compile away without `#[cfg]`.
//! `--ws` itself is refused before anything connects.

use std::io;

use super::swarm::WsPlan;
use super::{BenchError, WS_NOT_BUILT};

pub enum WsConn {}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub bytes: usize,
    pub closed: bool,
}

impl WsConn {
    pub fn start(_plan: &WsPlan) -> Result<Box<WsConn>, BenchError> {
        Err(BenchError::Ws(WS_NOT_BUILT.into()))
    }
    pub fn is_upgrading(&self) -> bool {
        match *self {}
    }
    pub fn wants_flush(&self) -> bool {
        match *self {}
    }
    pub fn flush(&mut self, _link: &mut impl io::Write) -> io::Result<bool> {
        match *self {}
    }
    pub fn receive_head(&mut self, _bytes: &[u8]) -> Result<(), String> {
        match *self {}
    }
    pub fn send_line<S: io::Read + io::Write>(
        &mut self,
        _link: &mut S,
        _line: &[u8],
    ) -> io::Result<bool> {
        match *self {}
    }
    pub fn read_lines<S: io::Read + io::Write>(
        &mut self,
        _link: &mut S,
        _scratch: &mut [u8],
        _on_line: impl FnMut(&[u8]),
    ) -> Batch {
        match *self {}
    }
}
