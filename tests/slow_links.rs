//! Slow links and bursts: what loopback hides. Members read promptly but
//! through small TCP windows, or slowly, or not at all, while others paste
//! and flood; the shared fan-out log must keep the readers connected and
//! whole, cut off only those that fall too far behind, and keep the
//! server's memory bounded. Each scenario runs on both engines.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::numbered::{assert_all_in_order, assert_in_order_from, numbered_line};
use common::{ChildServer, Client, READ_TIMEOUT, start_chat, test_limits};
use pollchat::config::{EngineKind, Limits};

/// A second loopback address, so a member does not count against
/// `--max-per-ip` with clients from 127.0.0.1.
const OTHER_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Read every other connection's broadcasts and throw them away, so only
/// the clients a scenario means to be slow are slow.
fn drain_in_background(stream: &TcpStream) {
    let mut stream = stream.try_clone().expect("clone a socket");
    std::thread::spawn(move || {
        let mut buf = [0u8; 64 * 1024];
        while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
    });
}

/// The case the issue measured. A member reads promptly through a small
/// window (4 KiB receive buffer, 536-byte segments) while 32 clients from
/// one address each paste 50 lines of 2,000 bytes at the same moment, with
/// every limit at its default. The member receives all 1,600 lines, each
/// paster's in order, and stays connected. (Before the shared log it got
/// 24 of 200 lines with only four pasters, then "too slow to read".)
fn prompt_reader_behind_a_small_window_survives_a_paste_storm(engine: EngineKind) {
    const PASTERS: usize = 32;
    const LINES: usize = 50;
    let limits = Limits {
        per_ip_exempts_loopback: false,
        ..Limits::default()
    };
    assert_eq!(limits.max_per_ip as usize, PASTERS, "the default, all used");
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let stream = common::small_window_connection(addr, Some(OTHER_ADDRESS));
    let mut member = Client::from_stream(stream);
    member.line(); // the welcome
    let mut pasters: Vec<Client> = (0..PASTERS).map(|_| Client::join(addr).0).collect();
    for _ in 0..PASTERS {
        member.expect_suffix(" joined");
    }
    for p in &pasters {
        drain_in_background(&p.stream);
    }
    let lines = common::lines_of(&member);
    // Each paste is one write, all at once.
    let pastes: Vec<_> = pasters
        .iter_mut()
        .enumerate()
        .map(|(k, p)| {
            let paste: String = (0..LINES)
                .map(|i| numbered_line(k, i, 2000) + "\n")
                .collect();
            let mut stream = p.stream.try_clone().unwrap();
            std::thread::spawn(move || stream.write_all(paste.as_bytes()).unwrap())
        })
        .collect();
    for paste in pastes {
        paste.join().expect("a paste failed");
    }
    let seen = assert_all_in_order(&lines, PASTERS, LINES, "the member");
    common::figure(&format!(
        "{engine:?}: small-window member got {seen} of {} pasted lines in order",
        PASTERS * LINES
    ));
    // Still connected: it can still talk.
    member.send("/who");
    let who = common::recv_until(&lines, 100, |l| l.contains(" here: "));
    assert!(
        who.starts_with(&format!("* {} users here", PASTERS + 1)),
        "{who}"
    );
}

