//! The central-ledger figures of docs/performance.md, side by side in one run on one SoftHSM
//! dev line: the batch rate on SQLite and on PostgreSQL (the same `batch --count N --keygen
//! host --plain-keys`, alternating engines, twice each), then the per-device station overhead
//! with 1 and with 4 stations at once, each count first with every station on a SQLite ledger
//! of its own and then all on one PostgreSQL ledger: the difference is what the central ledger
//! adds, with the machine equally busy. Not part of the suite (`--ignored`): it times things.
//! Run it on a release build:
//!
//! ```text
//! cargo build --release
//! CERTFAB_BENCH_BIN=target/release/certfab cargo test --test it pg_bench -- --ignored --nocapture
//! ```
//!
//! `CERTFAB_BENCH_N` devices per batch (2000), `CERTFAB_BENCH_STATION_N` devices per station
//! (200). `CERTFAB_BENCH_PG_PROFILE=1`: the server logs every statement of the station runs
//! (`log_min_duration_statement = 0`) and the bench prints, per statement, how often it ran
//! and the server's time, per device, and the server's WAL flushes (`pg_stat_wal.wal_sync`)
//! per device: figures the load of the machine does not change (the overhead figures are
//! then inflated by the logging). `CERTFAB_BENCH_PG_SET="name=value,…"`: server settings for
//! the station runs (`ALTER SYSTEM`), e.g. `wal_sync_method=open_datasync` when
//! `pg_test_fsync` finds it faster on the disk. `CERTFAB_BENCH_PG_WALDIR=DIR`: the station runs
//! are repeated on a second cluster whose write-ahead log lives in a new directory under DIR (e.g.
//! `/dev/shm`: a log device that flushes in microseconds, as an NVMe or battery-backed log
//! does), to tell this disk's flushes apart from what certfab and the server spend; the
//! durability settings are unchanged.

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
pub(crate) fn start_station(
    line: &Line,
    config: &Path,
    name: &str,
    n: usize,
) -> std::process::Child {
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
pub(crate) fn overhead_ms(o: &Output) -> Vec<f64> {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["event"] == "device" && e["outcome"]["verdict"] == "pass")
        .map(|e| e["outcome"]["certfab_us"].as_f64().unwrap() / 1000.0)
        .collect()
}

/// The server's statement log over one run: every statement logged
/// (`log_min_duration_statement = 0`) and the WAL flush counter reset from
/// [`StatementLog::start`] on.
pub(crate) struct StatementLog {
    log: PathBuf,
    from: u64,
}

/// What the server did during a [`StatementLog`].
pub(crate) struct Statements {
    /// Round trips: simple queries, parses and executes (a bind goes with its execute).
    pub trips: usize,
    /// Of those, the ones a session made while it held the writers' lock (from the statement
    /// that took `pg_advisory_xact_lock` to its `COMMIT`/`ROLLBACK`, both counted).
    pub trips_in_lock: usize,
    /// The server's time in them (ms).
    pub server_ms: f64,
    /// WAL flushes (`pg_stat_wal.wal_sync`).
    pub wal_syncs: f64,
    /// Count and time per phase and statement (its first 110 characters).
    pub by: std::collections::BTreeMap<String, (usize, f64)>,
}

impl StatementLog {
    /// Logging every statement from now on.
    pub(crate) fn start(cluster: &pg::PgCluster) -> Self {
        cluster.sql(
            "postgres",
            "ALTER SYSTEM SET log_min_duration_statement = 0",
        );
        cluster.sql("postgres", "SELECT pg_reload_conf()");
        cluster.sql("postgres", "SELECT pg_stat_reset_shared('wal')");
        let log = cluster.dir.path().join("data/server.log");
        let from = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        Self { log, from }
    }

