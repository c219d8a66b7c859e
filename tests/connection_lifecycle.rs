//! How a connection ends, on both engines: its resources are released only
//! when they really are gone, the App hears of a departure exactly when it
//! should, and the last words a server says reach the client.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ChildServer, Client, READ_TIMEOUT, start_app, test_limits};
use pollchat::app::{App, ClientId, Clock, MAX_REPLY, Outbox};
use pollchat::config::{EngineKind, Limits};

/// The server's open sockets, from /proc.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the server's fds")
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_link(e.path()).is_ok_and(|t| t.to_string_lossy().starts_with("socket:"))
        })
        .count()
}

/// An address slot is free again only when its connection's socket is
/// closed (and, in the threaded engine, its threads are done). Nine
/// clients with a backlog they are not reading `/quit`: each is still
/// flushing, with its socket open, when nine newcomers knock. The
/// newcomers are refused until the quitters' sockets are closed, so the
/// server never holds more client sockets than `--max-clients`.
fn quitters_still_flushing_keep_their_slots(engine: EngineKind) {
    const MAX: usize = 10;
    let server = ChildServer::start(engine, &["--rate", "0", "--max-clients", &MAX.to_string()]);
    let pid = server.pid();
    let idle_sockets = open_sockets(pid);
    let mut sender = Client::join_as(server.addr, "sender");
    let mut quitters: Vec<_> = (0..MAX - 1)
        .map(|_| common::stalled_connection(server.addr))
        .collect();
    for _ in 0..MAX - 1 {
        sender.expect_suffix(" joined");
    }
    // A backlog past what their kernels take (tens of KB), so each has
    // output left to flush when it quits, and under any limit that would
    // cut them off first (200 KB).
    for i in 0..200 {
        sender.send(&format!("{i} {}", "q".repeat(1000)));
    }
    for q in &mut quitters {
        std::io::Write::write_all(q, b"/quit\n").unwrap();
    }
    for _ in 0..MAX - 1 {
        sender.expect_suffix(" left");
    }
    let mut most = 0;
    let mut newcomers = Vec::new();
    for _ in 0..MAX - 1 {
        let mut c = Client::connect(server.addr);
        let first = c.line();
        assert!(
            first == "! server full" || first.starts_with("* Welcome"),
            "{first}"
        );
        newcomers.push(c);
        most = most.max(open_sockets(pid) - idle_sockets);
    }
    common::figure(&format!(
        "{engine:?}: at most {most} client sockets open with --max-clients {MAX}"
    ));
    // One more than the limit: a refused connection is accepted (an fd)
    // before it is told and closed.
    assert!(
        most <= MAX + 1,
        "{most} client sockets open, --max-clients {MAX}"
    );
    drop(quitters);
}

/// A stand-in App for the departure rules: `quit` gets a reply as large
/// as a reply may be, then a close; every `handle_left` is recorded.
struct Farewells {
    left: Arc<Mutex<Vec<ClientId>>>,
}

impl App for Farewells {
    fn handle_joined(&mut self, client: ClientId, _: SocketAddr, _: Instant, out: &mut Outbox) {
        out.to(client, &format!("hello {}", client.0));
    }

    fn handle_line(&mut self, client: ClientId, line: &str, _: Clock, out: &mut Outbox) {
        if line == "quit" {
            out.to(client, &"b".repeat(MAX_REPLY - 1));
            out.close(client);
        }
    }

    fn handle_left(&mut self, client: ClientId, _: Instant, _: &mut Outbox) {
        self.left.lock().unwrap().push(client);
    }
}

/// The id in a `hello N` greeting.
fn greeted_id(client: &mut Client) -> usize {
    let hello = client.line();
    hello
        .strip_prefix("hello ")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a greeting: {hello}"))
}

