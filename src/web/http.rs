//! The web port's HTTP side: read one request head (at most [`MAX_HEAD`]
//! bytes), parse it with `httparse`, and answer it: the page, a WebSocket
//! upgrade for `/ws`, or an error. Sans-IO apart from [`RequestHead::read_from`],
//! which only reads from whatever it is given (the socket, or the TLS
//! session in front of it).
//!
//! Every connection asks one thing and is closed after the answer
//! (`Connection: close`), unless it becomes a WebSocket: there is no
//! keep-alive to police, and no file on disk behind any path.

use std::io::{self, Read};

use super::{OriginPolicy, page};

/// Longest request head accepted; longer gets 431. Browsers send well under
/// 2 KiB (cookies aside, and this server sets none).
pub const MAX_HEAD: usize = 8 * 1024;

/// Headers parsed at most; more gets 431 too.
const MAX_HEADERS: usize = 32;

/// Read at a time while the head is incomplete.
const READ_STEP: usize = 1024;

/// Sent with every answer but the upgrade. The page is three files from
/// this server, so nothing else may load, run or frame it; its WebSocket
/// is same-origin (`'self'` covers ws: and wss: to this host).
pub const SECURITY_HEADERS: &str = "X-Content-Type-Options: nosniff\r\n\
Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; \
connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
frame-ancestors 'none'\r\n\
Referrer-Policy: no-referrer\r\n";

/// A request head being read.
#[derive(Debug, Default)]
pub struct RequestHead {
    /// What arrived so far: grows to at most `MAX_HEAD + READ_STEP`.
    buf: Vec<u8>,
}

/// What reading got to.
#[derive(Debug)]
pub enum Progress {
    /// The head is not complete yet: read again when readable.
    NeedMore,
    /// The head is complete (or hopeless): send this.
    Answer(Answer),
}

/// The answer to one request.
#[derive(Debug)]
pub struct Answer {
    /// Status code, for logs and tests.
    pub status: u16,
    /// Head and body, ready to write.
    pub bytes: Vec<u8>,
    /// `Some` for a 101: what followed the head (the first WebSocket
    /// frames, if the client did not wait). The connection is a WebSocket
    /// from here on; otherwise it closes once `bytes` are sent.
    pub upgrade: Option<Vec<u8>>,
    /// What was asked, for the log line (`GET /ws`).
    pub request: String,
}

impl RequestHead {
    pub fn new() -> Self {
        Self::default()
    }

