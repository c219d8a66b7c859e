//! `--workers W`: the receivers spread over W worker processes, because a
//! process holds at most its open-file limit of connections, and a
//! million clients need fifty processes or more.
//!
//! The coordinator (the `pollchat bench` the user ran) starts each worker
//! as the same command plus `--worker-part K`, talks to it over a pipe,
//! and sends the probes itself:
//!
//! ```text
//! coordinator                       worker K (receivers of part K)
//!   spawn ───────────────────────►  connect, settle
//!          ◄──────────── "ready"
//!   (every worker ready) idle span, then the probes, each stamped
//!   with its send time     ─ ─ ─ ─► read; time each by its stamp
//!   "sent N" ───────────────────►   (the probes that really went out)
//!          ◄───────────── "done"    (every receiver has every probe)
//!   "stop" ─────────────────────►
//!          ◄──── one JSON WorkerShare line, then exit
//! ```
//!
//! `worker.rs` merges the shares. A worker that dies, or says something
//! else, fails the run with its part's number.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use super::worker::WorkerShare;
use super::{BenchConfig, BenchError, SETTLE_MAX, SETTLE_QUIET, Swarm, Tracker, procfs, share_of};

/// How often a worker looks at its stop flag between reads.
const STOP_CHECK: Duration = Duration::from_millis(100);
/// How long a worker may take to hand in its share once told to stop.
const COLLECT_WITHIN: Duration = Duration::from_secs(60);
/// What a worker says when every receiver of its part is connected.
const READY: &str = "ready";
/// ... and when every one of them has every expected probe.
const DONE: &str = "done";

/// A worker's line, as its reader thread passes it on.
enum Said {
    Ready,
    Done,
    Share(Box<WorkerShare>),
    /// Its stdout ended (it exited), or it said something we do not know.
    Gone(String),
}

/// The running workers.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<Option<ChildStdin>>,
    said: mpsc::Receiver<(usize, Said)>,
    /// Spawn → every worker ready.
    pub connect_phase: Duration,
}

impl Fleet {
    /// Start `config.workers` workers and wait until each is connected.
    pub fn start(config: &BenchConfig) -> Result<Fleet, BenchError> {
        let (program, args) = config.relaunch.split_first().ok_or(BenchError::Flags(
            "--workers: no command to start workers with",
        ))?;
        let (tx, said) = mpsc::channel();
        let mut fleet = Fleet {
            children: Vec::new(),
            stdins: Vec::new(),
            said,
            connect_phase: Duration::ZERO,
        };
        let start = Instant::now();
        for part in 0..config.workers {
            let mut child = Command::new(program)
                .args(args)
                .arg("--worker-part")
                .arg(part.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| worker_failed(part, format!("cannot start: {e}")))?;
            fleet.stdins.push(child.stdin.take());
            if let Some(stdout) = child.stdout.take() {
                let tx = tx.clone();
                std::thread::spawn(move || relay(part, stdout, &tx));
            }
            fleet.children.push(child);
        }
        let within = config.swarm.connect_timeout + SETTLE_MAX + Duration::from_secs(30);
        fleet.wait_for_all(Said::is_ready, start + within, "was not connected in time")?;
        fleet.connect_phase = start.elapsed();
        Ok(fleet)
    }

    /// Tell every worker how many probes were sent, then wait until each
    /// said "done", or `within` passed (a loss: the shares will tell),
    /// running `tick` (the sender's own reads and writes) meanwhile.
    pub fn wait_done(
        &mut self,
        sent: u64,
        within: Duration,
        tick: &mut dyn FnMut() -> Result<(), BenchError>,
    ) -> Result<(), BenchError> {
        self.tell(&format!("sent {sent}\n"));
        let end = Instant::now() + within;
        let mut done = vec![false; self.children.len()];
        while done.iter().any(|d| !d) && Instant::now() < end {
            tick()?;
            while let Ok((part, said)) = self.said.try_recv() {
                match said {
                    Said::Done => done[part] = true,
                    Said::Gone(why) => return Err(worker_failed(part, why)),
                    _ => {}
                }
            }
        }
        Ok(())
    }

    /// One line to every worker. One that cannot be told has died: its
    /// reader says so.
    fn tell(&mut self, line: &str) {
        for stdin in self.stdins.iter_mut().filter_map(Option::as_mut) {
            let _ = stdin
                .write_all(line.as_bytes())
                .and_then(|()| stdin.flush());
        }
    }