/// 100 members on slow links (64 KiB/s each, through a 4 KiB window) while
/// 1 MB is broadcast: every member receives every line in order, and the
/// server holds the megabyte once, not once per member: its RSS grows by at
/// most 1 MB + 2 MiB over what it used with the members connected.
fn slow_links_share_one_copy_of_a_burst(engine: EngineKind) {
    const MEMBERS: usize = 100;
    const LINES: usize = 500;
    const LINE_BYTES: usize = 2000; // 500 x 2,000 = 1 MB
    common::ensure_fd_limit(4 * MEMBERS);
    let server = ChildServer::start(engine, &["--rate", "0"]);
    let addr = server.addr;
    let mut sender = Client::join_as(addr, "sender");
    let mut members: Vec<Receiver<String>> = Vec::new();
    for _ in 0..MEMBERS {
        let mut c = Client::from_stream(common::small_window_connection(addr, None));
        c.line(); // the welcome
        sender.expect_suffix(" joined");
        members.push(common::slow_reader(c.stream, 64 * 1024));
    }
    let idle = server.rss_kib();
    let mut peak = idle;
    for i in 0..LINES {
        sender.send(&numbered_line(0, i, LINE_BYTES));
        if i % 50 == 0 {
            peak = peak.max(server.rss_kib());
        }
    }
    // Sample while the members read (bounded: each read is bounded by
    // READ_TIMEOUT, and there are MEMBERS * LINES of them).
    let readers: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(m, lines)| {
            std::thread::spawn(move || {
                assert_all_in_order(&lines, 1, LINES, &format!("member {m}"));
            })
        })
        .collect();
    let deadline = Instant::now() + READ_TIMEOUT * 10;
    while readers.iter().any(|r| !r.is_finished()) && Instant::now() < deadline {
        peak = peak.max(server.rss_kib());
        std::thread::sleep(Duration::from_millis(100));
    }
    for r in readers {
        r.join().expect("a member missed a line");
    }
    let bound = idle + (LINES * LINE_BYTES) as u64 / 1024 + 2048;
    common::figure(&format!(
        "{engine:?}: {MEMBERS} slow links behind a 1 MB burst: RSS idle {idle} KiB, \
         peak {peak} KiB (bound {bound} KiB)"
    ));
    assert!(peak <= bound, "peak {peak} KiB over {bound} KiB");
}

/// A member that never reads, under light traffic that stays far under
/// the log's cap: it is cut off by `--stall-timeout` (it made no progress
/// at all for that long), and the others lose nothing.
fn stalled_reader_is_cut_off_by_the_stall_timeout(engine: EngineKind) {
    let limits = Limits {
        stall_timeout: Duration::from_secs(1),
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let (mut sender, mut reader) = Client::alice_and_bob(addr);
    let mut stalled = common::stalled_connection(addr);
    reader.expect_suffix(" joined");
    // Enough to fill what the kernel buffers for it (tens of KB), far under
    // the log's 8 MiB cap.
    let lines = 400;
    for i in 0..lines {
        sender.send(&numbered_line(0, i, 1000));
    }
    let heard = common::lines_of(&reader);
    assert_all_in_order(&heard, 1, lines, "bob");
    // Its departure is announced once the stall timeout has passed.
    let left = common::recv_until(&heard, 10, |l| l.ends_with(" left"));
    assert!(left.starts_with("* user"), "{left}");
    // And its connection is closed: reading what is left ends, it does
    // not time out.
    stalled.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    match stalled.read_to_end(&mut rest) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stalled client's connection is still open: {e}"),
    }
}