    /// Read what the peer has sent, until `WouldBlock` or a complete head,
    /// and answer it once it is complete. End of stream before that is
    /// `UnexpectedEof` (nothing to answer); other errors are the socket's.
    pub fn read_from(&mut self, r: &mut impl Read, origins: &OriginPolicy) -> io::Result<Progress> {
        // Bounded: each pass adds up to READ_STEP bytes, and past MAX_HEAD
        // the head is answered (431); `Interrupted` (a signal, or the TLS
        // session's fairness cap) is retried a bounded number of times.
        let mut interrupted = 0;
        loop {
            let have = self.buf.len();
            self.buf.resize(have + READ_STEP, 0);
            let read = r.read(&mut self.buf[have..]);
            self.buf.truncate(have + *read.as_ref().unwrap_or(&0));
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => {
                    if let Some(answer) = answer(&self.buf, origins) {
                        return Ok(Progress::Answer(answer));
                    }
                }
                // Only a peer sending records with nothing in them keeps
                // this up; it waits for its next bytes, or its deadline.
                Err(e) if e.kind() == io::ErrorKind::Interrupted && interrupted < 16 => {
                    interrupted += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Progress::NeedMore),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(Progress::NeedMore),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The answer to the head in `buf`, or `None` if it is still incomplete.
pub fn answer(buf: &[u8], origins: &OriginPolicy) -> Option<Answer> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => {
            Some(route(&req, &buf[len..], origins))
        }
        Ok(httparse::Status::Complete(_)) => Some(error(431, "request head too large", "")),
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => None,
        Ok(httparse::Status::Partial) => Some(error(431, "request head too large", "")),
        Err(httparse::Error::TooManyHeaders) => Some(error(431, "too many headers", "")),
        Err(e) => Some(error(400, &format!("malformed request: {e}"), "")),
    }
}

/// What a complete request gets.
fn route(req: &httparse::Request, tail: &[u8], origins: &OriginPolicy) -> Answer {
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let mut answer = match (method, path) {
        ("GET", "/ws") => upgrade(req, tail, origins),
        (_, "/ws") => error(405, "the WebSocket is opened with GET", "Allow: GET\r\n"),
        ("GET" | "HEAD", _) => match page::asset(path) {
            Some((content_type, body)) => ok(content_type, body, method == "HEAD"),
            None => error(404, "not found", ""),
        },
        _ => error(405, "only GET and HEAD are served", "Allow: GET, HEAD\r\n"),
    };
    // For the log: the method and path only, cut short and made printable
    // (httparse has already refused control bytes in either).
    answer.request = format!("{method} {}", crate::sanitize::cut(path, 100));
    answer
}

/// `GET /ws`: a WebSocket handshake (RFC 6455 section 4.2) if every header
/// holds, else a 4xx that says which one did not.
fn upgrade(req: &httparse::Request, tail: &[u8], origins: &OriginPolicy) -> Answer {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        return error(
            426,
            "this is the chat's WebSocket: open / in a browser",
            "Upgrade: websocket\r\n",
        );
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return error(
            426,
            "unsupported WebSocket version (this server speaks 13)",
            "Sec-WebSocket-Version: 13\r\n",
        );
    }
    let Some(key) = header("Sec-WebSocket-Key").filter(|k| is_websocket_key(k)) else {
        return error(400, "missing or malformed Sec-WebSocket-Key", "");
    };
    // An Origin that is not text is no origin of ours.
    let origin_sent = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("Origin"));
    if origin_sent
        && !header("Origin").is_some_and(|origin| origin_allowed(origin, header("Host"), origins))
    {
        return error(403, "this origin may not open the chat", "");
    }
    let accept = accept_key(key);
    Answer {
        status: 101,
        bytes: format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes(),
        upgrade: Some(tail.to_vec()),
        request: String::new(),
    }
}

/// `Sec-WebSocket-Accept` for a client's key (RFC 6455 section 4.2.2): the
/// base64 of the SHA-1 of the key and a fixed GUID.
pub fn accept_key(key: &str) -> String {
    use sha1::Digest;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = sha1::Sha1::new()
        .chain_update(key.as_bytes())
        .chain_update(GUID)
        .finalize();
    base64(&digest)
}

/// Standard base64 with padding (RFC 4648): Sec-WebSocket-Accept here,
/// and the bench's Sec-WebSocket-Key.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A key is the base64 of 16 bytes: 22 characters, the last of which
/// carries only 2 bits, then `==`.
fn is_websocket_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b.ends_with(b"==")
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        && matches!(b[21], b'A' | b'Q' | b'g' | b'w')
}

