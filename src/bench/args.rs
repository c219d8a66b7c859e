//! The flags of `pollchat bench` (a clap `Args` struct, flattened into
//! `cli.rs`) and how they become a [`BenchConfig`].

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

use super::{
    BenchConfig, BenchError, LoadPlan, Nodes, Sources, SwarmPlan, TlsPlan, WS_NOT_BUILT, WsPlan,
};
use crate::client::tls::TlsFlags;

/// Probes per second when neither `--rate` nor `--window` is given.
const DEFAULT_RATE: f64 = 200.0;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Address of the server under test.
    #[arg(long, default_value = "127.0.0.1", conflicts_with = "ws")]
    pub host: IpAddr,
    /// Port of the server under test.
    #[arg(long, default_value_t = 9009, value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "ws")]
    pub port: u16,
    /// A server to connect to instead of --host/--port: IP:PORT or
    /// [IPv6]:PORT. Repeat it for the nodes of one cluster: receivers and
    /// stalled clients are dealt round-robin over them (receiver i on the
    /// (i mod n)th), and the sender goes to the first, so the latency is
    /// the fan-out across nodes.
    // std's SocketAddr parsing: an IP address, as --host takes, so there is
    // no lookup and one default TLS name (`ServerAddress` would take names
    // and a bare host). Defaults do not count as given for clap's
    // conflicts, so only an explicit --host or --port is refused.
    #[arg(long, value_name = "IP:PORT", conflicts_with_all = ["ws", "host", "port"])]
    pub addr: Vec<SocketAddr>,
    /// Receiving clients (the sender is one more).
    #[arg(short = 'n', long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub receivers: u64,
    /// Extra clients that connect and never read.
    #[arg(long, default_value_t = 0)]
    pub stalled: u64,
    /// First line every connection sends (a name prompt's answer); `{i}`
    /// becomes the connection's number.
    #[arg(long, value_name = "TEXT")]
    pub login: Option<String>,
    /// Probes per second (latency at a fixed pace); 0 = unpaced.
    /// Default 200, or unpaced when --window is given.
    #[arg(long, value_name = "MSGS_PER_S")]
    pub rate: Option<f64>,
    /// Most probes not yet delivered to every receiver (saturation).
    #[arg(long, value_name = "W")]
    pub window: Option<usize>,
    /// Bytes per probe line, token included (at least 28).
    #[arg(long, value_name = "BYTES", default_value_t = 32)]
    pub payload: usize,
    /// Stop after sending this many probes (0 = measure connections only).
    #[arg(long)]
    pub messages: Option<u64>,
    /// Stop sending after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub duration: f64,
    /// After the last probe, wait at most this long for deliveries.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub drain: f64,
    /// Connections opened per second (by each process: with --workers,
    /// every worker opens this many).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..))]
    pub connect_rate: u32,
    /// Give up if not everyone is connected after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60.0)]
    pub connect_timeout: f64,
    /// The server's process id: report its RSS, bytes per connection and
    /// idle CPU (from /proc).
    #[arg(long, value_name = "PID")]
    pub server_pid: Option<u32>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Spread the receivers over W worker processes (each is one more
    /// `pollchat bench`, and each has its own open-file limit); this
    /// process sends. Needs --messages; not --window, --ws or --tls.
    #[arg(long, value_name = "W", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub workers: u64,
    /// Set by the coordinator on its workers: which part of the receivers
    /// this process holds.
    #[arg(long, value_name = "K", hide = true)]
    pub worker_part: Option<u64>,
    /// Local address(es) the receivers connect from: A or A-B (every IPv4
    /// address in between), repeatable; dealt evenly over each node. One
    /// address has some 28,000 ephemeral ports; 127.0.0.0/8 has plenty.
    #[arg(long, value_name = "A[-B]", value_parser = Sources::parse_range)]
    pub source: Vec<Vec<IpAddr>>,
    /// After the load, send SIGTERM to this process (the server) and
    /// report how many receivers it told and closed, and how fast.
    #[arg(long, value_name = "PID", conflicts_with = "workers")]
    pub then_stop: Option<u32>,
    #[command(flatten)]
    pub tls: TlsFlags,
    /// With --tls or a wss:// URL: the name the server's certificate must
    /// carry (and the SNI sent), on every node; default: --host (or the
    /// first --addr's) as an IP address, or the URL's host.
    // Checked in `config`, not with clap's `requires`: two flags allow it,
    // and clap's message for a missing one spans lines.
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// A WebSocket chat server instead of a line one: every connection
    /// opens this URL (ws://HOST[:PORT]/PATH, or wss:// over TLS, which
    /// takes --ca, --insecure and --server-name); one text frame is one line.
    #[arg(long, value_name = "URL", value_parser = WsUrl::parse, conflicts_with = "tls")]
    pub ws: Option<WsUrl>,
}

