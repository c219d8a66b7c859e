//! What `--server-pid` reads about the server under test, from `/proc`:
//! its resident memory and the CPU time all of its threads have used; and
//! how busy the whole machine is (`/proc/stat`).

use std::fs;
use std::time::Duration;

/// Resident set size in bytes (`VmRSS` in `/proc/PID/status`), or `None` if
/// the process is gone or the file is unreadable.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time used so far by every thread of the process: the first field of
/// each `/proc/PID/task/TID/schedstat`, in nanoseconds (finer than the
/// 10 ms ticks of `/proc/PID/stat`).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        let Ok(stat) = fs::read_to_string(task.path().join("schedstat")) else {
            continue; // a thread that just exited
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(Duration::from_nanos(total))
}

/// The machine's CPU time so far, in clock ticks: (busy, all), from the
/// first line of `/proc/stat` (idle and iowait are not busy).
pub fn machine_cpu() -> Option<(u64, u64)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    Some((all - idle, all))
}

/// Percent of all the machine's cores busy since `before` was read.
pub fn machine_busy_percent(before: Option<(u64, u64)>) -> f64 {
    match (before, machine_cpu()) {
        (Some((busy0, all0)), Some((busy1, all1))) if all1 > all0 => {
            100.0 * busy1.saturating_sub(busy0) as f64 / (all1 - all0) as f64
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).is_some_and(|rss| rss > 0));
        assert!(cpu_time(me).is_some_and(|cpu| cpu > Duration::ZERO));
        let (busy, all) = machine_cpu().unwrap();
        assert!(busy <= all && all > 0);
    }

    #[test]
    fn a_missing_process_reads_as_none() {
        assert_eq!(rss_bytes(u32::MAX), None);
        assert_eq!(cpu_time(u32::MAX), None);
    }
}
