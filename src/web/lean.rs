//! The lean build's browser front: none. [`Front`] cannot be made, so no
//! connection ever has a request head or a WebSocket, and every web branch
//! of the engines compiles away with no `#[cfg]` in them.

use std::io::{self, IoSlice, Read, Write};

use super::{NotBuilt, OriginPolicy, Web};

#[derive(Debug)]
pub enum Front {}

impl Front {
    pub fn new(_origins: OriginPolicy, _max_line: usize) -> Result<Self, NotBuilt> {
        Err(NotBuilt)
    }
    pub fn connection(&self) -> Box<Web> {
        match *self {}
    }
    pub fn read_head(&self, _head: &mut RequestHead, _r: &mut impl Read) -> io::Result<Progress> {
        match *self {}
    }
    pub fn upgrade(&self, _already_read: Vec<u8>) -> Box<Web> {
        match *self {}
    }
}

#[derive(Debug)]
pub enum RequestHead {}

pub enum Progress {
    NeedMore,
    Answer(Answer),
}

pub struct Answer {
    pub status: u16,
    pub bytes: Vec<u8>,
    pub upgrade: Option<Vec<u8>>,
    pub request: String,
}

pub enum WebSocket {}

impl WebSocket {
    pub fn wants_write(&self) -> bool {
        match *self {}
    }
    pub fn is_closed(&self) -> bool {
        match *self {}
    }
    pub fn send(&mut self, _io: &mut (impl Read + Write)) -> io::Result<bool> {
        match *self {}
    }
    pub fn ping(&mut self, _io: &mut (impl Read + Write)) -> bool {
        match *self {}
    }
    pub fn last_words(&mut self, _io: &mut (impl Read + Write), _words: &[u8]) {
        match *self {}
    }
    pub fn close_normally(&mut self, _io: &mut (impl Read + Write), _reason: &str) {
        match *self {}
    }
    pub fn read(&mut self, _io: &mut (impl Read + Write), _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub fn write(
        &mut self,
        _io: &mut (impl Read + Write),
        _bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        match *self {}
    }
}
