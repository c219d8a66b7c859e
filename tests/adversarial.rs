//! Adversarial clients against an in-process server (issue 7): garbage
//! bytes, and churn around steady chatters. Each scenario states what it
//! does and asserts what every well-behaved client observes. Run against
//! every engine. (Memory, CPU and fd scenarios need a separate server
//! process: see `server_process.rs`; limits and floods: `chat_limits.rs`.)

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

use common::{Client, start_chat, test_limits};
use pollchat::config::EngineKind;

/// A small deterministic generator (xorshift64*), so a failing run can be
/// repeated exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Escape sequences and hostile bytes a terminal would act on.
const NASTY: &[&[u8]] = &[
    b"\x1b[2J",
    b"\x1b[31;1m",
    b"\x1b]0;owned\x07",
    b"\x1b]8;;http://x\x1b\\",
    b"\x1bP+q\x1b\\",
    b"\x1b(0",
    b"\x1bc",
    b"\x1b",
    "\u{9b}31m".as_bytes(),
    "\u{85}\u{9d}0;t\u{9c}".as_bytes(),
    b"\x00\x00",
    b"\x07\x08\x7f",
    b"\t",
    b"\r",
    b"\xff\xfe\xc3",
    b"\xed\xa0\x80",     // an encoded surrogate: invalid UTF-8
    b"\xf4\x90\x80\x80", // past U+10FFFF
];

/// Garbage: one client sends ~200 KB of random binary bytes mixed with NUL,
/// invalid UTF-8 and ANSI/OSC/DCS escape sequences, in lines of every
/// length (some over `--max-line`). Every line anyone receives, the other
/// client and the sender alike, is valid UTF-8 with no control character
/// but its line end.
fn garbage_reaches_others_as_clean_text(engine: EngineKind) {
    let server = start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut garbage = Client::join_as(addr, "garbage");
    let mut other = Client::join_as(addr, "other");
    garbage.skip_until(|l| l.ends_with("other"));

    let mut rng = Rng(0x5eed_9a4b_a6e0_0001);
    let mut bytes = Vec::new();
    for _ in 0..2_000 {
        for _ in 0..rng.below(12) {
            match rng.below(3) {
                0 => bytes.extend_from_slice(NASTY[rng.below(NASTY.len())]),
                1 => bytes.extend((0..rng.below(40)).map(|_| rng.next() as u8)),
                _ => bytes.extend_from_slice(b"text "),
            }
        }
        if rng.below(50) == 0 {
            bytes.extend(std::iter::repeat_n(b'L', 3000)); // over --max-line
        }
        bytes.push(b'\n');
    }
    let sender = std::thread::spawn(move || {
        garbage.send_raw(&bytes);
        garbage.send("end of garbage");
        garbage
    });

    let mut relayed = 0;
    loop {
        // `line()` itself fails the test on invalid UTF-8.
        let line = other.line();
        assert_clean(&line);
        if line.ends_with("> end of garbage") {
            break;
        }
        relayed += 1;
    }
    let mut garbage = sender.join().expect("the garbage client's writes failed");
    garbage.send("/who");
    let replies = garbage.skip_until(|l| {
        assert_clean(l);
        l.contains(" here: ")
    });
    assert!(replies.contains("other"), "{replies}");
    common::figure(&format!("garbage: {relayed} lines relayed, all clean"));
    assert!(relayed > 1000, "only {relayed} lines got through");
}

#[track_caller]
fn assert_clean(line: &str) {
    assert!(
        !line.chars().any(char::is_control),
        "control character in {line:?}"
    );
}

