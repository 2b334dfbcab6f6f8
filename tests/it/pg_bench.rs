//! The central-ledger figures of docs/performance.md, side by side in one run on one SoftHSM
//! dev line: the batch rate on SQLite and on PostgreSQL (the same `batch --count N --keygen
//! host --plain-keys`, alternating engines, twice each), then the per-device station overhead
//! on PostgreSQL with 1 and with 4 stations at once. Not part of the suite (`--ignored`): it
//! times things. Run it on a release build:
//!
//! ```text
//! cargo build --release
//! CERTFAB_BENCH_BIN=target/release/certfab cargo test --test it pg_bench -- --ignored --nocapture
//! ```
//!
//! `CERTFAB_BENCH_N` devices per batch (2000), `CERTFAB_BENCH_STATION_N` devices per station
//! (200).

use crate::common::{self, pg, text, Line};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

fn env_n(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The certfab under measurement: CERTFAB_BENCH_BIN (relative to the repository), else the
/// test build.
fn certfab_bin() -> PathBuf {
    match std::env::var("CERTFAB_BENCH_BIN") {
        Ok(b) => common::repo().join(b),
        Err(_) => PathBuf::from(common::bin()),
    }
}

fn run(config: &Path, args: &[&str]) -> Output {
    Command::new(certfab_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .expect("run certfab")
}

/// Certificates per second of one batch of `n` on `config`'s ledger.
fn batch_rate(line: &Line, config: &Path, n: usize, tag: &str) -> f64 {
    let out = line.file(&format!("bench-{tag}"));
    let count = n.to_string();
    let template = format!("{tag}-{{seq}}");
    let t = Instant::now();
    let o = run(
        config,
        &[
            "--json",
            "batch",
            "--profile",
            "generic-iot",
            "--count",
            &count,
            "--keygen",
            "host",
            "--plain-keys",
            "--id-template",
            &template,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    let secs = t.elapsed().as_secs_f64();
    let s = common::ok_json(&o);
    assert_eq!(s["issued"], n as u64, "{s}");
    n as f64 / secs
}

fn sim() -> PathBuf {
    common::repo().join("station-scripts/sim-device.py")
}

/// Starts a station of `n` simulated devices on `config`; returns the running child.
fn start_station(line: &Line, config: &Path, name: &str, n: usize) -> std::process::Child {
    let dir = line.file(&format!("sim-{name}"));
    let mk = Command::new(sim())
        .arg("make-line")
        .arg(&dir)
        .args(["--count", &n.to_string(), "--prefix", &format!("{name}-")])
        .output()
        .unwrap();
    assert!(mk.status.success(), "{}", text(&mk));
    Command::new(certfab_bin())
        .arg("--config")
        .arg(config)
        .args([
            "--json",
            "station",
            "--profile",
            "generic-iot",
            "--operator",
            "bench",
        ])
        .args([
            "--adapter",
            &format!("exec:{} serve {}", sim().display(), dir.display()),
        ])
        .env_remove("CERTFAB_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// certfab's own time per passed device (ms), from a station's device events.
fn overhead_ms(o: &Output) -> Vec<f64> {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "device" && e["outcome"]["verdict"] == "pass")
        .map(|e| e["outcome"]["certfab_us"].as_f64().unwrap() / 1000.0)
        .collect()
}

fn describe(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    format!(
        "{} devices, mean {mean:.2} ms, p50 {:.2} ms, p95 {:.2} ms",
        v.len(),
        p(0.5),
        p(0.95)
    )
}

#[test]
#[ignore]
fn bench_central_ledger() {
    let n = env_n("CERTFAB_BENCH_N", 2000);
    let per_station = env_n("CERTFAB_BENCH_STATION_N", 200);
    println!("certfab: {}", certfab_bin().display());
    let line = Line::on_postgres();
    let (cluster, _) = line.pg.as_ref().unwrap();
    // The same line on its SQLite ledger: the config dev-line.sh wrote, beside the PG one.
    let pg_config = line.config();
    let lite_config = line.file("lite.yaml");
    let text_pg = std::fs::read_to_string(&pg_config).unwrap();
    let mut lite = String::new();
    for l in text_pg.lines() {
        if l.starts_with("ledger:") {
            lite.push_str("ledger: ledger.sqlite\n");
        } else if !l.starts_with("ledger_password:") {
            lite.push_str(l);
            lite.push('\n');
        }
    }
    std::fs::write(&lite_config, lite).unwrap();

    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load before: {}", load().trim());
    let mut rates = Vec::new();
    for round in 1..=2 {
        let l = batch_rate(&line, &lite_config, n, &format!("lite{round}"));
        let p = batch_rate(&line, &pg_config, n, &format!("pg{round}"));
        println!(
            "batch of {n}, round {round}: SQLite {l:.0}/s, PostgreSQL {p:.0}/s ({:.0} %)",
            100.0 * p / l
        );
        rates.push((l, p));
    }
    let (l, p) = rates
        .iter()
        .fold((0.0, 0.0), |(a, b), (l, p)| (a + l, b + p));
    println!(
        "batch, both rounds: PostgreSQL / SQLite {:.0} %",
        100.0 * p / l
    );

    for stations in [1usize, 4] {
        let ledger = cluster.ledger(&format!("stations{stations}"));
        let configs: Vec<PathBuf> = (0..stations)
            .map(|i| {
                pg::station_config(
                    &line,
                    &format!("st{stations}-{i}"),
                    &format!("station-{i}"),
                    10 + i as u8,
                    &ledger,
                )
            })
            .collect();
        let t = Instant::now();
        let children: Vec<_> = configs
            .iter()
            .enumerate()
            .map(|(i, c)| start_station(&line, c, &format!("S{stations}X{i}"), per_station))
            .collect();
        let mut all = Vec::new();
        for c in children {
            all.extend(overhead_ms(&c.wait_with_output().unwrap()));
        }
        println!(
            "{stations} station(s) on PostgreSQL, {per_station} devices each, {:.1} s: certfab overhead per device: {}",
            t.elapsed().as_secs_f64(),
            describe(all)
        );
    }
    println!("load after: {}", load().trim());
}