    /// Tell every worker to stop and take its share.
    pub fn collect(mut self) -> Result<Vec<WorkerShare>, BenchError> {
        self.tell("stop\n");
        let mut shares: Vec<Option<WorkerShare>> = vec![None; self.children.len()];
        let end = Instant::now() + COLLECT_WITHIN;
        while shares.iter().any(Option::is_none) {
            let (part, said) = self.next(end, "did not hand in its share")?;
            match said {
                Said::Share(share) => shares[part] = Some(*share),
                Said::Gone(why) if shares[part].is_none() => return Err(worker_failed(part, why)),
                _ => {}
            }
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        self.children.clear();
        Ok(shares.into_iter().flatten().collect())
    }

    /// Resident memory of all workers now.
    pub fn rss_bytes(&self) -> u64 {
        self.children
            .iter()
            .filter_map(|c| procfs::rss_bytes(c.id()))
            .sum()
    }

    fn wait_for_all(
        &mut self,
        wanted: fn(&Said) -> bool,
        end: Instant,
        late: &str,
    ) -> Result<(), BenchError> {
        let mut seen = vec![false; self.children.len()];
        while seen.iter().any(|s| !s) {
            let (part, said) = self.next(end, late)?;
            if let Said::Gone(why) = said {
                return Err(worker_failed(part, why));
            }
            seen[part] |= wanted(&said);
        }
        Ok(())
    }

    /// The next thing any worker said, before `end`.
    fn next(&self, end: Instant, late: &str) -> Result<(usize, Said), BenchError> {
        let left = end.saturating_duration_since(Instant::now());
        self.said
            .recv_timeout(left)
            .map_err(|_| BenchError::Worker {
                part: None,
                reason: late.to_string(),
            })
    }
}

impl Drop for Fleet {
    /// Workers never outlive the run, whatever ended it.
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Said {
    fn is_ready(&self) -> bool {
        matches!(self, Said::Ready)
    }
}

fn worker_failed(part: usize, reason: String) -> BenchError {
    BenchError::Worker {
        part: Some(part),
        reason,
    }
}

/// A worker's stdout, line by line, to the coordinator.
fn relay(part: usize, stdout: std::process::ChildStdout, tx: &mpsc::Sender<(usize, Said)>) {
    for line in BufReader::new(stdout).lines() {
        let said = match line {
            Ok(line) if line == READY => Said::Ready,
            Ok(line) if line == DONE => Said::Done,
            Ok(line) => match serde_json::from_str::<WorkerShare>(&line) {
                Ok(share) => Said::Share(Box::new(share)),
                Err(_) => Said::Gone(format!("said {line:?}")),
            },
            Err(e) => Said::Gone(format!("unreadable output: {e}")),
        };
        if tx.send((part, said)).is_err() {
            return;
        }
    }
    let _ = tx.send((part, Said::Gone("exited".into())));
}

/// The worker's side (`--worker-part K`): connect this part's receivers,
/// say "ready", time every probe until told to stop, hand in the share.
pub fn work(config: &BenchConfig) -> Result<(), BenchError> {
    let _ = crate::config::raise_fd_limit();
    let plan = &config.swarm;
    let mut swarm = Swarm::connect(plan, &mut |_, _| {})?;
    swarm.settle(SETTLE_QUIET, SETTLE_MAX)?;
    let told = watch_stdin();
    say(READY)?;
    let expected = config
        .load
        .messages
        .map_or(0, |m| u32::try_from(m).unwrap_or(u32::MAX));
    let mut tracker = Tracker::expecting(plan.receivers, expected);
    let mut done = false;
    while !told.stop.load(Ordering::Relaxed) {
        swarm.listen(&mut tracker, STOP_CHECK)?;
        let sent = told.sent.load(Ordering::Relaxed);
        if sent != u64::MAX {
            tracker.only_sent(sent);
        }
        if !done && (tracker.outstanding() == 0 || plan.receivers == 0) {
            say(DONE)?;
            done = true;
        }
    }
    let me = std::process::id();
    let share = WorkerShare {
        rss_bytes: procfs::rss_bytes(me).unwrap_or(0),
        cpu_seconds: procfs::cpu_time(me).map_or(0.0, |t| t.as_secs_f64()),
        ..share_of(plan, &swarm, &tracker)
    };
    let json = serde_json::to_string(&share).map_err(|e| BenchError::Setup(e.into()))?;
    say(&json)
}

fn say(line: &str) -> Result<(), BenchError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(BenchError::Setup)
}

/// What the coordinator said on stdin.
struct Told {
    /// "sent N": how many probes went out (`u64::MAX` until said).
    sent: Arc<AtomicU64>,
    /// "stop", or stdin ended (the coordinator is gone).
    stop: Arc<AtomicBool>,
}

fn watch_stdin() -> Told {
    let told = Told {
        sent: Arc::new(AtomicU64::new(u64::MAX)),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (sent, stop) = (Arc::clone(&told.sent), Arc::clone(&told.stop));
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if let Some(n) = line.trim().strip_prefix("sent ") {
                sent.store(n.parse().unwrap_or(u64::MAX), Ordering::Relaxed);
            } else if line.trim() == "stop" {
                break;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    told
}

/// The command a coordinator starts its workers with: this very one.
pub fn relaunch_command() -> Vec<OsString> {
    let exe = std::env::current_exe().map_or_else(|_| OsString::from("pollchat"), OsString::from);
    std::iter::once(exe)
        .chain(std::env::args_os().skip(1))
        .collect()
}
