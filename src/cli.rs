//! The command line: `pollchat serve`, `quiz`, `connect` and `bench`.
//! Parsing only; each command calls into the library.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use log::LevelFilter;

use crate::chat::moderation::OpSecret;
use crate::chat::names::{self, NameError};
use crate::client::address::ServerAddress;
use crate::config::{Config, EngineKind, Limits, MAX_IDLE_TIMEOUT_SECS, TlsListen, WebListen};
use crate::error::StartError;
use crate::quiz::Settings;
use crate::web::OriginPolicy;

#[derive(Debug, Parser)]
#[command(
    name = "pollchat",
    version,
    about = "A tiny single-threaded chat server, and friends"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a chat room over plain TCP lines (nc, telnet and ncat work as clients).
    #[command(
        after_help = "Example:\n  pollchat serve --port 9009 --max-clients 500\n  nc 127.0.0.1 9009"
    )]
    Serve(ServeArgs),
    /// Join a chat room from this terminal (or a pipe).
    #[command(
        after_help = "Examples:\n  pollchat connect --name alice\n  pollchat connect [::1]:9009\n  printf 'hello\\n/quit\\n' | pollchat connect chat.example\n  pollchat connect --tls chat.example:9443\n  pollchat connect --tls --ca cert.pem localhost:9443\n\nExit status: 0 input ended or /quit, 1 cannot connect (TLS handshake included) or disconnected, 2 bad arguments."
    )]
    Connect(ConnectArgs),
    /// Run a multiplayer quiz: everyone gets the same question at once, and
    /// faster right answers score more.
    #[command(
        after_help = "Example:\n  pollchat quiz --questions my.toml --question-secs 15\n  nc 127.0.0.1 9010"
    )]
    Quiz(QuizArgs),
    /// Measure a line-based chat server's fan-out: latency, throughput, losses, memory.
    #[command(
        after_help = "Examples:\n  pollchat bench -n 100 --rate 200 --duration 10\n  pollchat bench -n 100 --window 64 --json\n  pollchat bench -n 5000 --messages 0 --server-pid 1234\n  pollchat bench --tls --ca cert.pem --server-name localhost --port 9443\n  pollchat bench --ws ws://127.0.0.1:8080/ws -n 100\n  pollchat bench --ws wss://localhost:8443/ws --ca cert.pem\n  pollchat bench --addr 127.0.0.1:9009 --addr 127.0.0.1:9010 -n 100\n\nExit status: 0 all delivered, 1 something was lost, 2 the run could not be made."
    )]
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 9009, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    #[command(flatten)]
    pub rooms: RoomArgs,
    #[cfg(feature = "cluster")]
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl ServeArgs {
    /// The engine's configuration and the chat's settings, `--cluster`
    /// (if any) resolved into both.
    pub fn configure(&self) -> Result<(Config, crate::chat::Settings), StartError> {
        #[allow(unused_mut)]
        let mut config = self.server.config(self.port);
        #[allow(unused_mut)]
        let mut settings = self.rooms.settings()?;
        #[cfg(feature = "cluster")]
        if let Some(mut cluster) = self.cluster.config()? {
            cluster.link.history = settings.history;
            // A line, its sender's name and the fields around them.
            cluster.link.max_entry = config.limits.max_line + 256;
            settings.cluster = Some(cluster.link.node.clone());
            config.cluster = Some(cluster);
        }
        Ok((config, settings))
    }
}

/// `--cluster`: one chat across several pollchat processes (docs/cluster.md).
#[cfg(feature = "cluster")]
#[derive(Debug, Args)]
pub struct ClusterArgs {
    /// Share rooms with the other nodes on this Redis:
    /// redis://[[USER]:PASSWORD@]HOST[:PORT][/DB].
    #[arg(long, value_name = "URL")]
    pub cluster: Option<String>,
    /// This node's name (1-10 of A-Z a-z 0-9 _), in its users' default
    /// names and in notices; random if not given.
    #[arg(long, value_name = "NAME", requires = "cluster", value_parser = parse_node)]
    pub node: Option<String>,
    /// Fail at start-up unless Redis answers (without it, the node serves
    /// its own clients and keeps trying).
    #[arg(long, requires = "cluster")]
    pub cluster_required: bool,
    /// How long Redis holds a name without a refresh (refreshed every
    /// third of it): a dead node's names are free within this plus a third.
    #[arg(long, value_name = "MS", requires = "cluster", default_value_t = 15_000, value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub cluster_lease_ms: u64,
}