/// A `--ws` URL, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// As given, for the report.
    pub text: String,
    /// `wss://`: TLS under the WebSocket.
    pub secure: bool,
    /// A name or an IP address, without the brackets of an IPv6 one.
    pub host: String,
    /// The URL's, or 80 (`ws`) / 443 (`wss`).
    pub port: u16,
    /// The request target: path and query, `/` at least; no fragment.
    pub path: String,
}

impl WsUrl {
    /// `ws://HOST[:PORT][/PATH][?QUERY]`, or `wss://`. No user info.
    pub fn parse(text: &str) -> Result<WsUrl, String> {
        let usage = "expected ws://HOST[:PORT]/PATH or wss://HOST[:PORT]/PATH";
        let (secure, rest) = match text.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("ws") => (false, rest),
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("wss") => (true, rest),
            _ => return Err(format!("{text:?}: {usage}")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        let path = match target.chars().next() {
            None => "/".to_string(),
            Some('?') => format!("/{target}"),
            Some(_) => target.to_string(),
        };
        if authority.contains('@') {
            return Err(format!("{text:?}: user info in the URL is not supported"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => match v6.split_once(']') {
                Some((host, "")) => (host, None),
                Some((host, port)) => (host, Some(port.strip_prefix(':').unwrap_or(port))),
                None => return Err(format!("{text:?}: unclosed '[' in the host")),
            },
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() {
            return Err(format!("{text:?}: no host; {usage}"));
        }
        let port = match port {
            None => {
                if secure {
                    443
                } else {
                    80
                }
            }
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => return Err(format!("{text:?}: {port:?} is not a port")),
            },
        };
        Ok(WsUrl {
            text: text.to_string(),
            secure,
            host: host.to_string(),
            port,
            path,
        })
    }

    /// The `Host:` header: `host:port`, an IPv6 host in brackets.
    pub fn host_header(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]:{}", self.host, self.port),
            false => format!("{}:{}", self.host, self.port),
        }
    }

    /// The address to connect to. A name with both kinds of address gets
    /// its first IPv4 one (servers often listen on 127.0.0.1 only, and
    /// "localhost" may resolve to ::1 first); else its first.
    fn resolve(&self) -> Result<SocketAddr, BenchError> {
        let addrs: Vec<SocketAddr> = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|e| BenchError::Ws(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| BenchError::Ws(format!("{} has no address", self.host)))
    }
}

impl BenchArgs {
    /// The run these flags ask for. Fails on flags that cannot be used (a
    /// bad `--ca`, `--server-name` without TLS, `--ws` in a lean build, a
    /// `--ws` host that does not resolve): nothing is connected yet.
    pub fn config(&self) -> Result<BenchConfig, BenchError> {
        if self.ws.is_some() && !cfg!(feature = "web") {
            return Err(BenchError::Ws(WS_NOT_BUILT.into()));
        }
        let wss = self.ws.as_ref().is_some_and(|ws| ws.secure);
        if wss && !cfg!(feature = "tls") {
            return Err(BenchError::Ws(
                "wss://: built without TLS support (rebuild with the default features)".into(),
            ));
        }
        if self.server_name.is_some() && !self.tls.tls && !wss {
            return Err(BenchError::Flags(
                "--server-name goes with --tls or a wss:// URL",
            ));
        }
        if self.ws.is_some() && !wss && (self.tls.ca.is_some() || self.tls.insecure) {
            return Err(BenchError::Flags(
                "--ca and --insecure go with --tls or a wss:// URL",
            ));
        }
        // A wss:// URL asks for TLS as --tls does, with the same flags.
        let tls_flags = TlsFlags {
            tls: self.tls.tls || wss,
            ..self.tls.clone()
        };
        let tls = tls_flags
            .client_tls()
            .map_err(BenchError::Tls)?
            .map(|config| TlsPlan {
                config,
                server_name: self.server_name.clone().unwrap_or_else(|| {
                    self.ws
                        .as_ref()
                        .map_or_else(|| self.first_ip().to_string(), |ws| ws.host.clone())
                }),
            });
        let (nodes, ws) = match &self.ws {
            Some(url) => (
                Nodes::one(url.resolve()?),
                Some(WsPlan {
                    url: url.text.clone(),
                    host: url.host_header(),
                    path: url.path.clone(),
                }),
            ),
            None => (
                Nodes::new(self.addr.clone())
                    .unwrap_or_else(|| Nodes::one(SocketAddr::new(self.host, self.port))),
                None,
            ),
        };
        let workers = usize::try_from(self.workers).unwrap_or(1);
        if workers > 1 {
            if self.window.is_some() || self.ws.is_some() || tls.is_some() {
                return Err(BenchError::Flags(
                    "--workers goes with line servers over plain TCP, paced by --rate (not --window, --ws or --tls)",
                ));
            }
            if self.receivers < self.workers {
                return Err(BenchError::Flags(
                    "--workers: more workers than receivers (each worker needs one)",
                ));
            }
            if self.messages.is_none() {
                return Err(BenchError::Flags(
                    "--workers needs --messages: each worker must know how many probes to expect",
                ));
            }
        }
        let receivers = usize::try_from(self.receivers).unwrap_or(usize::MAX);
        let part = self
            .worker_part
            .and_then(|k| usize::try_from(k).ok())
            .filter(|&k| k < workers);
        if self.worker_part.is_some() && part.is_none() {
            return Err(BenchError::Flags("--worker-part must be below --workers"));
        }
        // A worker holds a contiguous block of the receivers; the
        // coordinator (with workers) holds none of them.
        let (first, mine, stalled, sender) = match part {
            Some(k) => {
                let (from, to) = (receivers * k / workers, receivers * (k + 1) / workers);
                (from, to - from, 0, false)
            }
            None if workers > 1 => (receivers, 0, self.stalled, true),
            None => (0, receivers, self.stalled, true),
        };
        let seconds = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        let rate = match (self.rate, self.window) {
            (Some(rate), _) => rate.max(0.0),
            (None, Some(_)) => 0.0,
            (None, None) => DEFAULT_RATE,
        };
        Ok(BenchConfig {
            swarm: SwarmPlan {
                nodes,
                receivers: mine,
                first,
                stalled: usize::try_from(stalled).unwrap_or(usize::MAX),
                sender,
                sources: Sources::new(self.source.concat()),
                login: self.login.clone(),
                connect_rate: self.connect_rate,
                connect_timeout: seconds(self.connect_timeout),
                tls,
                ws,
            },
            load: LoadPlan {
                rate,
                window: self.window.unwrap_or(0),
                payload: self.payload,
                messages: self.messages,
                duration: seconds(self.duration),
                drain: seconds(self.drain),
            },
            server_pid: self.server_pid,
            workers: if part.is_some() { 1 } else { workers },
            relaunch: match (part, workers) {
                (None, 2..) => super::fleet::relaunch_command(),
                _ => Vec::new(),
            },
            all_receivers: receivers,
            part,
            then_stop: self.then_stop,
        })
    }