/// A client the App closes itself is never reported to it as `left`, even
/// when the farewell pushes the client over `--sendq` and the engine cuts
/// it off for that.
fn a_client_the_app_closed_is_never_reported_left(engine: EngineKind) {
    let left = Arc::new(Mutex::new(Vec::new()));
    let limits = Limits {
        sendq: 1024,
        ..test_limits()
    };
    let server = start_app(engine, limits, Farewells { left: left.clone() });
    // Both connected at once, so their ids differ.
    let mut other = Client::connect(server.local_addr());
    let other_id = greeted_id(&mut other);
    let mut quitter = Client::connect(server.local_addr());
    greeted_id(&mut quitter);
    quitter.send("quit");
    quitter.read_to_close();
    // The other's departure is reported: the App is told of departures,
    // and once it has been, anything reported before it is in the list.
    drop(other);
    let deadline = Instant::now() + READ_TIMEOUT;
    while !left.lock().unwrap().contains(&ClientId(other_id)) {
        assert!(
            Instant::now() < deadline,
            "the other client's departure was never reported"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    server.stop().unwrap();
    let left = left.lock().unwrap();
    assert_eq!(*left, [ClientId(other_id)], "reported left");
}

/// An App with a bug: `boom` panics inside `handle_line`.
struct Fragile;

impl App for Fragile {
    fn handle_joined(&mut self, client: ClientId, _: SocketAddr, _: Instant, out: &mut Outbox) {
        out.to(client, "hello");
    }

    fn handle_line(&mut self, _: ClientId, line: &str, _: Clock, _: &mut Outbox) {
        assert_ne!(line, "boom", "the App's bug, on purpose");
    }

    fn handle_left(&mut self, _: ClientId, _: Instant, _: &mut Outbox) {}
}

/// Threaded engine only (in the poll engine a panic ends the one thread):
/// a reader thread that panics in the App disconnects its client and
/// releases its slot, its socket and its writer. With `--max-clients 1`, the
/// next client is then welcomed, not refused.
#[test]
fn a_panicking_reader_thread_leaks_nothing() {
    let limits = Limits {
        max_clients: 1,
        ..test_limits()
    };
    let server = start_app(EngineKind::Threaded, limits, Fragile);
    let mut c = Client::connect(server.local_addr());
    c.expect("hello");
    for round in 0..3 {
        c.send("boom");
        c.read_to_close();
        // The slot comes back once the threads are done: ask a bounded
        // number of times. The one welcomed is the next round's client.
        let mut welcomed = None;
        for _ in 0..100 {
            let mut next = Client::connect(server.local_addr());
            match next.try_line().as_deref() {
                Some("hello") => {
                    welcomed = Some(next);
                    break;
                }
                Some("! server full") => {}
                other => panic!("round {round}: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        c = welcomed
            .unwrap_or_else(|| panic!("round {round}: the panicked client's slot never came back"));
    }
}

/// A client behind a small window, owed a backlog, with input of its own
/// the server will not read: it has typed `/quit` and a pile more. Reading
/// at its own pace, it gets the whole backlog, then `* Bye!`, then the end
/// of the stream: the server shut its write side and drained the input
/// before closing, instead of closing with input unread (which sends a
/// reset, and the reset throws away what the kernel had not sent yet).
fn last_words_arrive_with_input_unread(engine: EngineKind) {
    const BACKLOG: usize = 300;
    let server = common::start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut sender = Client::join_as(addr, "sender");
    let stream = common::small_window_connection(addr, None);
    let mut quitter = Client::from_stream(stream);
    quitter.line(); // the welcome
    sender.expect_suffix(" joined");
    for i in 0..BACKLOG {
        sender.send(&format!("{i} {}", "w".repeat(1000)));
    }
    // /quit, then more than the server will ever read.
    let mut typed = b"/quit\n".to_vec();
    typed.extend(std::iter::repeat_n(b"more typing\n".as_slice(), 100_000).flatten());
    let mut w = quitter.stream.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut w, &typed);
    });
    sender.expect_suffix(" left");
    let got = quitter.read_to_close_strict();
    let backlog = got.iter().filter(|l| l.starts_with("<sender> ")).count();
    assert_eq!(backlog, BACKLOG, "backlog lost");
    assert_eq!(got.last().map(String::as_str), Some("* Bye!"));
}

/// Start writing `lines` junk lines from a thread: more than the server
/// will read (flood control, or it has stopped listening).
fn keep_typing(client: &Client, lines: usize) {
    let mut w = client.stream.try_clone().unwrap();
    let typed: Vec<u8> = std::iter::repeat_n(b"typing on\n".as_slice(), lines)
        .flatten()
        .copied()
        .collect();
    std::thread::spawn(move || {
        let _ = std::io::Write::write_all(&mut w, &typed);
    });
}

/// The shutdown notice reaches a client whose input the server has stopped
/// reading (flood control paused it), followed by a clean end of stream.
fn shutdown_notice_arrives_with_input_unread(engine: EngineKind) {
    let server = common::start_chat(engine, Limits::default());
    let addr = server.local_addr();
    let mut watcher = Client::join_as(addr, "watcher");
    let mut typist = Client::join_as(addr, "typist");
    watcher.expect_suffix("typist");
    keep_typing(&typist, 100_000);
    // The burst goes through, then flood control stops reading it.
    for _ in 0..50 {
        watcher.expect("<typist> typing on");
    }
    let stopping = std::thread::spawn(move || server.stop());
    let got = typist.read_to_close_strict();
    assert_eq!(
        got.last().map(String::as_str),
        Some("* server shutting down")
    );
    stopping.join().unwrap().unwrap();
}

/// `! server full` reaches a client that starts typing at once, followed
/// by a clean end of stream.
fn refusal_arrives_with_input_unread(engine: EngineKind) {
    let limits = Limits {
        max_clients: 1,
        ..test_limits()
    };
    let server = common::start_chat(engine, limits);
    let _member = Client::join(server.local_addr());
    for _ in 0..20 {
        let mut refused = Client::connect(server.local_addr());
        keep_typing(&refused, 100_000);
        let got = refused.read_to_close_strict();
        assert_eq!(got, ["! server full"]);
    }
}

engine_tests!(
    quitters_still_flushing_keep_their_slots,
    a_client_the_app_closed_is_never_reported_left,
    last_words_arrive_with_input_unread,
    shutdown_notice_arrives_with_input_unread,
    refusal_arrives_with_input_unread,
);
