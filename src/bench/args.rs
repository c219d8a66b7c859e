//! The flags of `pollchat bench` (a clap `Args` struct, flattened into
//! `cli.rs`) and how they become a [`BenchConfig`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use clap::Args;

use super::{BenchConfig, BenchError, LoadPlan, SwarmPlan, TlsPlan};
use crate::client::tls::TlsFlags;

/// Probes per second when neither `--rate` nor `--window` is given.
const DEFAULT_RATE: f64 = 200.0;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Address of the server under test.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// Port of the server under test.
    #[arg(long, default_value_t = 9009, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
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
    /// Bytes per probe line, token included (at least 11).
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
    /// Connections opened per second.
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
    #[command(flatten)]
    pub tls: TlsFlags,
    /// With --tls: the name the server's certificate must carry (and the
    /// SNI sent); default: --host, as an IP address.
    #[arg(long, value_name = "NAME", requires = "tls")]
    pub server_name: Option<String>,
}

impl BenchArgs {
    /// The run these flags ask for. Fails only on TLS flags that cannot be
    /// used (a bad `--ca`, a lean build): nothing is connected yet.
    pub fn config(&self) -> Result<BenchConfig, BenchError> {
        let tls = self
            .tls
            .client_tls()
            .map_err(BenchError::Tls)?
            .map(|config| TlsPlan {
                config,
                server_name: self
                    .server_name
                    .clone()
                    .unwrap_or_else(|| self.host.to_string()),
            });
        let seconds = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
        let rate = match (self.rate, self.window) {
            (Some(rate), _) => rate.max(0.0),
            (None, Some(_)) => 0.0,
            (None, None) => DEFAULT_RATE,
        };
        Ok(BenchConfig {
            swarm: SwarmPlan {
                addr: SocketAddr::new(self.host, self.port),
                receivers: usize::try_from(self.receivers).unwrap_or(usize::MAX),
                stalled: usize::try_from(self.stalled).unwrap_or(usize::MAX),
                login: self.login.clone(),
                connect_rate: self.connect_rate,
                connect_timeout: seconds(self.connect_timeout),
                tls,
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
        })
    }
}