#[cfg(feature = "cluster")]
impl ClusterArgs {
    fn config(&self) -> Result<Option<crate::engine::ClusterConfig>, StartError> {
        use std::net::ToSocketAddrs;
        let Some(url) = &self.cluster else {
            return Ok(None);
        };
        let url = crate::cluster::url::RedisUrl::parse(url)
            .map_err(|e| StartError::Config(e.to_string()))?;
        // Resolved once, here: std's resolver blocks, the loop must not.
        let addr = (url.host.as_str(), url.port)
            .to_socket_addrs()
            .ok()
            .and_then(|mut addrs| addrs.next())
            .ok_or_else(|| StartError::Config(format!("--cluster: cannot resolve {}", url.host)))?;
        let node = self.node.clone().unwrap_or_else(random_node);
        Ok(Some(crate::engine::ClusterConfig {
            addr,
            link: crate::cluster::link::LinkSettings {
                node,
                user: url.user,
                password: url.password,
                db: url.db,
                lease: Duration::from_millis(self.cluster_lease_ms),
                // Set from --history and --max-line by ServeArgs::configure.
                history: 0,
                max_entry: 0,
            },
            required: self.cluster_required,
        }))
    }
}

/// The longest `--node`: a default user name (`user123-NODE`) must stay
/// within the 24 characters of a name.
#[cfg(feature = "cluster")]
pub const MAX_NODE: usize = 10;

#[cfg(feature = "cluster")]
fn parse_node(s: &str) -> Result<String, String> {
    let ok = (1..=MAX_NODE).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("use 1-{MAX_NODE} characters from A-Z a-z 0-9 _"))
    }
}

/// `n` and four hex digits, different on every start.
#[cfg(feature = "cluster")]
fn random_node() -> String {
    format!("n{:04x}", crate::cluster::random_seed() & 0xffff)
}

/// The environment variable an operator secret may come from.
pub const OP_SECRET_ENV: &str = "POLLCHAT_OP_SECRET";

/// Rooms, history and moderation (`serve` only: the quiz has one room).
#[derive(Debug, Args)]
pub struct RoomArgs {
    /// Most rooms at once, #lobby included; past it /join of a new room is
    /// refused.
    #[arg(long, value_name = "N", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub max_rooms: u64,
    /// In a room bigger than this, joins and leaves are summed up every
    /// 30 s instead of announced one by one.
    #[arg(long, value_name = "N", default_value_t = 300)]
    pub quiet_above: u64,
    /// Lines of a room's chat shown to whoever joins it (0: none).
    #[arg(long, value_name = "LINES", default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=1000))]
    pub history: u64,
    /// File holding the operator secret for /op (or set POLLCHAT_OP_SECRET;
    /// never pass the secret itself as a flag: `ps` shows flags).
    #[arg(long, value_name = "FILE")]
    pub op_secret_file: Option<PathBuf>,
}

impl RoomArgs {
    /// The chat service's settings. The secret is read from the file, else
    /// from `POLLCHAT_OP_SECRET`; an unreadable or empty file is an error.
    pub fn settings(&self) -> Result<crate::chat::Settings, StartError> {
        let op_secret = match &self.op_secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    StartError::Config(format!(
                        "cannot read --op-secret-file {}: {e}",
                        path.display()
                    ))
                })?;
                Some(OpSecret::new(&text).ok_or_else(|| {
                    StartError::Config(format!("--op-secret-file {} is empty", path.display()))
                })?)
            }
            None => std::env::var(OP_SECRET_ENV)
                .ok()
                .and_then(|secret| OpSecret::new(&secret)),
        };
        Ok(crate::chat::Settings {
            max_rooms: usize::try_from(self.max_rooms).unwrap_or(usize::MAX),
            quiet_above: usize::try_from(self.quiet_above).unwrap_or(usize::MAX),
            history: usize::try_from(self.history).unwrap_or(usize::MAX),
            op_secret,
            ..crate::chat::Settings::default()
        })
    }
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// Server to join: HOST:PORT, HOST (port 9009) or `[IPv6]:PORT`.
    #[arg(value_name = "HOST:PORT", default_value_t = ServerAddress::default())]
    pub address: ServerAddress,
    /// Take this name right after connecting (sends /nick NAME).
    #[arg(long, value_parser = parse_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub tls: crate::client::tls::TlsFlags,
}