/// 1,000 members that stop reading under a flood, with a memory budget of
/// 4 MiB and a log cap far above it: the budget decides. The 500 that
/// stopped first are furthest behind and go first; the 500 that stopped
/// later are still connected when the flood ends; the member that reads
/// keeps every line; and the server's RSS grows by at most the budget +
/// 16 MiB over what it used with everyone connected (measured as its RSS
/// before the flood plus what the late group's connections added).
fn memory_budget_cuts_the_furthest_behind_first(engine: EngineKind) {
    const GROUP: usize = 500;
    const BUDGET: usize = 4 * 1024 * 1024;
    common::ensure_fd_limit(3 * 2 * GROUP + 100);
    let budget = BUDGET.to_string();
    let server = ChildServer::start(
        engine,
        &[
            "--rate",
            "0",
            "--memory-budget",
            &budget,
            "--log-cap",
            "67108864",
            "--stall-timeout",
            "3600",
            // Each join announced: the sender counts them to know the group is in.
            "--quiet-above",
            "5000",
        ],
    );
    let addr = server.addr;
    let mut sender = Client::join_as(addr, "sender");
    let reader = Client::join_as(addr, "reader");
    sender.expect_suffix("reader");
    let heard = common::lines_of(&reader);
    let join_group = |sender: &mut Client| -> Vec<TcpStream> {
        let group: Vec<TcpStream> = (0..GROUP)
            .map(|_| common::stalled_connection(addr))
            .collect();
        for _ in 0..GROUP {
            sender.expect_suffix(" joined");
        }
        group
    };
    let early = join_group(&mut sender);
    // Memory with nobody behind yet; the late group's connections are
    // added to it below, so that what is compared with the budget is what
    // the flood costs, not what 1,000 connections cost.
    let mut idle = server.rss_kib();
    let mut peak = idle;
    let mut sent = 0;
    // Send `count` more lines, sampling the server's RSS, and check the
    // reader got them all.
    let mut flood = |sender: &mut Client, count: usize, peak: &mut u64| {
        for _ in 0..count {
            sender.send(&numbered_line(0, sent, 2000));
            sent += 1;
            if sent % 100 == 0 {
                *peak = (*peak).max(server.rss_kib());
            }
        }
        let mut next = || heard.recv_timeout(READ_TIMEOUT).ok();
        assert_in_order_from(&mut next, 1, sent - count, sent, "reader");
    };
    // 3 MB the early group is behind by: under the budget.
    flood(&mut sender, 1500, &mut peak);
    let before_late = server.rss_kib();
    let late = join_group(&mut sender);
    idle += server.rss_kib().saturating_sub(before_late);
    // 2 MB more: the early group is now 5 MB behind, over the budget; the
    // late group 2 MB behind, under it.
    flood(&mut sender, 1000, &mut peak);
    peak = peak.max(server.rss_kib());

    // Who is still here: the sender, the reader and the late group.
    let mut who = String::new();
    for _ in 0..20 {
        sender.send("/who");
        who = sender.skip_until(|l| l.contains(" here: "));
        if who.starts_with(&format!("* {} users here", 2 + GROUP)) {
            break;
        }
    }
    assert!(
        who.starts_with(&format!("* {} users here", 2 + GROUP)),
        "{who}"
    );
    // The early ones were told and closed; the late ones are still open.
    let closed = |s: &TcpStream| -> bool {
        let mut s = s.try_clone().unwrap();
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let mut buf = [0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    };
    assert!(early.iter().all(closed), "an early member was not cut off");
    drop(late);
    let bound = idle + (BUDGET as u64 + 16 * 1024 * 1024) / 1024;
    common::figure(&format!(
        "{engine:?}: 1,000 stalled members, budget 4 MiB: RSS with everyone here {idle} KiB, \
         peak {peak} KiB (bound {bound} KiB)"
    ));
    assert!(peak <= bound, "peak {peak} KiB over {bound} KiB");
}

/// One paste far larger than `--log-cap` arrives in a single read: the
/// members who read promptly are not behind, only not written to yet, and
/// none of them is cut off or loses a line.
fn prompt_readers_survive_one_paste_larger_than_the_log_cap(engine: EngineKind) {
    const READERS: usize = 5;
    const LINES: usize = 100;
    let limits = Limits {
        log_cap: 16 * 1024,
        ..test_limits()
    };
    let server = start_chat(engine, limits);
    let addr = server.local_addr();
    let mut sender = Client::join_as(addr, "sender");
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let (reader, _) = Client::join(addr);
        sender.expect_suffix(" joined");
        readers.push(reader);
    }
    let heard: Vec<_> = readers.iter().map(common::lines_of).collect();
    let paste: String = (0..LINES)
        .map(|i| numbered_line(0, i, 1000) + "\n")
        .collect();
    sender.send_raw(paste.as_bytes());
    for (r, lines) in heard.iter().enumerate() {
        assert_all_in_order(lines, 1, LINES, &format!("reader {r}"));
    }
}

engine_tests!(
    prompt_readers_survive_one_paste_larger_than_the_log_cap,
    prompt_reader_behind_a_small_window_survives_a_paste_storm,
    slow_links_share_one_copy_of_a_burst,
    stalled_reader_is_cut_off_by_the_stall_timeout,
    memory_budget_cuts_the_furthest_behind_first,
);
