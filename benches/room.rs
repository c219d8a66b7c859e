//! The chat room's cost per broadcast message with N members, no sockets:
//! `handle_line` produces `<name> text`, and its bytes are appended to each
//! recipient's queue the way an engine does it (one copy per recipient).
//! Throughput is in deliveries.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pollchat::app::{App, ClientId, Clock, Outbox, Output, Recipients};
use pollchat::chat::Chat;

const MEMBERS: &[usize] = &[10, 100, 1000];
const LINE: &str = "hello everyone, this is a fairly ordinary chat line";

/// A room with `n` members and one output queue per member.
fn room_with(n: usize, now: Instant) -> (Chat, Vec<Vec<u8>>) {
    let mut room = Chat::new();
    let mut out = Outbox::new();
    let peer: SocketAddr = "127.0.0.1:5000".parse().expect("loopback address");
    for id in 0..n {
        room.handle_joined(ClientId(id), peer, now, &mut out);
        let _ = out.drain().count();
    }
    (room, vec![Vec::new(); n])
}

/// Queue one output's bytes for each recipient.
fn deliver(output: Output, queues: &mut [Vec<u8>]) {
    let Output::Send { to, bytes } = output else {
        return;
    };
    for (id, queue) in queues.iter_mut().enumerate() {
        let wanted = match to {
            Recipients::One(ClientId(c)) => c == id,
            // Everyone here is in the lobby.
            Recipients::RoomBut(_, ClientId(c)) => c != id,
            Recipients::Room(_) | Recipients::All => true,
        };
        if wanted {
            queue.extend_from_slice(&bytes);
        }
    }
}

fn broadcast(c: &mut Criterion) {
    let mut group = c.benchmark_group("room/broadcast");
    group
        .sample_size(50)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    let now = Instant::now();
    for &n in MEMBERS {
        let (mut room, mut queues) = room_with(n, now);
        let mut out = Outbox::new();
        group.throughput(Throughput::Elements(n as u64 - 1));
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| {
                room.handle_line(ClientId(0), LINE, Clock::with_wall(now), &mut out);
                for output in out.drain() {
                    deliver(output, &mut queues);
                }
                // Queues drained by the socket: capacity stays, as in a
                // busy engine.
                queues.iter_mut().for_each(Vec::clear);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