/// `--name` must be a name the server accepts.
fn parse_name(name: &str) -> Result<String, String> {
    if names::is_valid(name) {
        Ok(name.to_string())
    } else {
        Err(NameError::Invalid.to_string())
    }
}

#[derive(Debug, Args)]
pub struct QuizArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 9010, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// Question file (TOML, see the README); default: the built-in set.
    #[arg(long, value_name = "FILE.toml")]
    pub questions: Option<PathBuf>,
    /// Seconds allowed per question.
    #[arg(long, value_name = "SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub question_secs: u64,
    /// Players present before the lobby countdown starts.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
    pub min_players: u64,
    #[command(flatten)]
    pub server: ServerArgs,
}

impl QuizArgs {
    /// How the game is paced, from these flags.
    pub fn settings(&self) -> Settings {
        Settings::new(
            Duration::from_secs(self.question_secs),
            usize::try_from(self.min_players).unwrap_or(usize::MAX),
        )
    }
}

/// Flags shared by every server command (`serve`, `quiz`).
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Address to listen on (IPv4 or IPv6, e.g. ::1).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// I/O model: one event loop, or a reader and a writer thread per client.
    #[arg(long, value_enum, default_value_t = EngineKind::Poll)]
    pub engine: EngineKind,
    /// Most clients at once (lowered to fit the open-file limit and, for
    /// the threaded engine, vm.max_map_count).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_clients: u64,
    /// Longest line accepted, in bytes; longer lines are dropped with an error.
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub max_line: u64,
    /// Bytes of replies and errors waiting for one client before it is
    /// disconnected as not reading (broadcasts wait in the shared log).
    #[arg(long, default_value_t = 256 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub sendq: u64,
    /// Bytes of broadcasts kept for clients that are behind; a client
    /// further behind is disconnected as too slow.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub log_cap: u64,
    /// Seconds a client owed output may make no progress before it is
    /// disconnected as too slow.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub stall_timeout: u64,
    /// Bytes all waiting output may take (the log plus every client's own
    /// queue); past it the client furthest behind is disconnected. Worst
    /// case at the defaults: this, plus about 200 bytes per idle client.
    #[arg(long, default_value_t = 64 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub memory_budget: u64,
    /// Lines per second per client before reading pauses (0 = off).
    #[arg(long, default_value_t = 10)]
    pub rate: u32,
    /// Lines a client may send back to back before --rate applies.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub burst: u32,
    /// Most connections from one address; loopback is exempt (0 = off).
    #[arg(long, default_value_t = 32)]
    pub max_per_ip: u32,
    /// Disconnect clients silent for this many seconds (1 to 315360000, ten
    /// years; default: never).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=MAX_IDLE_TIMEOUT_SECS))]
    pub idle_timeout: Option<u64>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub web: WebArgs,
    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Less log output (-q warnings only, -qq errors only).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub quiet: u8,
}

/// The TLS listener's flags, shared by `serve` and `quiz`. They exist in the
/// lean build too, which then refuses them at start-up.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Also listen for TLS clients on this port (same room). Needs
    /// --tls-cert and --tls-key; SIGHUP reloads both files.
    #[arg(long, value_name = "PORT", requires_all = ["tls_cert", "tls_key"], value_parser = clap::value_parser!(u16).range(1..))]
    pub tls_port: Option<u16>,
    /// Certificate chain for --tls-port and --web-port (PEM, as certbot or
    /// `openssl req` write it).
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls_key",
        requires = "uses_certificate"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key for --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Serve TLS only: no plain listener.
    #[arg(long, requires = "tls_port")]
    pub tls_only: bool,
    /// Seconds a TLS client may take to finish its handshake (and a web
    /// client to send its request) before it is disconnected.
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub handshake_timeout: u64,
}