    /// Without `--ws`, the IP address the sender connects to: the first
    /// `--addr`'s, or `--host`.
    fn first_ip(&self) -> IpAddr {
        self.addr.first().map_or(self.host, SocketAddr::ip)
    }
}

#[cfg(test)]
mod tests {
    use super::WsUrl;

    #[test]
    fn ws_urls_are_taken_apart() {
        let url = WsUrl::parse("ws://127.0.0.1:8080/ws").unwrap();
        assert_eq!(
            (url.secure, url.host.as_str(), url.port, url.path.as_str()),
            (false, "127.0.0.1", 8080, "/ws")
        );
        assert_eq!(url.host_header(), "127.0.0.1:8080");
        let url = WsUrl::parse("WSS://localhost?room=a#top").unwrap();
        assert_eq!(
            (url.secure, url.host.as_str(), url.port, url.path.as_str()),
            (true, "localhost", 443, "/?room=a")
        );
        let url = WsUrl::parse("ws://[::1]:9/chat/ws").unwrap();
        assert_eq!((url.host.as_str(), url.port), ("::1", 9));
        assert_eq!(url.host_header(), "[::1]:9");
        assert_eq!(WsUrl::parse("ws://h").unwrap().port, 80);
    }

    #[test]
    fn bad_ws_urls_are_refused() {
        for bad in [
            "http://h/ws",
            "127.0.0.1:8080",
            "ws:///ws",
            "ws://h:0/",
            "ws://h:http/",
            "ws://u@h/",
            "ws://[::1/",
        ] {
            assert!(WsUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
