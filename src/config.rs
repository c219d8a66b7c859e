//! Server settings shared by both engines: the address, which engine, and
//! the per-client limits. Built by `cli.rs` from flags, or by tests directly.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::web::OriginPolicy;

/// Which I/O model drives the App.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineKind {
    /// One thread, one `mio::Poll`, every socket non-blocking.
    Poll,
    /// Blocking sockets and threads per client, the tutorials' model.
    Threaded,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Poll => "poll",
            EngineKind::Threaded => "threaded",
        })
    }
}

/// The limits that keep one client from hurting the others.
/// The README's flag table says what each one does for a client, and what
/// the defaults cost at worst.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most clients at once; new ones get `! server full`.
    pub max_clients: usize,
    /// Longest accepted line in bytes, like the tutorial's `recv(2048)`.
    pub max_line: usize,
    /// Most bytes of its own (replies, errors) one client may have waiting
    /// before it is cut off as not reading. Broadcasts are not counted here:
    /// they wait in the shared log.
    pub sendq: usize,
    /// Most bytes the room's fan-out log keeps for clients that are behind
    /// (Redis's hard `client-output-buffer-limit`, shared by everyone). A
    /// client that falls further behind is cut off as too slow.
    pub log_cap: usize,
    /// A client owed output that makes no progress at all for this long is
    /// cut off as too slow (Redis's soft limit, held over time).
    pub stall_timeout: Duration,
    /// Most bytes all output waiting for clients may take, the log and every
    /// private queue together (Redis 7's `maxmemory-clients`). Past it, the
    /// client furthest behind goes first.
    pub memory_budget: usize,
    /// Lines per second per client (0 = no flood control).
    pub rate: u32,
    /// Lines a client may send back to back before `rate` applies.
    pub burst: u32,
    /// Most connections from one address (0 = no limit).
    pub max_per_ip: u32,
    /// Loopback clients are not counted against `max_per_ip` (local tools,
    /// benchmarks). Always true from the command line; tests turn it off to
    /// exercise the limit without leaving loopback.
    pub per_ip_exempts_loopback: bool,
    /// Close clients silent for this long (`None` = never).
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_clients: 10_000,
            max_line: 2048,
            sendq: 256 * 1024,
            log_cap: 8 * 1024 * 1024,
            stall_timeout: Duration::from_secs(30),
            memory_budget: 64 * 1024 * 1024,
            rate: 10,
            burst: 50,
            max_per_ip: 32,
            per_ip_exempts_loopback: true,
            idle_timeout: None,
        }
    }
}

/// The longest `--idle-timeout`, in seconds: ten years of 365 days. The
/// engines add the timeout (or a tenth of it) to `Instant::now()`, which
/// panics past what the clock can represent: `--idle-timeout
/// 18446744073709551615` killed each threaded reader as its client joined.
/// Ten years is far inside that, and longer than any server stays up.
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 10 * 365 * 24 * 60 * 60;

/// A second listener whose clients speak TLS (`--tls-port`), joining the
/// same room as the plain ones.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsListen {
    pub addr: SocketAddr,
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// A connection that has not finished its handshake by then is closed
    /// (the slowloris defence); until then it holds a slot, not a seat in
    /// the room.
    pub handshake_timeout: Duration,
}

/// The web port (`--web-port`): the chat page, and on `/ws` a WebSocket
/// into the same room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebListen {
    pub addr: SocketAddr,
    /// Who may open the WebSocket from a browser page, besides the page
    /// itself (`--web-origin`).
    pub origins: OriginPolicy,
    /// Serve https and wss with this certificate chain and key (PEM), the
    /// files `--tls-cert` and `--tls-key` name.
    pub https: Option<(PathBuf, PathBuf)>,
    /// A connection that has not sent its whole request head by then (its
    /// TLS handshake included) is closed, like a slow TLS handshake.
    pub head_timeout: Duration,
}

/// The default `--handshake-timeout`.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything an engine needs to start.
#[derive(Clone, Debug)]
pub struct Config {
    /// The plain listener's address.
    pub addr: SocketAddr,
    /// Open the plain listener (`--tls-only` turns it off).
    pub plain: bool,
    /// The TLS listener, if any.
    pub tls: Option<TlsListen>,
    /// The web listener, if any.
    pub web: Option<WebListen>,
    pub engine: EngineKind,
    pub limits: Limits,
    /// Turn SIGINT/SIGTERM into a graceful shutdown. The binary sets this;
    /// in-process tests leave it off and use a `ShutdownHandle`.
    pub handle_signals: bool,
    /// `--cluster`: share the rooms with other nodes through Redis (poll
    /// engine only).
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::engine::ClusterConfig>,
}

impl Config {
    /// Defaults on `addr` (tests pass `127.0.0.1:0`).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            plain: true,
            tls: None,
            web: None,
            engine: EngineKind::Poll,
            limits: Limits::default(),
            handle_signals: false,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

/// File descriptors kept back for the listener, the poll instance, logging
/// and the accept-refusal path, so `max_clients` can always be honoured.
pub const FD_RESERVE: usize = 32;

/// The soft `RLIMIT_NOFILE` (`None`: unlimited).
pub fn fd_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    usize::try_from(limit.current?).ok()
}

