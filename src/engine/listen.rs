//! The listening socket both engines accept from, with a backlog big enough
//! for a connection storm.
//!
//! `std` and mio's `TcpListener::bind` ask the kernel for a backlog of 128:
//! the 129th connection that arrives before the server accepts has its SYN
//! dropped, and its client waits a full second (then 3, 7, ...) to retry.
//! Redis and nginx ask for 511; pollchat asks for [`BACKLOG`]. The kernel
//! caps it at `net.core.somaxconn` (4096 on current Linux).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use rustix::net::{AddressFamily, SocketFlags, SocketType, sockopt};

use crate::config::Config;
use crate::error::StartError;
use crate::tls::Acceptor;
use crate::web::Front;

/// What a server listens on: the plain port (unless `--tls-only`), the TLS
/// port (with `--tls-port`) and the web port (with `--web-port`), all
/// joining the same room.
pub(crate) struct Listeners {
    pub plain: Option<std::net::TcpListener>,
    pub tls: Option<(std::net::TcpListener, Arc<Acceptor>)>,
    pub web: Option<WebDoor>,
}

/// The web port: its listener, the checks and sizes for its connections,
/// and (https) where their TLS sessions come from.
pub(crate) struct WebDoor {
    pub listener: std::net::TcpListener,
    pub front: Arc<Front>,
    pub tls: Option<Arc<Acceptor>>,
}

/// Bind what `config` asks for. The certificate and key are loaded first, so
/// a bad file stops start-up before any port is taken.
pub(crate) fn bind_all(config: &Config) -> Result<Listeners, StartError> {
    let acceptor = match &config.tls {
        Some(tls) => Some(Arc::new(
            Acceptor::load(&tls.cert, &tls.key).map_err(StartError::Tls)?,
        )),
        None => None,
    };
    let front = match &config.web {
        Some(web) => Some(Arc::new(
            Front::new(web.origins.clone(), config.limits.max_line)
                .map_err(|e| StartError::Config(e.to_string()))?,
        )),
        None => None,
    };
    // https: the same pair as the TLS port (one load, one SIGHUP reload),
    // or, with no TLS port, its own.
    let web_acceptor = match (
        config.web.as_ref().and_then(|w| w.https.as_ref()),
        &config.tls,
    ) {
        (None, _) => None,
        (Some((cert, key)), Some(tls)) if *cert == tls.cert && *key == tls.key => acceptor.clone(),
        (Some((cert, key)), _) => Some(Arc::new(
            Acceptor::load(cert, key).map_err(StartError::Tls)?,
        )),
    };
    let bind = |addr| bind_listener(addr).map_err(|e| StartError::from_bind(addr, e));
    let plain = if config.plain {
        Some(bind(config.addr)?)
    } else {
        None
    };
    let tls = match (&config.tls, acceptor) {
        (Some(tls), Some(acceptor)) => Some((bind(tls.addr)?, acceptor)),
        _ => None,
    };
    let web = match (&config.web, front) {
        (Some(web), Some(front)) => Some(WebDoor {
            listener: bind(web.addr)?,
            front,
            tls: web_acceptor,
        }),
        _ => None,
    };
    if plain.is_none() && tls.is_none() {
        return Err(StartError::Config("--tls-only needs --tls-port".into()));
    }
    Ok(Listeners { plain, tls, web })
}

/// Connections the kernel may hold fully opened, waiting for `accept`.
pub const BACKLOG: i32 = 1024;

/// Bind `addr` and listen with [`BACKLOG`]. Like `std`, it sets
/// `SO_REUSEADDR`, so a restarted server can bind while old connections
/// linger in TIME_WAIT. The socket is non-blocking and close-on-exec.
pub fn bind_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::INET,
        SocketAddr::V6(_) => AddressFamily::INET6,
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = rustix::net::socket_with(family, SocketType::STREAM, flags, None)?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, BACKLOG)?;
    Ok(std::net::TcpListener::from(socket))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpStream;
    use std::time::Duration;

    /// Regression: the listener had the standard 128 backlog, so with the
    /// server busy a connection storm's 129th client waited for a SYN
    /// retry. Here nothing accepts at all: every one of 1,000 handshakes
    /// must still complete in the kernel. (With a backlog of 128 the 130th
    /// connect never completes, however long the timeout.)
    #[test]
    fn a_thousand_handshakes_complete_before_any_accept() {
        let listener = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let clients: Vec<TcpStream> = (0..1000)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(10))
                    .unwrap_or_else(|e| panic!("connection {i} not completed: {e}"))
            })
            .collect();
        assert_eq!(clients.len(), 1000);
    }

    #[test]
    fn a_taken_address_is_reported_in_use() {
        let first = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let err = bind_listener(first.local_addr().unwrap()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
    }
}
