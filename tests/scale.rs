//! One server filled near the open-file limit CI's machines allow: 15,000
//! clients (20,000 is the hard limit there, and this process holds one end
//! of every connection). Everyone is welcomed, a line reaches all of them,
//! `/who` answers with one bounded line, and SIGTERM tells and closes
//! everyone. Behaviour only: the speed at this size is `benches/scale.sh`'s.
//!
//! The server is a child process (its fds and ours would not fit in one
//! process's limit); the clients are `pollchat bench`'s swarm, one mio loop.
//! The threaded engine's 5,000 clients are 10,000 threads: within this
//! machine kind's `ulimit -u` (96,363) and `kernel.pid_max` (32,768).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{ChildServer, READ_TIMEOUT, ensure_fd_limit};
use pollchat::bench::{Nodes, Swarm, SwarmPlan, Tracker};
use pollchat::config::EngineKind;

/// Clients per engine. The threaded engine admits at most some 8,000 on
/// Linux's default `vm.max_map_count` (two threads a client, four mappings
/// a thread: see "Raising the limits"), so it is filled to 5,000.
fn clients(engine: EngineKind) -> usize {
    match engine {
        EngineKind::Poll => 15_000,
        EngineKind::Threaded => 5_000,
    }
}

fn a_full_server_welcomes_reaches_and_stops_everyone(engine: EngineKind) {
    // Both engines' clients at once would not fit in this process's files.
    let _one = common::one_at_a_time();
    let receivers = clients(engine);
    ensure_fd_limit(receivers + 200);
    let max = (receivers + 100).to_string();
    // `--quiet-above 0`: joins are summed up (every 30 s), so the one line
    // a receiver hears before the probe is its welcome, and the one after
    // the signal is the goodbye.
    let mut server = ChildServer::start(
        engine,
        &["--max-clients", &max, "--rate", "0", "--quiet-above", "0"],
    );
    let plan = SwarmPlan::plain(
        Nodes::one(server.addr),
        receivers,
        20_000,
        Duration::from_secs(120),
    );
    let mut swarm = Swarm::connect(&plan, &mut |_, _| {}).expect("everyone connects");
    swarm
        .settle(Duration::from_millis(500), Duration::from_secs(60))
        .expect("the join notices are read");
    assert_eq!(swarm.receivers_closed(), 0, "nobody was turned away");
    assert_eq!(swarm.receivers_heard(), receivers, "everyone was welcomed");

    // One line reaches every receiver, once.
    let mut tracker = Tracker::new(receivers);
    let round = swarm
        .probe_round(&mut tracker, 40, Duration::from_secs(60))
        .expect("the swarm runs");
    assert!(round.is_some(), "the line reached all {receivers}");
    let tally = tracker.tally();
    assert_eq!((tally.deliveries, tally.lost), (receivers as u64, 0));

    // `/who` in the full room: the count, and one line of bounded size.
    let mut asker = TcpStream::connect(server.addr).unwrap();
    asker.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    asker.write_all(b"/who\n").unwrap();
    let mut lines = BufReader::new(asker.try_clone().unwrap()).lines();
    let everyone = receivers + 2; // the sender and the asker
    let who = (0..100)
        .map_while(|_| lines.next().and_then(Result::ok))
        .find(|l| l.contains(" users here: "))
        .expect("a /who reply");
    assert!(
        who.starts_with(&format!("* {everyone} users here: ")),
        "{who}"
    );
    assert!(
        who.ends_with(&format!("... and {} more", everyone - 50)),
        "{who}"
    );
    assert!(who.len() < 2048, "{} bytes", who.len());

    // SIGTERM: every receiver hears the goodbye and is closed.
    let shutdown = swarm
        .stop_server(server.pid(), Duration::from_secs(60))
        .expect("the swarm runs");
    assert_eq!(
        (shutdown.receivers, shutdown.told, shutdown.closed),
        (receivers, receivers, receivers)
    );
    assert_eq!(server.wait_exit(Duration::from_secs(30)), Some(0));
}

engine_tests!(a_full_server_welcomes_reaches_and_stops_everyone);