/// Raise the soft `RLIMIT_NOFILE` to the hard one, as a server should: the
/// soft limit (often 1,024) is a default for programs that never need
/// more, not a decision about this one. Returns `(before, after)` when it
/// changed it.
pub fn raise_fd_limit() -> std::io::Result<Option<(u64, u64)>> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let (Some(soft), Some(hard)) = (limit.current, limit.maximum) else {
        return Ok(None); // unlimited already, or nothing to raise to
    };
    if soft >= hard {
        return Ok(None);
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    )?;
    Ok(Some((soft, hard)))
}

/// What sets how many clients a server admits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientCap {
    /// `--max-clients`, which the open-file limit can honour.
    Flag(usize),
    /// The open-file limit (`limit` files, minus [`FD_RESERVE`]); `hard`
    /// when it is the hard limit, which only the administrator can raise.
    OpenFiles {
        clients: usize,
        limit: usize,
        hard: bool,
    },
    /// The threaded engine's threads: each takes [`MAPS_PER_THREAD`]
    /// memory mappings, and a process may have `vm.max_map_count`. Past
    /// that, starting a thread fails, or worse, a thread that did start
    /// cannot set up its signal stack and the runtime aborts the process.
    Threads {
        clients: usize,
        max_map_count: usize,
    },
}

impl ClientCap {
    pub fn clients(self) -> usize {
        match self {
            ClientCap::Flag(n) => n,
            ClientCap::OpenFiles { clients, .. } => clients,
            ClientCap::Threads { clients, .. } => clients,
        }
    }
}

impl std::fmt::Display for ClientCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ClientCap::Flag(n) => write!(f, "at most {n} clients, set by --max-clients"),
            ClientCap::OpenFiles {
                clients,
                limit,
                hard,
            } => write!(
                f,
                "at most {clients} clients, capped by the {} open-file limit of {limit}: see \"Raising the limits\" in the README",
                if hard { "hard" } else { "soft" }
            ),
            ClientCap::Threads {
                clients,
                max_map_count,
            } => write!(
                f,
                "at most {clients} clients, capped by vm.max_map_count of {max_map_count} (two threads a client, {MAPS_PER_THREAD} mappings a thread): see \"Raising the limits\" in the README"
            ),
        }
    }
}

/// Memory mappings one thread takes: its stack and guard page, and the
/// signal stack Rust's runtime gives it, with a guard page of its own.
pub const MAPS_PER_THREAD: usize = 4;
/// The threaded engine's threads per client: a reader and a writer.
pub const THREADS_PER_CLIENT: usize = 2;
/// Mappings kept back for the heap, the libraries and the engine's own
/// threads (accept, timer, signals), well above the ~50 they take.
const MAP_RESERVE: usize = 1024;

/// `vm.max_map_count`: the most memory mappings one process may have.
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// What caps `engine`'s clients: [`client_cap`], and for the threaded
/// engine also the mappings its threads take.
pub fn engine_client_cap(requested: usize, engine: EngineKind) -> ClientCap {
    let cap = client_cap(requested);
    match (engine, max_map_count()) {
        (EngineKind::Threaded, Some(max_map_count)) => {
            let clients = thread_room(max_map_count);
            if clients < cap.clients() {
                ClientCap::Threads {
                    clients,
                    max_map_count,
                }
            } else {
                cap
            }
        }
        _ => cap,
    }
}

/// Clients whose threads fit in `max_map_count` mappings.
fn thread_room(max_map_count: usize) -> usize {
    (max_map_count.saturating_sub(MAP_RESERVE) / (MAPS_PER_THREAD * THREADS_PER_CLIENT)).max(1)
}

/// What caps `requested` clients: the flag, or the open-file limit.
pub fn client_cap(requested: usize) -> ClientCap {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let Some(fds) = limit.current.and_then(|n| usize::try_from(n).ok()) else {
        return ClientCap::Flag(requested);
    };
    let room = fds.saturating_sub(FD_RESERVE).max(1);
    if requested <= room {
        return ClientCap::Flag(requested);
    }
    let hard = limit.maximum == limit.current;
    ClientCap::OpenFiles {
        clients: room,
        limit: fds,
        hard,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux's default 65,530 mappings hold some 8,000 clients' threads;
    /// the poll engine is not capped by them.
    #[test]
    fn the_threaded_engine_fits_its_threads_in_the_mappings() {
        assert_eq!(thread_room(65_530), (65_530 - 1024) / 8);
        assert_eq!(thread_room(10), 1);
        assert_eq!(engine_client_cap(5, EngineKind::Poll), client_cap(5));
        if let Some(maps) = max_map_count() {
            let big = engine_client_cap(usize::MAX / 2, EngineKind::Threaded);
            assert!(big.clients() <= thread_room(maps), "{big}");
        }
    }
}