/// Churn: 500 clients connect and leave at random (by `/quit`, by FIN, by
/// reset, or by half-closing) while 20 steady clients exchange 10,000
/// lines. No steady client loses or reorders a line; all see the others'
/// lines in the same order; and each churner they hear of joins once,
/// leaves once, and says anything only in between.
///
/// One thread conducts: each of 500 rounds connects a churner, lets one
/// leave, and sends one line from every steady client, so churn and chat
/// are interleaved throughout. All the traffic a steady client receives is
/// under 1 MB, within the default `--log-cap`, so a steady reader is never
/// cut for being slow on a busy machine: this scenario is about churn.
fn churn_loses_nothing_for_steady_clients(engine: EngineKind) {
    const STEADY: usize = 20;
    const ROUNDS: usize = 500; // one churner and one line per steady client
    const MAX_LIVE_CHURNERS: usize = 30;
    let server = start_chat(engine, test_limits());
    let addr = server.local_addr();
    let mut steady: Vec<Client> = (0..STEADY)
        .map(|k| Client::join_as(addr, &format!("s{k}")))
        .collect();
    let mut observer = Client::join_as(addr, "observer");
    for s in steady.iter_mut() {
        s.expect_suffix(" is now known as observer");
    }
    let mut writers: Vec<_> = steady
        .iter()
        .map(|s| s.stream.try_clone().unwrap())
        .collect();
    let readers: Vec<_> = steady
        .into_iter()
        .map(|s| std::thread::spawn(move || Heard::record(s)))
        .collect();

    let mut rng = Rng(0xc4a5_e5ee_d000_0002);
    let mut live: Vec<Client> = Vec::new();
    for round in 0..ROUNDS {
        let (mut churner, name) = Client::join(addr);
        if rng.below(3) == 0 {
            churner.send(&format!("hello from {name}"));
        }
        live.push(churner);
        if live.len() > MAX_LIVE_CHURNERS || rng.below(2) == 0 {
            let leaving = live.swap_remove(rng.below(live.len()));
            leave(leaving, &mut rng);
        }
        for (k, w) in writers.iter_mut().enumerate() {
            w.write_all(format!("{k}:{round}\n").as_bytes()).unwrap();
        }
    }
    for churner in live {
        leave(churner, &mut rng);
    }
    // Once the server counts only the steady clients and the observer,
    // every departure has been announced; the observer's last line then
    // comes after all of them.
    let observed = common::lines_of(&observer);
    let mut present = 0;
    for _ in 0..1000 {
        observer.send("/who");
        // The observer has been hearing all the chat too: skip it.
        let who = common::recv_until(&observed, 100_000, |l| l.contains(" here: "));
        present = who[2..].split(' ').next().unwrap().parse().unwrap();
        if present == STEADY + 1 {
            break;
        }
    }
    assert_eq!(present, STEADY + 1, "churners still present after leaving");
    observer.send("END");

    let heard: Vec<Heard> = readers
        .into_iter()
        .map(|r| r.join().expect("a steady client failed"))
        .collect();
    let (mut lost, mut reordered) = (0, 0);
    for (me, h) in heard.iter().enumerate() {
        for k in (0..STEADY).filter(|&k| k != me) {
            let got: Vec<usize> = h.chat.iter().filter(|l| l.0 == k).map(|l| l.1).collect();
            let mut seen = vec![false; ROUNDS];
            got.iter().for_each(|&i| seen[i] = true);
            lost += seen.iter().filter(|&&s| !s).count();
            reordered += got.windows(2).filter(|w| w[1] <= w[0]).count();
        }
    }
    common::figure(&format!(
        "churn: {ROUNDS} churners around {} steady lines: {lost} deliveries lost, \
         {reordered} out of order",
        STEADY * ROUNDS
    ));
    assert_eq!((lost, reordered), (0, 0), "lost and reordered deliveries");
    for (me, h) in heard.iter().enumerate() {
        assert_eq!(h.churners.len(), ROUNDS, "churners s{me} heard of");
        for (name, events) in &h.churners {
            let consistent = matches!(
                events.as_slice(),
                [Event::Joined, Event::Left] | [Event::Joined, Event::Said, Event::Left]
            );
            assert!(consistent, "s{me} heard {name}: {events:?}");
        }
    }
    // Lines from a third client reach any two steady clients in the same
    // order: the room has one order, not one per reader.
    for a in 0..STEADY {
        for b in a + 1..STEADY {
            let third = |h: &Heard| -> Vec<(usize, usize)> {
                h.chat
                    .iter()
                    .copied()
                    .filter(|&(k, _)| k != a && k != b)
                    .collect()
            };
            assert_eq!(third(&heard[a]), third(&heard[b]), "s{a} and s{b} disagree");
        }
    }
}

/// A churner goes, one of four ways.
fn leave(mut churner: Client, rng: &mut Rng) {
    match rng.below(4) {
        0 => churner.send("/quit bye"),
        1 => churner.stream.shutdown(Shutdown::Write).unwrap(),
        2 => socket2::SockRef::from(&churner.stream)
            .set_linger(Some(Duration::ZERO))
            .unwrap(),
        // Half-close, and read what was queued until the server closes.
        _ => {
            churner.stream.shutdown(Shutdown::Write).unwrap();
            churner.read_to_close();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Event {
    Joined,
    Said,
    Left,
}

/// What one steady client heard, from the churn's start to the end line.
struct Heard {
    /// `(sender, line number)` of every steady chat line, in arrival order.
    chat: Vec<(usize, usize)>,
    /// Each churner's joins, lines and departures, in arrival order.
    churners: BTreeMap<String, Vec<Event>>,
}

impl Heard {
    fn record(mut client: Client) -> Heard {
        let mut heard = Heard {
            chat: Vec::new(),
            churners: BTreeMap::new(),
        };
        for _ in 0..100_000 {
            let line = client.line();
            if line == "<observer> END" {
                return heard;
            }
            if let Some(rest) = line.strip_prefix("<s") {
                let (name, text) = rest.split_once("> ").expect("chat line");
                let (k, i) = text.split_once(':').expect("k:i");
                let k: usize = k.parse().unwrap();
                assert_eq!(name, k.to_string(), "{line}");
                heard.chat.push((k, i.parse().unwrap()));
                continue;
            }
            let (name, event) = if let Some(rest) = line.strip_prefix("<user") {
                let (n, text) = rest.split_once("> ").expect("chat line");
                assert_eq!(text, format!("hello from user{n}"));
                (format!("user{n}"), Event::Said)
            } else if let Some(name) = line
                .strip_prefix("* ")
                .and_then(|l| l.strip_suffix(" joined"))
            {
                (name.to_string(), Event::Joined)
            } else if let Some((name, _)) =
                line.strip_prefix("* ").and_then(|l| l.split_once(" left"))
            {
                (name.to_string(), Event::Left)
            } else {
                panic!("unexpected line {line:?}");
            };
            heard.churners.entry(name).or_default().push(event);
        }
        panic!("no end line within 100,000 lines");
    }
}

engine_tests!(
    garbage_reaches_others_as_clean_text,
    churn_loses_nothing_for_steady_clients,
);
