//! Loading threat intel: 1,000,000 generated IOCs from a plain list and
//! from a MISP JSON export, each read from a file, against a reference
//! measured in the same run: reading the same file and counting its lines.
//!
//! `cargo bench -p sluice-benches --bench intel` (figures in BENCHMARKS.md).
//! The allocator is the one `sluice` runs with (mimalloc).
//! Lookups are not timed here: each is a few hash-map probes, done once per
//! new entity of a cluster (the `correlate` bench covers that path).

use std::fmt::Write as _;
use std::path::PathBuf;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_operators::intel::IocStore;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IOCS: usize = 1_000_000;

/// The i-th generated IOC: a quarter each ips, domains, urls, sha256 hashes.
fn ioc(i: usize, out: &mut String) -> &'static str {
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    match i % 4 {
        0 => {
            let _ = write!(out, "{}.{}.{}.{}", 1 + (h >> 56) % 223, (h >> 48) & 255, (h >> 40) & 255, i & 255);
            "ip-dst"
        }
        1 => {
            let _ = write!(out, "c2-{h:x}.example");
            "domain"
        }
        2 => {
            let _ = write!(out, "https://drop-{:x}.example/gate.php?id={i}", h >> 32);
            "url"
        }
        _ => {
            let _ = write!(out, "{h:016x}{:016x}{:016x}{i:016x}", h.rotate_left(17), h.rotate_left(31));
            "sha256"
        }
    }
}

fn files() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("sluice-intel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (mut plain, mut misp) = (String::new(), String::from("{\"response\": ["));
    let mut value = String::new();
    for event in 0..IOCS / 10_000 {
        if event > 0 {
            misp.push(',');
        }
        let _ =
            write!(misp, "{{\"Event\": {{\"id\": \"{event}\", \"info\": \"generated event {event}\", \"Attribute\": [");
        for i in event * 10_000..(event + 1) * 10_000 {
            value.clear();
            let kind = ioc(i, &mut value);
            plain.push_str(&value);
            plain.push('\n');
            if i > event * 10_000 {
                misp.push(',');
            }
            let _ = write!(
                misp,
                "{{\"type\": \"{kind}\", \"value\": \"{value}\", \"to_ids\": true, \"category\": \"Network activity\"}}"
            );
        }
        misp.push_str("]}}");
    }
    misp.push_str("]}");
    let (p, m) = (dir.join("iocs.txt"), dir.join("misp.json"));
    std::fs::write(&p, plain).expect("write");
    std::fs::write(&m, misp).expect("write");
    (p, m)
}

fn bench(c: &mut Criterion) {
    let (plain, misp) = files();
    for (name, path) in [("plain", &plain), ("misp", &misp)] {
        let size = std::fs::metadata(path).expect("file").len();
        eprintln!("{name}: {} ({:.1} MiB)", path.display(), size as f64 / 1048576.0);
    }
    let mut g = c.benchmark_group("intel_load");
    g.sample_size(10);
    g.throughput(Throughput::Elements(IOCS as u64));
    for (name, path) in [("plain", &plain), ("misp", &misp)] {
        g.bench_function(BenchmarkId::new("read_and_count_lines", name), |b| {
            b.iter(|| std::fs::read_to_string(path).expect("read").lines().count())
        });
        g.bench_function(BenchmarkId::new("load", name), |b| {
            b.iter(|| {
                let text = std::fs::read_to_string(path).expect("read");
                let mut store = IocStore::new();
                let stats = if name == "misp" {
                    store.load_misp("misp.json", &text).expect("loads")
                } else {
                    store.load_plain("iocs.txt", &text, None).expect("loads")
                };
                assert_eq!(stats.loaded, IOCS);
                store
            })
        });
    }
    g.finish();
    let _ = std::fs::remove_dir_all(plain.parent().expect("dir"));
}

criterion_group!(benches, bench);
criterion_main!(benches);