    /// Logging off; what was logged since [`StatementLog::start`].
    pub(crate) fn stop(self, cluster: &pg::PgCluster) -> Statements {
        // Statistics reach the shared view within a second of a backend's last transaction.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        let wal_syncs: f64 = cluster
            .value("postgres", "SELECT wal_sync FROM pg_stat_wal")
            .parse()
            .unwrap_or(f64::NAN);
        cluster.sql("postgres", "ALTER SYSTEM RESET log_min_duration_statement");
        cluster.sql("postgres", "SELECT pg_reload_conf()");
        let all = std::fs::read(&self.log).unwrap();
        let text = String::from_utf8_lossy(&all[self.from as usize..]).into_owned();
        let mut out = Statements {
            trips: 0,
            trips_in_lock: 0,
            server_ms: 0.0,
            wal_syncs,
            by: Default::default(),
        };
        let mut in_lock = std::collections::HashSet::new();
        // "2026-… UTC [PID] LOG:  duration: 0.123 ms  execute s4: SELECT …" (a statement may
        // span lines; its first is enough).
        for l in text.lines() {
            let Some((prefix, rest)) = l.split_once("LOG:  duration: ") else {
                continue;
            };
            let Some((ms, what)) = rest.split_once(" ms  ") else {
                continue;
            };
            let pid = prefix.split('[').nth(1).and_then(|p| p.split(']').next());
            let ms: f64 = ms.parse().unwrap_or(0.0);
            let (phase, sql) = what.split_once(": ").unwrap_or((what, ""));
            let phase = phase.split_whitespace().next().unwrap_or("");
            // bind is part of execute's round trip (Bind, Execute, Sync go together).
            if phase != "bind" {
                out.trips += 1;
                if sql.contains("pg_advisory_xact_lock") {
                    in_lock.insert(pid);
                }
                if in_lock.contains(&pid) {
                    out.trips_in_lock += 1;
                }
                if sql.starts_with("COMMIT") || sql.starts_with("ROLLBACK") {
                    in_lock.remove(&pid);
                }
            }
            out.server_ms += ms;
            let sql: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
            let key = format!("{phase:9} {}", sql.chars().take(110).collect::<String>());
            let e = out.by.entry(key).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        out
    }
}

impl Statements {
    /// Per device, and the statements that cost the server most.
    pub(crate) fn print(&self, what: &str, devices: usize) {
        let d = devices as f64;
        println!(
            "profile, {what}: {:.1} round trips ({:.1} holding the writers' lock), {:.2} ms of server time and {:.2} WAL flushes per device",
            self.trips as f64 / d,
            self.trips_in_lock as f64 / d,
            self.server_ms / d,
            self.wal_syncs / d
        );
        let mut rows: Vec<_> = self.by.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        for (k, (n, ms)) in rows.into_iter().filter(|r| r.1 .0 >= devices / 2) {
            println!(
                "  {:6.2}/device {:7.3} ms/device  {k}",
                *n as f64 / d,
                ms / d
            );
        }
    }
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

/// `stations` stations at once on a new ledger in `cluster`, `per_station` devices each:
/// prints certfab's overhead per device (and, with CERTFAB_BENCH_PG_PROFILE, the server's
/// statements and WAL flushes per device).
fn station_overhead(
    line: &Line,
    cluster: &pg::PgCluster,
    what: &str,
    stations: usize,
    per_station: usize,
) -> f64 {
    let ledger = cluster.ledger(&format!("stations{stations}"));
    let configs: Vec<PathBuf> = (0..stations)
        .map(|i| {
            pg::station_config(
                line,
                &format!("st{stations}-{i}-{}", cluster.port),
                &format!("station-{i}"),
                10 + i as u8,
                &ledger,
            )
        })
        .collect();
    let profile =
        std::env::var_os("CERTFAB_BENCH_PG_PROFILE").map(|_| StatementLog::start(cluster));
    let mean = run_stations(
        line,
        &configs,
        &format!("S{stations}P{}", cluster.port),
        per_station,
        &format!("on PostgreSQL ({what})"),
    );
    if let Some(p) = profile {
        p.stop(cluster).print(
            &format!("{stations} station(s), {what}"),
            stations * per_station,
        );
    }
    mean
}

/// The same stations, each on a SQLite ledger of its own (as before a central ledger): what
/// certfab spends per device without PostgreSQL, with the machine as busy (the same number
/// of stations and simulators sharing its cores). The difference to [`station_overhead`] is
/// what the central ledger adds.
fn sqlite_station_overhead(
    line: &Line,
    lite_text: &str,
    tag: &str,
    stations: usize,
    per_station: usize,
) -> f64 {
    let configs: Vec<PathBuf> = (0..stations)
        .map(|i| {
            let text = lite_text
                .replace(
                    "ledger: ledger.sqlite\n",
                    &format!("ledger: lite-{tag}-{stations}-{i}.sqlite\n"),
                )
                .replace("  id: dev-line\n", &format!("  id: lite-station-{i}\n"))
                .replace(
                    "  serial_prefix: 1\n",
                    &format!("  serial_prefix: {}\n", 30 + i),
                );
            let path = line.file(&format!("lite-{tag}-{stations}-{i}.yaml"));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    run_stations(
        line,
        &configs,
        &format!("L{tag}S{stations}"),
        per_station,
        "each on its own SQLite ledger",
    )
}

/// One station per config at once, `per_station` simulated devices each; prints and returns
/// the mean of certfab's overhead per device (ms).
fn run_stations(
    line: &Line,
    configs: &[PathBuf],
    tag: &str,
    per_station: usize,
    what: &str,
) -> f64 {
    let stations = configs.len();
    let t = Instant::now();
    let children: Vec<_> = configs
        .iter()
        .enumerate()
        .map(|(i, c)| start_station(line, c, &format!("{tag}X{i}"), per_station))
        .collect();
    let mut all = Vec::new();
    for c in children {
        all.extend(overhead_ms(&c.wait_with_output().unwrap()));
    }
    let mean = all.iter().sum::<f64>() / all.len() as f64;
    println!(
        "{stations} station(s) {what}, {per_station} devices each, {:.1} s: certfab overhead per device: {}",
        t.elapsed().as_secs_f64(),
        describe(all)
    );
    mean
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
    std::fs::write(&lite_config, &lite).unwrap();
    let lite_text = lite;

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

    // With CERTFAB_BENCH_PG_WALDIR, the same station runs on a second cluster whose WAL is
    // there, right after the runs on this one: the difference is the disk's flushes.
    let wal_cluster = std::env::var_os("CERTFAB_BENCH_PG_WALDIR")
        .map(|dir| pg::PgCluster::start_with_waldir(Some(Path::new(&dir))));
    let mut clusters = vec![("WAL on the data disk".to_string(), cluster)];
    if let (Some(c), Some(dir)) = (&wal_cluster, std::env::var_os("CERTFAB_BENCH_PG_WALDIR")) {
        clusters.push((format!("WAL under {}", Path::new(&dir).display()), c));
    }
    for (what, cluster) in clusters {
        if let Ok(set) = std::env::var("CERTFAB_BENCH_PG_SET") {
            for kv in set.split(',').filter(|kv| !kv.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .expect("CERTFAB_BENCH_PG_SET: name=value,…");
                cluster.sql("postgres", &format!("ALTER SYSTEM SET {k} = '{v}'"));
                println!("server setting: {k} = {v}");
            }
            cluster.sql("postgres", "SELECT pg_reload_conf()");
        }
        for stations in [1usize, 4] {
            let tag = format!("{}", cluster.port);
            let base = sqlite_station_overhead(&line, &lite_text, &tag, stations, per_station);
            let central = station_overhead(&line, cluster, &what, stations, per_station);
            println!(
                "{stations} station(s), {what}: the central ledger adds {:.2} ms per device (PostgreSQL {central:.2} ms − SQLite {base:.2} ms, means)",
                central - base
            );
        }
    }
    println!("load after: {}", load().trim());
}
