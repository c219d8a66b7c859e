//! The `--cluster` address: `redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]`.

use std::fmt;

/// What `--cluster` said, before the host is resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl {
    pub host: String,
    pub port: u16,
    /// `AUTH [user] password` on every connection, if given.
    pub user: Option<String>,
    pub password: Option<String>,
    /// `SELECT db` on every connection, if not 0.
    pub db: u32,
}

/// Why a `--cluster` value is not a Redis URL; `Display` says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError(String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (expected redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])",
            self.0
        )
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    pub fn parse(url: &str) -> Result<RedisUrl, UrlError> {
        let err = |why: &str| UrlError(format!("bad --cluster URL {url:?}: {why}"));
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| err("it must start with redis://"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| err("the database is not a number"))?,
            ),
            None => (rest, 0),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            // An IPv6 literal: [::1]:6379
            Some(v6) => {
                let (host, after) = v6.split_once(']').ok_or_else(|| err("unclosed ["))?;
                (host, after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        if host.is_empty() {
            return Err(err("no host"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| err("the port is not a number"))?,
            None => 6379,
        };
        if port == 0 {
            return Err(err("port 0"));
        }
        let (user, password) = match auth {
            None => (None, None),
            Some(auth) => match auth.split_once(':') {
                Some((user, pass)) => (
                    (!user.is_empty()).then(|| user.to_string()),
                    Some(pass.to_string()),
                ),
                None => return Err(err("use :PASSWORD@ or USER:PASSWORD@")),
            },
        };
        Ok(RedisUrl {
            host: host.to_string(),
            port,
            user,
            password,
            db,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_password_and_database_are_read() {
        let u = RedisUrl::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.db), ("127.0.0.1", 7000, 0));
        assert_eq!(RedisUrl::parse("redis://localhost").unwrap().port, 6379);
        let u = RedisUrl::parse("redis://:s3cret@h:1/2").unwrap();
        assert_eq!(
            (u.user, u.password.as_deref(), u.db),
            (None, Some("s3cret"), 2)
        );
        let u = RedisUrl::parse("redis://bob:pw@[::1]:6380").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref()),
            ("::1", 6380, Some("bob"))
        );
    }

    #[test]
    fn malformed_urls_say_why() {
        for bad in [
            "http://h",
            "redis://",
            "redis://h:x",
            "redis://h:0",
            "redis://h/db",
            "redis://pw@h",
            "redis://[::1",
        ] {
            let e = RedisUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("bad --cluster URL"), "{bad}: {e}");
        }
    }
}
