//! The browser front for the tests: a server with a web port beside its
//! line port, and line clients that speak WebSocket (tungstenite's blocking
//! client), so every scenario helper of [`Client`] works for them too: a
//! text frame in is a line, a line sent is a text frame.

use std::io::{self, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};

use tungstenite::protocol::WebSocket;
use tungstenite::{Error as WsError, Message};

use pollchat::app::App;
use pollchat::chat::Chat;
use pollchat::config::{EngineKind, HANDSHAKE_TIMEOUT, Limits, WebListen};
use pollchat::engine::RunningServer;
use pollchat::web::OriginPolicy;

use super::{Client, Conn, READ_TIMEOUT};

/// The web listener's settings: a free loopback port, http.
pub fn web_listen() -> WebListen {
    WebListen {
        addr: "127.0.0.1:0".parse().unwrap(),
        origins: OriginPolicy::default(),
        https: None,
        head_timeout: HANDSHAKE_TIMEOUT,
    }
}

pub fn start_chat_web(engine: EngineKind, limits: Limits) -> RunningServer {
    start_app_web(engine, limits, web_listen(), Chat::new())
}

pub fn start_app_web<A: App + Send + 'static>(
    engine: EngineKind,
    limits: Limits,
    web: WebListen,
    app: A,
) -> RunningServer {
    let mut config = super::test_config(engine, limits);
    config.web = Some(web);
    super::start_configured(config, app)
}

/// The web port of a server started with one.
pub fn web_addr(server: &RunningServer) -> SocketAddr {
    server.web_addr().expect("the server has a web listener")
}

/// A WebSocket client's connection, as lines: what [`Client`] reads from.
pub struct WsLines<S: Read + Write> {
    ws: WebSocket<S>,
    /// The current message and its `\n`, and how much was read of it.
    message: Vec<u8>,
    read: usize,
    /// What was written but not yet ended by `\n`.
    partial: Vec<u8>,
}

impl<S: Read + Write> WsLines<S> {
    pub fn new(ws: WebSocket<S>) -> Self {
        Self {
            ws,
            message: Vec::new(),
            read: 0,
            partial: Vec::new(),
        }
    }
}

impl<S: Read + Write> Read for WsLines<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bounded: each pass returns or consumes a control frame.
        loop {
            if self.read < self.message.len() {
                let n = buf.len().min(self.message.len() - self.read);
                buf[..n].copy_from_slice(&self.message[self.read..self.read + n]);
                self.read += n;
                return Ok(n);
            }
            match self.ws.read() {
                Ok(Message::Text(text)) => {
                    assert!(
                        !text.as_str().contains('\n'),
                        "a text frame carries one line: {text:?}"
                    );
                    self.message.clear();
                    self.message.extend_from_slice(text.as_bytes());
                    self.message.push(b'\n');
                    self.read = 0;
                }
                // The server's close: answered (tungstenite queued the
                // reply), and the end of the lines.
                Ok(Message::Close(_)) => {
                    let _ = self.ws.flush();
                    return Ok(0);
                }
                Ok(Message::Binary(b)) => panic!("the server sent a binary frame: {b:?}"),
                Ok(_) => {}
                Err(WsError::ConnectionClosed | WsError::AlreadyClosed) => return Ok(0),
                Err(WsError::Io(e)) => return Err(e),
                // A hang-up without a close frame: not a clean end.
                Err(e) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, e)),
            }
        }
    }
}

impl<S: Read + Write> Write for WsLines<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).take(end).collect();
            let text = String::from_utf8(line)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            self.ws
                .send(Message::text(text))
                .map_err(io::Error::other)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.ws.flush().map_err(io::Error::other)
    }
}

/// The opening handshake of a WebSocket to `/ws` at `addr` over `stream`
/// (no Origin: not a browser).
pub fn handshake<S: Read + Write>(addr: SocketAddr, stream: S) -> WebSocket<S> {
    let url = format!("ws://{addr}/ws");
    let (ws, response) = tungstenite::client::client(url.as_str(), stream)
        .unwrap_or_else(|e| panic!("WebSocket handshake with {addr} failed: {e}"));
    assert_eq!(response.status(), 101);
    assert!(
        response.headers().get("sec-websocket-extensions").is_none(),
        "no compression is offered"
    );
    ws
}

impl Client {
    /// A WebSocket to the web port at `addr`.
    pub fn connect_ws(addr: SocketAddr) -> Client {
        Client::from_ws_stream(TcpStream::connect(addr).expect("connect to the web port"))
    }

    /// A WebSocket over a socket connected some other way (a small window).
    pub fn from_ws_stream(stream: TcpStream) -> Client {
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let addr = stream.peer_addr().unwrap();
        let ws = handshake(addr, stream.try_clone().unwrap());
        let reader = BufReader::new(Conn::Ws(Box::new(WsLines::new(ws))));
        Client { stream, reader }
    }

    /// Connect over WebSocket, read the welcome, return (client, name).
    pub fn join_ws(addr: SocketAddr) -> (Client, String) {
        let mut c = Client::connect_ws(addr);
        let name = super::name_in_welcome(&c.line());
        (c, name)
    }

    /// Connect over WebSocket and take a name.
    pub fn join_ws_as(addr: SocketAddr, name: &str) -> Client {
        let (mut c, _) = Client::join_ws(addr);
        c.send(&format!("/nick {name}"));
        c.expect_suffix(&format!(" is now known as {name}"));
        c
    }
}

/// One HTTP exchange on a fresh connection: send `request`, read until the
/// server closes; returns the status code and the whole response.
pub fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the web port");
    stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    stream.write_all(request).expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("the server closes after its answer");
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

#[cfg(feature = "tls")]
impl Client {
    /// A WebSocket over TLS (wss) to the web port at `addr`, trusting `cert`.
    pub fn connect_wss(addr: SocketAddr, cert: &super::tls::TestCert) -> Client {
        let stream = TcpStream::connect(addr).expect("connect to the web port");
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let session = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
        let tls = rustls::StreamOwned::new(session, stream.try_clone().unwrap());
        let ws = handshake(addr, tls);
        let reader = BufReader::new(Conn::Wss(Box::new(WsLines::new(ws))));
        Client { stream, reader }
    }
}