/// The web listener's flags, shared by `serve` and `quiz`. They exist in
/// the lean build too, which then refuses them at start-up.
#[derive(Debug, Args)]
#[group(id = "uses_certificate", multiple = true, args = ["tls_port", "web_port"])]
pub struct WebArgs {
    /// Also serve the chat page and its WebSocket (same room) on this port:
    /// https and wss with --tls-cert and --tls-key, else http and ws.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub web_port: Option<u16>,
    /// An origin allowed to open the chat's WebSocket besides the page's
    /// own, e.g. https://chat.example.org when a proxy serves it under
    /// another name; `*` allows any. Repeatable.
    #[arg(long, value_name = "ORIGIN", requires = "web_port")]
    pub web_origin: Vec<String>,
}

impl WebArgs {
    fn listen(&self, host: IpAddr, tls: &TlsArgs) -> Option<WebListen> {
        Some(WebListen {
            addr: SocketAddr::new(host, self.web_port?),
            origins: OriginPolicy {
                allowed: self.web_origin.clone(),
            },
            https: tls.tls_cert.clone().zip(tls.tls_key.clone()),
            head_timeout: Duration::from_secs(tls.handshake_timeout),
        })
    }
}

impl TlsArgs {
    fn listen(&self, host: IpAddr) -> Option<TlsListen> {
        Some(TlsListen {
            addr: SocketAddr::new(host, self.tls_port?),
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            handshake_timeout: Duration::from_secs(self.handshake_timeout),
        })
    }
}

impl ServerArgs {
    /// The engine configuration for these flags on `port`.
    pub fn config(&self, port: u16) -> Config {
        Config {
            addr: SocketAddr::new(self.host, port),
            plain: !self.tls.tls_only,
            tls: self.tls.listen(self.host),
            web: self.web.listen(self.host, &self.tls),
            engine: self.engine,
            limits: Limits {
                max_clients: usize::try_from(self.max_clients).unwrap_or(usize::MAX),
                max_line: usize::try_from(self.max_line).unwrap_or(usize::MAX),
                sendq: usize::try_from(self.sendq).unwrap_or(usize::MAX),
                log_cap: usize::try_from(self.log_cap).unwrap_or(usize::MAX),
                stall_timeout: Duration::from_secs(self.stall_timeout),
                memory_budget: usize::try_from(self.memory_budget).unwrap_or(usize::MAX),
                rate: self.rate,
                burst: self.burst,
                max_per_ip: self.max_per_ip,
                per_ip_exempts_loopback: true,
                idle_timeout: self.idle_timeout.map(Duration::from_secs),
            },
            handle_signals: true,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }

    pub fn log_level(&self) -> LevelFilter {
        match (self.verbose, self.quiet) {
            (0, 0) => LevelFilter::Info,
            (1, _) => LevelFilter::Debug,
            (v, _) if v >= 2 => LevelFilter::Trace,
            (_, 1) => LevelFilter::Warn,
            _ => LevelFilter::Error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn idle_timeout(secs: u64) -> Result<Option<Duration>, clap::Error> {
        let cli = Cli::try_parse_from(["pollchat", "serve", "--idle-timeout", &secs.to_string()])?;
        let Command::Serve(args) = cli.command else {
            unreachable!("parsed as serve")
        };
        Ok(args.server.config(args.port).limits.idle_timeout)
    }

    /// The longest accepted `--idle-timeout` is one the engines can add to
    /// the clock (`Instant + Duration` panics where it cannot); one second
    /// more, or 0, is a usage error.
    #[test]
    fn idle_timeout_range_fits_the_clock() {
        let longest = idle_timeout(MAX_IDLE_TIMEOUT_SECS)
            .expect("the maximum parses")
            .expect("and is set");
        assert_eq!(longest, Duration::from_secs(315_360_000));
        assert!(Instant::now().checked_add(longest).is_some());
        assert!(idle_timeout(1).is_ok());
        assert!(idle_timeout(0).is_err());
        assert!(idle_timeout(MAX_IDLE_TIMEOUT_SECS + 1).is_err());
        assert!(idle_timeout(u64::MAX).is_err());
    }
}
