//! Fan-out on a real loopback round: one sender, N receivers, the chat room
//! in-process on each engine. One iteration = one line sent until the last
//! of the N receivers has read it (measured by `pollchat bench`'s own event
//! loop, so the clients cost one thread). Throughput is in deliveries.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pollchat::bench::{Nodes, Swarm, SwarmPlan, Tracker};
use pollchat::chat::Chat;
use pollchat::config::{Config, EngineKind, Limits};
use pollchat::engine::Server;

/// Both engines, side by side.
const ENGINES: &[EngineKind] = &[EngineKind::Poll, EngineKind::Threaded];
const RECEIVERS: &[usize] = &[1, 10, 100, 1000];
/// A short chat line, token included.
const PAYLOAD: usize = 32;
/// A round that takes longer than this is a failure, not a sample.
const ROUND_TIMEOUT: Duration = Duration::from_secs(5);

fn fanout(c: &mut Criterion) {
    for &engine in ENGINES {
        let mut group = c.benchmark_group(format!("fanout/{engine}"));
        group
            .sample_size(20)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3));
        for &receivers in RECEIVERS {
            let mut config = Config::new("127.0.0.1:0".parse().expect("loopback address"));
            config.engine = engine;
            config.limits = Limits {
                rate: 0,
                ..Limits::default()
            };
            let server = Server::bind(config, Chat::new())
                .expect("bind a bench server")
                .spawn()
                .expect("start the bench server");
            let plan = SwarmPlan::plain(
                Nodes::one(server.local_addr()),
                receivers,
                5000,
                Duration::from_secs(30),
            );
            let mut swarm = Swarm::connect(&plan, &mut |_, _| {}).expect("connect the clients");
            swarm
                .settle(Duration::from_millis(200), Duration::from_secs(10))
                .expect("read the join notices");
            let mut tracker = Tracker::new(receivers);

            group.throughput(Throughput::Elements(receivers as u64));
            group.bench_function(BenchmarkId::from_parameter(receivers), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            swarm
                                .probe_round(&mut tracker, PAYLOAD, ROUND_TIMEOUT)
                                .expect("bench event loop")
                                .expect("every receiver got the line in time")
                        })
                        .sum()
                })
            });
            drop(swarm);
            drop(server);
        }
        group.finish();
    }
}

criterion_group!(benches, fanout);
criterion_main!(benches);
