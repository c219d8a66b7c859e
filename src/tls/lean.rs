//! The lean build's TLS: none. [`Acceptor`] cannot be made and [`Session`]
//! has no values (an enum with no variants), so an engine's
//! `Option<Box<Session>>` is always `None` and every TLS branch compiles
//! away, with no `#[cfg]` in the engines.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;

use super::TlsError;

#[derive(Debug)]
pub enum Acceptor {}

impl Acceptor {
    pub fn load(_cert: &Path, _key: &Path) -> Result<Self, TlsError> {
        Err(TlsError::NotBuilt)
    }
    pub fn reload(&self) -> Result<(), TlsError> {
        match *self {}
    }
    pub fn accept(&self) -> Result<Box<Session>, TlsError> {
        match *self {}
    }
}

#[derive(Debug)]
pub enum Session {}

impl Session {
    pub fn is_handshaking(&self) -> bool {
        match *self {}
    }
    pub fn wants_write(&self) -> bool {
        match *self {}
    }
    pub fn receive(&mut self, _src: &mut dyn Read) -> io::Result<usize> {
        match *self {}
    }
    pub fn plaintext(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self {}
    }
    pub fn encrypt(&mut self, _bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match *self {}
    }
    pub fn send(&mut self, _dst: &mut dyn Write) -> io::Result<bool> {
        match *self {}
    }
    pub fn close(&mut self) {
        match *self {}
    }
}

pub struct Pipe<'a, S> {
    pub session: &'a mut Session,
    pub sock: &'a mut S,
}

impl<S> Read for Pipe<'_, S> {
    fn read(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        match *self.session {}
    }
}

impl<S> Write for Pipe<'_, S> {
    fn write(&mut self, _buf: &[u8]) -> io::Result<usize> {
        match *self.session {}
    }
    fn flush(&mut self) -> io::Result<()> {
        match *self.session {}
    }
}