/// Browsers send `Origin` with every WebSocket: a page of this server's
/// own (its host and port equal to `Host`) may connect, as may each
/// `--web-origin`. Tools that send no `Origin` are not browsers, and
/// cross-site WebSocket hijacking needs one; they are let in.
fn origin_allowed(origin: &str, host: Option<&str>, policy: &OriginPolicy) -> bool {
    let origin = origin.trim_end_matches('/');
    let own = origin
        .split_once("://")
        .is_some_and(|(_, authority)| host.is_some_and(|h| h.eq_ignore_ascii_case(authority)));
    own || policy
        .allowed
        .iter()
        .any(|a| a == "*" || a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// 200 with a page asset.
fn ok(content_type: &str, body: &[u8], head_only: bool) -> Answer {
    respond(
        200,
        content_type,
        "Cache-Control: no-cache\r\n",
        body,
        head_only,
    )
}

/// An error, with a one-line text body that says what was wrong.
fn error(status: u16, why: &str, extra_headers: &str) -> Answer {
    let body = format!("{status} {}: {why}\n", reason(status));
    respond(
        status,
        "text/plain; charset=utf-8",
        extra_headers,
        body.as_bytes(),
        false,
    )
}

fn respond(
    status: u16,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
    head_only: bool,
) -> Answer {
    let mut bytes = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n{SECURITY_HEADERS}{extra_headers}\r\n",
        reason(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        bytes.extend_from_slice(body);
    }
    Answer {
        status,
        bytes,
        upgrade: None,
        request: String::new(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn ask(head: &str) -> Answer {
        answer(head.as_bytes(), &OriginPolicy::default()).expect("a complete head")
    }

    fn text(a: &Answer) -> String {
        String::from_utf8_lossy(&a.bytes).into_owned()
    }

    fn ws_request(extra: &str) -> String {
        format!(
            "GET /ws HTTP/1.1\r\nHost: chat.example:8080\r\nUpgrade: websocket\r\n\
             Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_page_and_its_files_are_served_with_every_header() {
        for (path, kind) in [
            ("/", "text/html"),
            ("/?room=1", "text/html"),
            ("/chat.js", "text/javascript"),
            ("/chat.css", "text/css"),
        ] {
            let a = ask(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            let t = text(&a);
            assert_eq!(a.status, 200, "{path}");
            assert!(t.contains(&format!("Content-Type: {kind}")), "{path}: {t}");
            let (head, body) = t.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
            assert!(head.contains("Connection: close\r\n"));
            assert!(head.contains("X-Content-Type-Options: nosniff\r\n"));
            assert!(head.contains("Content-Security-Policy: default-src 'none'"));
            assert!(a.upgrade.is_none());
        }
    }

    #[test]
    fn head_gets_the_headers_without_the_body() {
        let get = ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let head = ask("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
        let get_head = text(&get).split_once("\r\n\r\n").unwrap().0.to_owned();
        assert_eq!(text(&head), format!("{get_head}\r\n\r\n"));
    }

    #[test]
    fn other_paths_and_methods_are_refused_with_content_length() {
        for (req, status) in [
            ("GET /etc/passwd HTTP/1.1\r\n\r\n", 404),
            ("GET /../Cargo.toml HTTP/1.1\r\n\r\n", 404),
            ("GET /index.html HTTP/1.1\r\n\r\n", 404),
            ("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
            ("DELETE /chat.js HTTP/1.1\r\n\r\n", 405),
            ("POST /ws HTTP/1.1\r\n\r\n", 405),
        ] {
            let a = ask(req);
            let t = text(&a);
            assert_eq!(a.status, status, "{req:?}: {t}");
            let (head, body) = t.split_once("\r\n\r\n").unwrap();
            assert!(head.contains(&format!("Content-Length: {}\r\n", body.len())));
            assert!(head.contains("Connection: close\r\n"), "{t}");
            assert!(head.contains("Content-Security-Policy:"), "{t}");
        }
        assert!(text(&ask("PUT / HTTP/1.1\r\n\r\n")).contains("Allow: GET, HEAD\r\n"));
    }

    #[test]
    fn a_head_is_answered_only_once_complete() {
        let full = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 1..full.len() {
            assert!(answer(&full.as_bytes()[..cut], &OriginPolicy::default()).is_none());
        }
        assert!(answer(full.as_bytes(), &OriginPolicy::default()).is_some());
    }

    #[test]
    fn oversized_and_malformed_heads_get_431_and_400() {
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            answer(big.as_bytes(), &OriginPolicy::default())
                .unwrap()
                .status,
            431
        );
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: y\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(ask(&many).status, 431);
        for junk in [
            "\x16\x03\x01\x02\x00\r\n\r\n",
            "GET / HTTP/9\r\n\r\n",
            "G\0T / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(ask(junk).status, 400, "{junk:?}");
        }
        // Just under the cap, still partial: keep reading.
        let partial = format!("GET / HTTP/1.1\r\nX-Pad: {}", "a".repeat(MAX_HEAD - 40));
        assert!(answer(partial.as_bytes(), &OriginPolicy::default()).is_none());
    }

    #[test]
    fn a_good_upgrade_gets_101_with_the_accept_key_and_keeps_what_followed() {
        let mut req = ws_request("Origin: http://chat.example:8080\r\n").into_bytes();
        req.extend_from_slice(b"\x81\x85first frame");
        let a = answer(&req, &OriginPolicy::default()).unwrap();
        let t = text(&a);
        assert_eq!(a.status, 101, "{t}");
        // RFC 6455's own example key and answer.
        assert!(t.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(
            !t.contains("Sec-WebSocket-Extensions"),
            "no compression offered"
        );
        assert!(!t.contains("Sec-WebSocket-Protocol"));
        assert_eq!(a.upgrade.as_deref(), Some(&b"\x81\x85first frame"[..]));
        assert_eq!(a.request, "GET /ws");
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (raw, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(raw.as_bytes()), encoded);
        }
    }

    #[test]
    fn bad_handshakes_say_what_is_wrong() {
        let no_upgrade = "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(ask(no_upgrade).status, 426);
        let wrong_version = ws_request("").replace("Version: 13", "Version: 8");
        let a = ask(&wrong_version);
        assert_eq!(a.status, 426);
        assert!(text(&a).contains("Sec-WebSocket-Version: 13\r\n"));
        let no_version = ws_request("").replace("Sec-WebSocket-Version: 13\r\n", "");
        assert_eq!(ask(&no_version).status, 426);
        for bad_key in [
            "",
            "short==",
            "dGhlIHNhbXBsZSBub25jZR==",
            "dGhlIHNhbXBsZSBub25j*Q==",
        ] {
            let req = ws_request("").replace(KEY, bad_key);
            let a = ask(&req);
            assert_eq!(a.status, 400, "{bad_key:?}");
            assert!(text(&a).contains("Sec-WebSocket-Key"));
        }
        let foreign = ask(&ws_request("Origin: https://evil.example\r\n"));
        assert_eq!(foreign.status, 403);
        let mut not_text = ws_request("").into_bytes();
        not_text.splice(
            not_text.len() - 2..not_text.len() - 2,
            *b"Origin: http://\xff\r\n",
        );
        assert_eq!(
            answer(&not_text, &OriginPolicy::default()).unwrap().status,
            403
        );
        assert!(foreign.upgrade.is_none());
    }

    #[test]
    fn origins_are_the_pages_own_or_listed() {
        let listed = OriginPolicy {
            allowed: vec!["https://chat.example.org".into()],
        };
        let host = Some("chat.example:8080");
        assert!(origin_allowed("http://chat.example:8080", host, &listed));
        assert!(origin_allowed("https://CHAT.example:8080", host, &listed));
        assert!(origin_allowed("https://chat.example.org/", host, &listed));
        assert!(!origin_allowed("http://chat.example:8081", host, &listed));
        assert!(!origin_allowed(
            "http://chat.example.org.evil",
            host,
            &listed
        ));
        assert!(!origin_allowed("null", host, &listed));
        assert!(!origin_allowed("http://chat.example:8080", None, &listed));
        let any = OriginPolicy {
            allowed: vec!["*".into()],
        };
        assert!(origin_allowed("null", host, &any));
    }

    #[test]
    fn reading_stops_at_would_block_and_answers_when_complete() {
        struct Trickle(Vec<&'static [u8]>);
        impl Read for Trickle {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                match self.0.first_mut() {
                    None => Err(io::ErrorKind::WouldBlock.into()),
                    Some(chunk) => {
                        let n = chunk.len().min(buf.len());
                        buf[..n].copy_from_slice(&chunk[..n]);
                        *chunk = &chunk[n..];
                        if chunk.is_empty() {
                            self.0.remove(0);
                        }
                        Ok(n)
                    }
                }
            }
        }
        let mut head = RequestHead::new();
        let origins = OriginPolicy::default();
        let mut peer = Trickle(vec![b"GET / HT"]);
        assert!(matches!(
            head.read_from(&mut peer, &origins).unwrap(),
            Progress::NeedMore
        ));
        let mut peer = Trickle(vec![b"TP/1.1\r\nHost: x\r\n", b"\r\n"]);
        let Progress::Answer(a) = head.read_from(&mut peer, &origins).unwrap() else {
            panic!("complete");
        };
        assert_eq!(a.status, 200);
        let mut gone = Trickle(vec![]);
        let mut head = RequestHead::new();
        gone.0.push(b"GET /");
        assert!(matches!(
            head.read_from(&mut gone, &origins).unwrap(),
            Progress::NeedMore
        ));
        struct Eof;
        impl Read for Eof {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Ok(0)
            }
        }
        let e = head.read_from(&mut Eof, &origins).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }
}
