//! Engines: the I/O half of pollchat. An engine owns the sockets and the
//! clock, and drives a sans-IO [`App`] with what happens on them.
//!
//! - `poll.rs`: the star. One thread, one `mio::Poll`, clients in a `Slab`.
//! - `fanout_log.rs`: the room's broadcasts, appended once, read by every
//!   client through a cursor of its own (both engines).
//! - `out_queue.rs`: one client's cursor into that log plus its private
//!   lines, and the one `writev` that sends what it is owed.
//! - `output_limits.rs`: `--log-cap`, `--stall-timeout` and
//!   `--memory-budget`: who is cut off when clients fall behind.
//! - `threaded.rs`: the twin. Blocking sockets, two threads per client.
//! - `connection.rs`: a threaded-engine client's socket, cursor and writer.
//! - `threaded_tls.rs`: a threaded-engine TLS client's session, shared by
//!   its reader and writer behind one lock, and its handshake.
//! - `threaded_web.rs`: a threaded-engine browser's request head and
//!   answer, and its WebSocket, shared by its reader and writer behind one
//!   lock.
//! - `poll_cluster.rs`: `--cluster`: the Redis link's two sockets in the
//!   poll loop (the link itself is sans-IO, in `cluster::link`).
//! - `rules.rs`: what both engines do the same way (`--sendq`,
//!   refusals, accept back-off, close and shutdown grace).
//! - `listen.rs`: the listening socket, with a backlog for connection storms.
//!
//! [`Server`] is the library entry point: bind (port 0 works), ask the
//! address, then `run()` on this thread or `spawn()` on another, and stop it
//! from anywhere with a [`ShutdownHandle`].

mod connection;
mod fanout_log;
pub mod listen;
mod out_queue;
pub(crate) use out_queue::write_once;
mod output_limits;
pub mod poll;
#[cfg(feature = "cluster")]
mod poll_cluster;
#[cfg(feature = "cluster")]
pub use poll_cluster::ClusterConfig;
mod rules;
pub mod threaded;
mod threaded_tls;
mod threaded_web;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

use crate::app::App;
use crate::config::{Config, EngineKind};
use crate::error::StartError;

/// Asks a running server to stop: everyone is told, output is flushed for
/// at most a second, then `run()` returns. Cheap to clone, usable from any
/// thread.
#[derive(Clone)]
pub struct ShutdownHandle {
    /// Set once; the engine checks it whenever it wakes.
    requested: Arc<AtomicBool>,
    /// Wakes the engine if it is blocked waiting for events.
    wake: Arc<dyn Fn() + Send + Sync>,
}

impl ShutdownHandle {
    pub(crate) fn new(wake: Arc<dyn Fn() + Send + Sync>) -> (Self, Arc<AtomicBool>) {
        let requested = Arc::new(AtomicBool::new(false));
        (
            Self {
                requested: requested.clone(),
                wake,
            },
            requested,
        )
    }

    pub fn shutdown(&self) {
        self.requested.store(true, Ordering::SeqCst);
        (self.wake)();
    }
}

/// A bound server, ready to run on one of the engines.
// One exists per server and is moved once into `run()`: the poll variant's
// size (its event buffer and state inline) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
pub enum Server<A> {
    Poll(poll::PollServer<A>),
    Threaded(threaded::ThreadedServer<A>),
}

impl<A: App + Send + 'static> Server<A> {
    /// Bind the listener and prepare the chosen engine. Nothing is accepted
    /// until `run()`.
    pub fn bind(config: Config, app: A) -> Result<Self, StartError> {
        #[cfg(feature = "cluster")]
        if config.engine == EngineKind::Threaded && config.cluster.is_some() {
            return Err(StartError::Config(
                "--cluster needs --engine poll: the threaded engine has no loop to run the Redis link in (docs/engines.md)".into(),
            ));
        }
        match config.engine {
            EngineKind::Poll => Ok(Server::Poll(poll::PollServer::bind(config, app)?)),
            EngineKind::Threaded => Ok(Server::Threaded(threaded::ThreadedServer::bind(
                config, app,
            )?)),
        }
    }

    /// The address actually bound (the real port when asked for port 0):
    /// the plain listener's, or with `--tls-only` the TLS one's.
    pub fn local_addr(&self) -> SocketAddr {
        match self {
            Server::Poll(s) => s.local_addr(),
            Server::Threaded(s) => s.local_addr(),
        }
    }

    /// The TLS listener's address, if there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        match self {
            Server::Poll(s) => s.tls_addr(),
            Server::Threaded(s) => s.tls_addr(),
        }
    }

    /// The web listener's address, if there is one.
    pub fn web_addr(&self) -> Option<SocketAddr> {
        match self {
            Server::Poll(s) => s.web_addr(),
            Server::Threaded(s) => s.web_addr(),
        }
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        match self {
            Server::Poll(s) => s.shutdown_handle(),
            Server::Threaded(s) => s.shutdown_handle(),
        }
    }

    /// Serve until shut down (signal or handle). Errors only if the event
    /// loop itself fails; client errors never end it.
    pub fn run(self) -> io::Result<()> {
        match self {
            Server::Poll(s) => s.run(),
            Server::Threaded(s) => s.run(),
        }
    }

    /// Run on a new thread; for tests and embedding.
    pub fn spawn(self) -> io::Result<RunningServer> {
        let addr = self.local_addr();
        let tls_addr = self.tls_addr();
        let web_addr = self.web_addr();
        let handle = self.shutdown_handle();
        let thread = std::thread::Builder::new()
            .name("pollchat-server".into())
            .spawn(move || self.run())?;
        Ok(RunningServer {
            addr,
            tls_addr,
            web_addr,
            handle,
            thread: Some(thread),
        })
    }
}

/// A server running on its own thread. Dropping it shuts the server down
/// and waits for it, so a test can never leak a running server.
pub struct RunningServer {
    addr: SocketAddr,
    tls_addr: Option<SocketAddr>,
    web_addr: Option<SocketAddr>,
    handle: ShutdownHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    pub fn web_addr(&self) -> Option<SocketAddr> {
        self.web_addr
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.handle.clone()
    }

    /// Shut down and wait; returns the engine's result.
    pub fn stop(mut self) -> io::Result<()> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> io::Result<()> {
        self.handle.shutdown();
        match self.thread.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("server thread panicked"))),
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}
