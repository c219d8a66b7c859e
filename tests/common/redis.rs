//! A real `redis-server` for the cluster tests, started on a free loopback
//! port with persistence off, and killed (by PID) on drop.
//!
//! Which binary: `POLLCHAT_REDIS_SERVER` if set (`.ci/run` sets it, and
//! then a missing binary fails the test), else `redis-server` on the PATH;
//! with neither, the tests say so and skip.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
    binary: String,
}

/// The binary to run, or `None` (with a message) to skip.
pub fn redis_binary() -> Option<String> {
    if let Ok(path) = std::env::var("POLLCHAT_REDIS_SERVER") {
        assert!(
            std::path::Path::new(&path).exists(),
            "POLLCHAT_REDIS_SERVER={path} does not exist"
        );
        return Some(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("redis-server"))
            .find(|p| p.exists())
    });
    if found.is_none() {
        eprintln!(
            "cluster tests skipped: no redis-server (apt-get install redis-server, or set POLLCHAT_REDIS_SERVER)"
        );
    }
    found.map(|p| p.display().to_string())
}

impl Redis {
    /// Start one on a free port; `None` if there is no redis-server.
    pub fn start() -> Option<Redis> {
        let binary = redis_binary()?;
        Some(Redis::start_on(&binary, super::free_port()))
    }

    /// Start one on `port` (a restart keeps the port: the nodes' URL).
    pub fn start_on(binary: &str, port: u16) -> Redis {
        Redis::start_with(binary, port, &[])
    }

    /// Start one with extra arguments (`--requirepass`, say); it is
    /// ready when it answers PING at all, even with an error.
    pub fn start_with(binary: &str, port: u16, extra: &[&str]) -> Redis {
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child,
            port,
            binary: binary.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis
            .command(&["PING"])
            .is_none_or(|reply| reply.is_empty())
        {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `kill -9`, then a new, empty one on the same port.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `SHUTDOWN` (it saves, if persistence is on), then wait for it.
    pub fn shut_down(&mut self) {
        let _ = self.command(&["SHUTDOWN"]);
        let _ = self.child.wait();
    }

    pub fn restart_empty(&mut self) {
        self.kill();
        *self = Redis::start_on(&self.binary.clone(), self.port);
    }

    /// One command over a fresh connection; the reply's first line.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(request.as_bytes()).ok()?;
        let mut line = String::new();
        BufReader::new(&mut s).read_line(&mut line).ok()?;
        Some(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
