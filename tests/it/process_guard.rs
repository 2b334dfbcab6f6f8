//! Issue 10, the process and ledger-file items: what reaches a station adapter's environment
//! (item 2), one lock whatever path reaches the ledger (5), an emptied ledger refused (6),
//! ledger file modes under umask 000 (7), no core dumps and no adapter outliving certfab (8),
//! and the messages for `ulimit -f` and a garbage ledger (14). Every run uses a fresh dev line
//! (SoftHSM token, real SQLite file) and the simulated devices of station-scripts/sim-device.py
//! over real pipes.

use crate::common;

use crate::common::{derived_profile, repo, text, Line};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn sim() -> PathBuf {
    repo().join("station-scripts/sim-device.py")
}

/// A simulated line of `n` devices with the given faults (`NAME=SPEC`).
fn make_line(dir: &Path, n: usize, faults: &[&str]) -> PathBuf {
    let line = dir.join("sim-line");
    let mut cmd = Command::new(sim());
    cmd.arg("make-line")
        .arg(&line)
        .args(["--count", &n.to_string()]);
    for f in faults {
        cmd.args(["--fault", f]);
    }
    let out = cmd.output().expect("run sim-device.py");
    assert!(out.status.success(), "make-line: {}", text(&out));
    line
}

/// An `exec:` adapter that records what it was started with (its environment in
/// `ADAPTER.env`, its core size limit in `ADAPTER.core`, its pid appended to `ADAPTER.pid`) and
/// then becomes the simulator serving `line`: what a user would put in front of a real
/// adapter to see what it gets.
fn recording_adapter(dir: &Path, line: &Path) -> (String, PathBuf) {
    let script = dir.join("record-adapter.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nrec=$1; shift\nenv > \"$rec.env\"\nulimit -c > \"$rec.core\"\necho $$ >> \"$rec.pid\"\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let rec = dir.join("adapter");
    (
        format!(
            "exec:{} {} {} serve {}",
            script.display(),
            rec.display(),
            sim().display(),
            line.display()
        ),
        rec,
    )
}

/// `file` of the recording adapter, e.g. "env".
fn recorded(rec: &Path, what: &str) -> String {
    let mut p = rec.as_os_str().to_owned();
    p.push(format!(".{what}"));
    std::fs::read_to_string(PathBuf::from(p)).unwrap_or_default()
}

/// certfab with `config`, started through `sh` so the umask can be set first.
fn certfab_cmd(config: &Path, umask: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
        .arg(common::bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// A copy of the line's site config named `name` with `from` replaced by `to`.
fn config_variant(l: &Line, name: &str, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(l.config()).unwrap();
    assert!(text.contains(from), "certfab.yaml has no {from:?}");
    let p = l.file(name);
    std::fs::write(&p, text.replace(from, to)).unwrap();
    p
}

/// The state of `device` in the ledger at `ledger`, read-only (tolerates a busy ledger).
fn device_state(ledger: &Path, device: &str) -> Option<String> {
    let db =
        rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .ok()?;
    db.query_row(
        "SELECT state FROM devices WHERE device_id = ?1",
        [device],
        |r| r.get(0),
    )
    .ok()
}

fn count_certificates(ledger: &Path) -> i64 {
    rusqlite::Connection::open_with_flags(ledger, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("SELECT COUNT(*) FROM certificates", [], |r| r.get(0))
        .unwrap()
}

/// Whether process `pid` is still running (a zombie waiting for its reaper is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X') | None
        ),
        Err(_) => false,
    }
}

/// A station shift holding the ledger: certfab is installing SIM-0001, whose install takes ten
/// minutes of device time. Dropping it kills certfab and, if still there, the adapter.
struct Held {
    certfab: Child,
    adapter: u32,
    rec: PathBuf,
    stderr: PathBuf,
}

impl Held {
    fn start(l: &Line, config: &Path, umask: &str) -> Self {
        let line = make_line(l.path(), 1, &["SIM-0001=slow:install:600000"]);
        let profile = derived_profile(
            l.path(),
            "slow-install.yaml",
            "generic-iot.yaml",
            &[("install: 30s", "install: 900s")],
        );
        let (adapter, rec) = recording_adapter(l.path(), &line);
        let stderr = l.file("held-station.err");
        let certfab = certfab_cmd(
            config,
            umask,
            &[
                "--json",
                "station",
                "--profile",
                profile.to_str().unwrap(),
                "--adapter",
                &adapter,
                "--operator",
                "alice",
            ],
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
        let mut held = Self {
            certfab,
            adapter: 0,
            rec,
            stderr,
        };
        let t0 = Instant::now();
        while device_state(&l.file("ledger.sqlite"), "SIM-0001").as_deref() != Some("installing") {
            if let Some(s) = held.certfab.try_wait().unwrap() {
                panic!(
                    "the station ended ({s:?}) before installing:\n{}",
                    std::fs::read_to_string(&held.stderr).unwrap_or_default()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "never reached install"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        held.adapter = recorded(&held.rec, "pid")
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .expect("adapter pid");
        assert!(alive(held.adapter), "the adapter is running");
        held
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.certfab.kill();
        let _ = self.certfab.wait();
        if self.adapter != 0 && alive(self.adapter) {
            let _ = Command::new("kill")
                .args(["-9", &self.adapter.to_string()])
                .status();
        }
    }
}

/// `certfab batch` of `n` host-keygen devices named `PREFIX001…` into `out`.
fn batch_args(n: usize, prefix: &str, out: &Path) -> Vec<String> {
    [
        "batch",
        "--profile",
        "generic-iot",
        "--count",
        &n.to_string(),
        "--keygen",
        "host",
        "--plain-keys",
        "--id-template",
        &format!("{prefix}{{seq:03}}"),
        "--out",
        out.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec()
}

fn run(config: &Path, args: &[String]) -> Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    certfab_cmd(config, "022", &a).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

// ---------------------------------------------------------------------------------------------
// Item 2: the adapter's environment.

#[test]
fn item2_adapter_environment_has_no_pin_passphrase_or_token_config() {
    let l = Line::new();
    let pin = std::fs::read_to_string(l.file("pin")).unwrap();
    let pin = pin.trim();
    let config = config_variant(&l, "env-pin.yaml", "pin: file:pin", "pin: env:CF_PIN");
    let line = make_line(l.path(), 1, &[]);
    let (adapter, rec) = recording_adapter(l.path(), &line);
    let softhsm_conf = l.file("softhsm2.conf");
    let out = certfab_cmd(
        &config,
        "022",
        &[
            "--json",
            "station",
            "--profile",
            "generic-iot",
            "--adapter",
            &adapter,
            "--operator",
            "alice",
        ],
    )
    .env("CF_PIN", pin)
    .env("SOFTHSM2_CONF", &softhsm_conf)
    .env("CF_KEY_PASSPHRASE", "correct horse battery staple")
    .env("LD_LIBRARY_PATH", "/opt/hsm-vendor/lib")
    .env("LANG", "C.UTF-8")
    .env("TZ", "UTC")
    .output()
    .unwrap();
    // The PIN came from the environment and the device was provisioned by an adapter that
    // found its interpreter through the PATH it was given.
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"verdict\":\"pass\""),
        "{}",
        text(&out)
    );

    let env = recorded(&rec, "env");
    let names: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect();
    for secret in [
        "CF_PIN",
        "SOFTHSM2_CONF",
        "CF_KEY_PASSPHRASE",
        "LD_LIBRARY_PATH",
    ] {
        assert!(
            !names.contains(&secret),
            "{secret} reached the adapter:\n{env}"
        );
    }
    assert!(
        !env.contains(pin),
        "the PIN value reached the adapter:\n{env}"
    );
    assert!(
        !env.contains(softhsm_conf.to_str().unwrap()),
        "the token config reached the adapter:\n{env}"
    );
    // What the adapter is promised (docs/station-protocol.md "Environment").
    for kept in ["PATH", "LANG", "TZ"] {
        assert!(names.contains(&kept), "{kept} missing:\n{env}");
    }
}

// ---------------------------------------------------------------------------------------------
// Item 5: one lock, whatever path reaches the ledger.

#[test]
fn item5_second_process_through_another_path_to_the_ledger_is_refused() {
    let l = Line::new();
    // The first run creates the ledger; the station then holds it.
    let first = run(&l.config(), &batch_args(1, "FIRST", &l.file("out-first")));
    assert!(first.status.success(), "{}", text(&first));
    let ledger = l.file("ledger.sqlite");
    let mut held = Held::start(&l, &l.config(), "022");
    let before = count_certificates(&ledger);

    // Three other names for the same file: a symlink to it, a path through a symlinked
    // directory (what a bind mount looks like to a path-based lock), and a hard link.
    std::os::unix::fs::symlink(&ledger, l.file("alias.sqlite")).unwrap();
    let dir_alias = l.path().parent().unwrap().join(format!(
        "{}-alias",
        l.path().file_name().unwrap().to_string_lossy()
    ));
    std::os::unix::fs::symlink(l.path(), &dir_alias).unwrap();
    std::fs::hard_link(&ledger, l.file("hard.sqlite")).unwrap();
    let dir_alias_ledger = dir_alias.join("ledger.sqlite");
    let ways = [
        ("symlink", l.file("alias.sqlite")),
        ("symlinked directory", dir_alias_ledger.clone()),
        ("hard link", l.file("hard.sqlite")),
    ];
    for (i, (how, path)) in ways.iter().enumerate() {
        let cfg = config_variant(
            &l,
            &format!("via-{i}.yaml"),
            "ledger: ledger.sqlite",
            &format!("ledger: {}", path.display()),
        );
        let out_dir = l.file(&format!("out-{i}"));
        let o = run(&cfg, &batch_args(1, &format!("OTHER{i}-"), &out_dir));
        assert_eq!(o.status.code(), Some(5), "{how}: {}", text(&o));
        assert!(
            stderr(&o).contains("in use by another certfab process"),
            "{how}: {}",
            text(&o)
        );
        assert!(!out_dir.join(format!("OTHER{i}-001")).exists(), "{how}");
    }
    assert_eq!(
        count_certificates(&ledger),
        before,
        "nothing reserved meanwhile"
    );
    assert!(
        held.certfab_running(),
        "the first process was not disturbed"
    );
    drop(held);

    // Even with nobody holding it, a second name for the file is refused: SQLite's -wal file
    // follows the name, so a run through the other name could miss committed records.
    let via_hard = l.file("via-2.yaml");
    let o = run(&via_hard, &batch_args(1, "HARD", &l.file("out-hard")));
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(stderr(&o).contains("hard links"), "{}", text(&o));
    std::fs::remove_file(l.file("hard.sqlite")).unwrap();
    // With one name left, the symlinked paths reach the same ledger (the same marker, the same
    // records): a device issued through one is known through the other.
    let o = run(
        &l.file("via-0.yaml"),
        &batch_args(1, "FIRST", &l.file("out-first")),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("1 already done"),
        "{}",
        text(&o)
    );
    let _ = std::fs::remove_file(&dir_alias);
}

impl Held {
    fn certfab_running(&mut self) -> bool {
        self.certfab.try_wait().unwrap().is_none()
    }
}

// ---------------------------------------------------------------------------------------------
// Item 6: a ledger that existed and lost its content.

#[test]
fn item6_emptied_or_missing_ledger_is_refused_once_the_site_has_issued() {
    let l = Line::new();
    let ledger = l.file("ledger.sqlite");
    let marker = l.file("ledger.sqlite.created");
    let out = l.file("out");
    let args = batch_args(3, "SN", &out);
    // A fresh site creates its ledger on first use, with no extra step.
    assert!(!ledger.exists() && !marker.exists());
    let o = run(&l.config(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let cert = std::fs::read(out.join("SN001/cert.pem")).unwrap();
    let backup = l.file("backup.sqlite");
    std::fs::copy(&ledger, &backup).unwrap();

    // `: > ledger.sqlite`, a deleted ledger, a blank SQLite file: each refused, nothing signed.
    let blank = |p: &Path| {
        std::fs::remove_file(p).unwrap();
        let c = rusqlite::Connection::open(p).unwrap();
        c.execute_batch("CREATE TABLE t (x); DROP TABLE t;")
            .unwrap();
    };
    type Damage<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Damage); 3] = [
        ("empty (0 bytes)", &|p: &Path| {
            std::fs::File::create(p).unwrap();
        }),
        ("missing", &|p: &Path| std::fs::remove_file(p).unwrap()),
        ("a blank database", &blank),
    ];
    for (how, damage) in cases {
        let _ = std::fs::remove_file(&ledger);
        std::fs::copy(&backup, &ledger).unwrap();
        damage(&ledger);
        let o = run(&l.config(), &args);
        assert_eq!(o.status.code(), Some(5), "{how}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("is {how}"))
                && err.contains("Restore the ledger from a backup")
                && err.contains("ledger.sqlite.created"),
            "{how}: {err}"
        );
        assert_eq!(
            std::fs::read(out.join("SN001/cert.pem")).unwrap(),
            cert,
            "{how}: nothing re-signed"
        );
        // No ledger was started in its place.
        if how == "missing" {
            assert!(!ledger.exists(), "{how}");
        } else {
            let objects: i64 = rusqlite::Connection::open_with_flags(
                &ledger,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )
            .unwrap()
            .query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
            assert_eq!(objects, 0, "{how}");
        }
    }

    // What made the refusal possible: the marker written with the ledger.
    assert!(marker.exists());
    // The fix the message states: the backup restored, the same batch finds its devices.
    std::fs::remove_file(&ledger).unwrap();
    std::fs::copy(&backup, &ledger).unwrap();
    let o = run(&l.config(), &args);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("3 already done"),
        "{}",
        text(&o)
    );
    // Starting over on purpose: the marker moved away first.
    std::fs::File::create(&ledger).unwrap();
    std::fs::rename(&marker, l.file("old-ledger.created")).unwrap();
    let o = run(&l.config(), &batch_args(1, "NEW", &l.file("out-new")));
    assert!(o.status.success(), "{}", text(&o));
    assert!(marker.exists());
}

// ---------------------------------------------------------------------------------------------
// Item 7: ledger files 0600 whatever the umask.

#[test]
fn item7_ledger_and_its_files_are_0600_under_umask_000() {
    let l = Line::new();
    // A ledger in a directory certfab creates.
    let config = config_variant(
        &l,
        "state.yaml",
        "ledger: ledger.sqlite",
        "ledger: state/ledger.sqlite",
    );
    let out = l.file("out");
    let mut cmd = certfab_cmd(
        &config,
        "000",
        &batch_args(2, "U", &out)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let state = l.file("state");
    assert_eq!(mode(&state) & 0o027, 0, "directory {:o}", mode(&state));
    for f in ["ledger.sqlite", "ledger.sqlite.created"] {
        assert_eq!(mode(&state.join(f)), 0o600, "{f}");
    }

    // While a station runs under umask 000, the -wal and -shm files exist: 0600 too, and no
    // lock file beside them for another user to hold.
    let held_cfg = l.config();
    let held = Held::start(&l, &held_cfg, "000");
    let mut files: Vec<(String, u32)> = std::fs::read_dir(l.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("ledger."))
        .map(|n| {
            let m = mode(&l.file(&n));
            (n, m)
        })
        .collect();
    files.sort();
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "ledger.sqlite",
            "ledger.sqlite-shm",
            "ledger.sqlite-wal",
            "ledger.sqlite.created"
        ],
        "{files:?}"
    );
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
    drop(held);

    // A ledger an older certfab left world-readable is tightened on the next open.
    std::fs::set_permissions(
        state.join("ledger.sqlite"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let o = run(&config, &batch_args(2, "U", &out));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(mode(&state.join("ledger.sqlite")), 0o600);
}

// ---------------------------------------------------------------------------------------------
// Item 8: no core dumps; the adapter dies with certfab.

#[test]
fn item8_no_core_dumps_and_the_adapter_dies_when_certfab_is_killed() {
    let l = Line::new();
    let mut held = Held::start(&l, &l.config(), "022");
    let pid = held.certfab.id();
    // What a user checks: the limits of the running process (and of the adapter it started).
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], ["0", "0"], "{core}");
    assert_eq!(recorded(&held.rec, "core").trim(), "0");

    // SIGKILL: certfab runs no code at all, yet the adapter must not be left running.
    held.certfab.kill().unwrap();
    held.certfab.wait().unwrap();
    let t0 = Instant::now();
    while alive(held.adapter) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "adapter {} still running {:?} after certfab was killed",
            held.adapter,
            t0.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "adapter gone {} ms after certfab's SIGKILL",
        t0.elapsed().as_millis()
    );
}

// ---------------------------------------------------------------------------------------------
// Item 14: messages for a file size limit and a garbage ledger.

#[test]
fn item14_file_size_limit_is_reported_not_a_silent_kill() {
    let l = Line::new();
    let out = l.file("out");
    let args = batch_args(300, "FS", &out);
    // 500 KB (dash counts 512-byte blocks): the ledger of 300 devices needs about twice that.
    let o = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 1000; exec \"$0\" \"$@\"")
        .arg(common::bin())
        .arg("--config")
        .arg(l.config())
        .args(&args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    let err = stderr(&o);
    assert!(
        err.contains("file size limit") && err.contains("ulimit -f"),
        "{err}"
    );
    assert!(err.contains("stopped before the next signature"), "{err}");
    // With the limit raised, the same command finishes the batch: every device signed once.
    let o = run(&l.config(), &args);
    assert!(o.status.success(), "{}", text(&o));
    let db = common::ledger(&l);
    let (devices, signed): (i64, i64) = db
        .query_row(
            "SELECT (SELECT COUNT(*) FROM devices WHERE state = 'signed'),
                    (SELECT COUNT(*) FROM certificates WHERE state = 'signed')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((devices, signed), (300, 300));
}

#[test]
fn item14_garbage_ledger_is_named_not_a_ledger_and_left_alone() {
    let l = Line::new();
    let ledger = l.file("ledger.sqlite");
    let out = l.file("out");
    let mut garbage = b"certfab? no: ".to_vec();
    garbage.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&ledger, &garbage).unwrap();
    for args in [
        batch_args(2, "G", &out),
        vec!["batch".into(), "status".into()],
    ] {
        let o = run(&l.config(), &args);
        assert_eq!(o.status.code(), Some(5), "{args:?}: {}", text(&o));
        let err = stderr(&o);
        assert!(
            err.contains("is not a certfab ledger or is damaged")
                && err.contains("restore it from a backup"),
            "{err}"
        );
        assert!(!err.contains("disk space"), "{err}");
        assert_eq!(std::fs::read(&ledger).unwrap(), garbage, "left as it was");
    }
    assert!(!out.join("G001").exists());

    // Another program's SQLite database: not a ledger either, and no certfab table is added.
    std::fs::remove_file(&ledger).unwrap();
    let c = rusqlite::Connection::open(&ledger).unwrap();
    c.execute_batch("CREATE TABLE inventory (part TEXT); INSERT INTO inventory VALUES ('x');")
        .unwrap();
    drop(c);
    let o = run(&l.config(), &batch_args(2, "G", &out));
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(stderr(&o).contains("no certfab schema"), "{}", text(&o));
    let c = rusqlite::Connection::open(&ledger).unwrap();
    let tables: i64 = c
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1);
}

