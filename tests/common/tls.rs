//! TLS for the tests: throwaway certificates (rcgen) in files, as a user
//! would have them, a server with a TLS listener beside the plain one, and
//! line clients that speak TLS.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use pollchat::app::App;
use pollchat::chat::Chat;
use pollchat::config::{EngineKind, HANDSHAKE_TIMEOUT, Limits, TlsListen};
use pollchat::engine::RunningServer;

use super::{ChildServer, Client, Conn, READ_TIMEOUT};
use std::io::BufReader;

/// A self-signed certificate for `localhost` and 127.0.0.1, written as
/// `cert.pem` and `key.pem` in a directory of its own (removed on drop).
pub struct TestCert {
    pub dir: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate itself, for a client's root store.
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> TestCert {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("pollchat-tls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("make the certificate directory");
        let cert = TestCert {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            der: CertificateDer::from(Vec::new()),
        };
        cert.renew()
    }

    /// A new pair in the same files (what certbot does before a SIGHUP).
    pub fn renew(mut self) -> TestCert {
        let pair = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("generate a certificate");
        std::fs::write(&self.cert, pair.cert.pem()).expect("write cert.pem");
        std::fs::write(&self.key, pair.signing_key.serialize_pem()).expect("write key.pem");
        self.der = pair.cert.der().clone();
        self
    }

    /// The TLS listener's settings, on a free loopback port.
    pub fn listen(&self) -> TlsListen {
        TlsListen {
            addr: "127.0.0.1:0".parse().unwrap(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        }
    }

    /// A client configuration that trusts this certificate only.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.der.clone())
            .expect("trust the test certificate");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Drop for TestCert {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A chat room with a plain listener and a TLS one (see
/// `RunningServer::tls_addr`), both on free loopback ports.
pub fn start_chat_tls(engine: EngineKind, limits: Limits, cert: &TestCert) -> RunningServer {
    start_app_tls(engine, limits, cert.listen(), Chat::new())
}

pub fn start_app_tls<A: App + Send + 'static>(
    engine: EngineKind,
    limits: Limits,
    tls: TlsListen,
    app: A,
) -> RunningServer {
    let mut config = super::test_config(engine, limits);
    config.tls = Some(tls);
    super::start_configured(config, app)
}

/// The TLS port of a server started by [`start_chat_tls`].
pub fn tls_addr(server: &RunningServer) -> SocketAddr {
    server.tls_addr().expect("the server has a TLS listener")
}

impl Client {
    /// Connect to a TLS port, trusting `cert`; the handshake completes with
    /// the first read or write.
    pub fn connect_tls(addr: SocketAddr, cert: &TestCert) -> Client {
        Client::from_tls_stream(
            TcpStream::connect(addr).expect("connect to test server"),
            cert.client_config(),
        )
    }

    /// TLS over a socket connected some other way (a small window).
    pub fn from_tls_stream(stream: TcpStream, config: Arc<ClientConfig>) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let session = ClientConnection::new(config, name).expect("a client session");
        let tls = StreamOwned::new(session, stream.try_clone().unwrap());
        let reader = BufReader::new(Conn::Tls(Box::new(tls)));
        Client { stream, reader }
    }

    /// Connect over TLS, read the welcome line, return (client, name).
    pub fn join_tls(addr: SocketAddr, cert: &TestCert) -> (Client, String) {
        let mut c = Client::connect_tls(addr, cert);
        let name = super::name_in_welcome(&c.line());
        (c, name)
    }

    /// Connect over TLS and take a name.
    pub fn join_tls_as(addr: SocketAddr, cert: &TestCert, name: &str) -> Client {
        let (mut c, _) = Client::join_tls(addr, cert);
        c.send(&format!("/nick {name}"));
        c.expect_suffix(&format!(" is now known as {name}"));
        c
    }
}

impl ChildServer {
    /// [`ChildServer::start`] with a TLS listener too, using `cert`; returns
    /// the TLS port's address with it.
    pub fn start_tls(
        engine: EngineKind,
        cert: &TestCert,
        args: &[&str],
    ) -> (ChildServer, SocketAddr) {
        let port = super::free_port().to_string();
        let (cert_path, key_path) = (
            cert.cert.display().to_string(),
            cert.key.display().to_string(),
        );
        let mut all = vec![
            "--tls-port",
            &port,
            "--tls-cert",
            &cert_path,
            "--tls-key",
            &key_path,
        ];
        all.extend_from_slice(args);
        let server = ChildServer::start(engine, &all);
        (
            server,
            SocketAddr::from(([127, 0, 0, 1], port.parse().unwrap())),
        )
    }
}
