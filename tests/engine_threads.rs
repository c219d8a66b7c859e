//! What each engine's model costs in threads and file descriptors, read from
//! `/proc` of a child server process (in-process tests would count the test
//! harness's threads too): the poll engine serves every client from one
//! thread (beside the logger's), whatever the
//! number of clients; the threaded engine runs a reader and a writer thread
//! per client. Both hold one socket per client, and both return to their
//! baseline, threads and fds, once the clients leave.

mod common;

use std::time::{Duration, Instant};

use common::{ChildServer, Client};
use pollchat::config::EngineKind;

/// Clients connected at once in these tests.
const CLIENTS: usize = 16;
/// How long the server may take to start or end client threads.
const SETTLE: Duration = Duration::from_secs(10);

/// The documented thread model: (threads with no client, threads per client).
/// Both binaries have the logger's thread (`logging.rs`: a full stderr must
/// never block the server). Poll: then the event loop's one thread.
/// Threaded: the accepting thread, the App's timer and the signal watcher,
/// then a reader and a writer per client.
fn thread_model(engine: EngineKind) -> (usize, usize) {
    match engine {
        EngineKind::Poll => (2, 0),
        EngineKind::Threaded => (4, 2),
    }
}

/// `Threads:` from /proc/PID/status.
fn threads(server: &ChildServer) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open file descriptors, from /proc/PID/fd.
fn fds(server: &ChildServer) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count()
}

/// Wait (bounded) until the server shows `want` (threads, fds); threads are
/// started and ended asynchronously, so a single reading could be early.
#[track_caller]
fn expect_counts(server: &ChildServer, want: (usize, usize), when: &str) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let got = (threads(server), fds(server));
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{when}: (threads, fds) = {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// With N clients connected the server runs `idle + N * per_client` threads
/// and holds one more fd per client; after they leave, both counts return
/// to their baseline (no thread or fd leaked per connection). Done twice, so
/// the second round also runs on reused client ids.
fn threads_and_fds_follow_clients(engine: EngineKind) {
    let server = ChildServer::start(engine, &[]);
    let (idle_threads, per_client) = thread_model(engine);
    let idle_fds = fds(&server);
    expect_counts(&server, (idle_threads, idle_fds), "no clients yet");
    for round in 1..=2 {
        let mut clients: Vec<Client> = (0..CLIENTS).map(|_| Client::join(server.addr).0).collect();
        expect_counts(
            &server,
            (idle_threads + CLIENTS * per_client, idle_fds + CLIENTS),
            &format!("round {round}: {CLIENTS} clients connected"),
        );
        // They chat: still no extra threads (nothing is spawned per message).
        clients[0].send("hello");
        for c in clients.iter_mut().skip(1) {
            c.skip_until(|l| l.ends_with("> hello"));
        }
        expect_counts(
            &server,
            (idle_threads + CLIENTS * per_client, idle_fds + CLIENTS),
            &format!("round {round}: after a broadcast"),
        );
        drop(clients);
        expect_counts(
            &server,
            (idle_threads, idle_fds),
            &format!("round {round}: every client left"),
        );
    }
}

engine_tests!(threads_and_fds_follow_clients);
