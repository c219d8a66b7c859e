//! The input path's throughput in MB/s on realistic mixed traffic: short and
//! long chat lines, CRLF and LF, UTF-8, ANSI colour codes and the odd
//! invalid byte, arriving in TCP-sized chunks. Measured for the framer alone
//! and for framer + sanitize (what every line goes through).

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pollchat::framing::{Frame, LineFramer};
use pollchat::sanitize::sanitize;

/// About 1 MiB of input per iteration.
const INPUT_BYTES: usize = 1 << 20;
/// Loopback and Ethernet reads come in pieces about this big.
const CHUNK: usize = 1448;
const MAX_LINE: usize = 2048;

/// Deterministic mixed traffic (no RNG crate: a fixed cycle of line kinds).
fn mixed_input() -> Vec<u8> {
    let kinds: [&[u8]; 6] = [
        b"hi\n",
        b"how is everyone doing today? the build is green again\r\n",
        "caf\u{e9} na\u{ef}ve \u{2713} \u{1f600} unicode is fine\n".as_bytes(),
        b"\x1b[31mred\x1b[0m text with \x1b]0;title\x07 escapes\n",
        b"bad byte \xff here and a tab\tthere\r\n",
        b"/me waves\n",
    ];
    let long = {
        let mut l = vec![b'x'; 1500];
        l.push(b'\n');
        l
    };
    let mut input = Vec::with_capacity(INPUT_BYTES + 2048);
    let mut i = 0;
    while input.len() < INPUT_BYTES {
        if i % 50 == 49 {
            input.extend_from_slice(&long);
        } else {
            input.extend_from_slice(kinds[i % kinds.len()]);
        }
        i += 1;
    }
    input
}

/// Feed `input` in chunks; `on_line` gets each complete line.
fn frame_all(input: &[u8], mut on_line: impl FnMut(Vec<u8>)) {
    let mut framer = LineFramer::new(MAX_LINE);
    for chunk in input.chunks(CHUNK) {
        framer.push(chunk);
        while let Some(frame) = framer.next_frame() {
            if let Frame::Line(line) = frame {
                on_line(line);
            }
        }
    }
}

fn framing(c: &mut Criterion) {
    let input = mixed_input();
    let mut group = c.benchmark_group("framing");
    group
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function(BenchmarkId::from_parameter("framer"), |b| {
        b.iter(|| {
            let mut lines = 0usize;
            frame_all(&input, |line| lines += line.len());
            lines
        })
    });
    group.bench_function(BenchmarkId::from_parameter("framer+sanitize"), |b| {
        b.iter(|| {
            let mut chars = 0usize;
            frame_all(&input, |line| chars += sanitize(&line).len());
            chars
        })
    });
    group.finish();
}

criterion_group!(benches, framing);
criterion_main!(benches);
