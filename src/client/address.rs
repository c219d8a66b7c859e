//! The `HOST:PORT` argument of `pollchat connect`. Pure: parsing only, no
//! name lookup (that happens when connecting).
//!
//! Accepted: `HOST:PORT`, a bare `HOST` (port 9009), `[IPv6]:PORT`, `[IPv6]`,
//! and a bare IPv6 address such as `::1`. A host is an IP address or a DNS
//! name (letters, digits, `-`, `_`, `.`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The port used when the argument names none; also the server's default.
pub const DEFAULT_PORT: u16 = 9009;

/// Where to connect: a host (name or IP) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerAddress {
    /// As the user wrote it (without brackets): a name is resolved later.
    pub host: String,
    pub port: u16,
}

impl Default for ServerAddress {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: DEFAULT_PORT,
        }
    }
}

/// Why an address argument was refused; shown as a usage error.
#[derive(Debug, PartialEq, Eq)]
pub enum AddressError {
    EmptyHost,
    BadHost(String),
    BadPort(String),
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressError::EmptyHost => f.write_str("the host is empty (expected HOST:PORT)"),
            AddressError::BadHost(host) => write!(f, "not a host name or IP address: {host:?}"),
            AddressError::BadPort(port) => write!(f, "not a port (1-65535): {port:?}"),
        }
    }
}

impl std::error::Error for AddressError {}

impl FromStr for ServerAddress {
    type Err = AddressError;

    fn from_str(arg: &str) -> Result<Self, Self::Err> {
        let (host, port) = split_host_port(arg)?;
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(AddressError::BadPort(p.into())),
            },
        };
        Ok(Self {
            host: host.into(),
            port,
        })
    }
}

/// `[v6]:port`, `[v6]`, bare `v6`, `host:port` or `host`.
fn split_host_port(arg: &str) -> Result<(&str, Option<&str>), AddressError> {
    if let Some(rest) = arg.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| AddressError::BadHost(arg.into()))?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(AddressError::BadHost(host.into()));
        }
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(AddressError::BadHost(arg.into())),
            },
        };
    }
    // Two or more colons without brackets: only a bare IPv6 address fits.
    if arg.matches(':').count() > 1 {
        return match arg.parse::<Ipv6Addr>() {
            Ok(_) => Ok((arg, None)),
            Err(_) => Err(AddressError::BadHost(arg.into())),
        };
    }
    let (host, port) = match arg.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (arg, None),
    };
    if host.is_empty() {
        return Err(AddressError::EmptyHost);
    }
    let name_like = host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_like {
        return Err(AddressError::BadHost(host.into()));
    }
    Ok((host, port))
}

/// `HOST:PORT`, with brackets around an IPv6 address: how messages name it.
impl fmt::Display for ServerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(String, u16), AddressError> {
        s.parse::<ServerAddress>().map(|a| (a.host, a.port))
    }

    #[test]
    fn host_and_port_forms() {
        assert_eq!(parse("127.0.0.1:9010"), Ok(("127.0.0.1".into(), 9010)));
        assert_eq!(parse("chat.example:7"), Ok(("chat.example".into(), 7)));
        assert_eq!(parse("localhost"), Ok(("localhost".into(), DEFAULT_PORT)));
        assert_eq!(parse("[::1]:9010"), Ok(("::1".into(), 9010)));
        assert_eq!(parse("[::1]"), Ok(("::1".into(), DEFAULT_PORT)));
        assert_eq!(parse("::1"), Ok(("::1".into(), DEFAULT_PORT)));
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert_eq!(parse(":9009"), Err(AddressError::EmptyHost));
        assert_eq!(parse("host:"), Err(AddressError::BadPort("".into())));
        assert_eq!(parse("host:0"), Err(AddressError::BadPort("0".into())));
        assert_eq!(
            parse("host:65536"),
            Err(AddressError::BadPort("65536".into()))
        );
        assert_eq!(
            parse("host:http"),
            Err(AddressError::BadPort("http".into()))
        );
        assert!(matches!(parse("a b"), Err(AddressError::BadHost(_))));
        assert!(matches!(parse("[::1"), Err(AddressError::BadHost(_))));
        assert!(matches!(parse("[::1]9009"), Err(AddressError::BadHost(_))));
        assert!(matches!(parse("[nope]:1"), Err(AddressError::BadHost(_))));
        assert!(matches!(parse("1:2:x"), Err(AddressError::BadHost(_))));
    }

    #[test]
    fn display_brackets_ipv6_only() {
        let show = |s: &str| s.parse::<ServerAddress>().unwrap().to_string();
        assert_eq!(show("::1"), "[::1]:9009");
        assert_eq!(show("localhost"), "localhost:9009");
        assert_eq!(ServerAddress::default().to_string(), "127.0.0.1:9009");
    }
}