/// Closing any descriptor of a file drops every POSIX lock the process holds on it, SQLite's
/// included. If certfab opened a second descriptor of a ledger it holds (a second writer in the
/// same process, or a reader such as a batch's prepare thread) and closed it, SQLite's shared
/// lock would be gone, and the next program to close its own connection (a `batch status`, an
/// `sqlite3` shell) would believe it was the last one and checkpoint and delete the -wal file
/// under the running writer.
#[test]
fn item5_a_second_open_in_the_same_process_keeps_the_writers_locks() {
    use certfab::{Ledger, LedgerError};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    let wal = dir.path().join("ledger.sqlite-wal");
    let writer = Ledger::open(&path, "s1").unwrap();
    assert!(wal.exists());
    // Through a symlink too: the same file.
    std::os::unix::fs::symlink(&path, dir.path().join("alias.sqlite")).unwrap();
    for p in [path.clone(), dir.path().join("alias.sqlite")] {
        assert!(matches!(
            Ledger::open(&p, "s1"),
            Err(LedgerError::Locked(_))
        ));
    }
    drop(Ledger::open_read(&path, "s1").unwrap());
    // Another process opens and closes the ledger, as `batch status` does.
    let o = Command::new(common::python())
        .arg("-c")
        .arg("import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT COUNT(*) FROM sqlite_master').fetchone(); c.close()")
        .arg(&path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        wal.exists(),
        "the -wal file was checkpointed away under the open writer"
    );
    drop(writer);
    // Released: the ledger opens again.
    drop(Ledger::open(&path, "s1").unwrap());
}
