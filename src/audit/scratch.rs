//! The audit's working database: a private SQLite file in a scratch directory (removed when
//! the audit ends) into which the ledgers' rows, the manifests' device lines and the
//! certificate files are streamed, so the cross-record checks are indexed queries instead of
//! maps in memory, and the findings are kept there and read back sorted. Memory stays bounded
//! by SQLite's page cache ([`CACHE_KIB`]) whatever the number of devices (issue 14,
//! docs/performance.md "Memory against batch size"); sorts and indexes spill to files.

use super::checks::Leaf;
use super::{CorpusError, Finding, Severity};
use rusqlite::{params, Connection, OptionalExtension, Row};
use std::borrow::Cow;
use time::OffsetDateTime;

/// SQLite's page cache for the working database (and the sorters' memory before they spill).
const CACHE_KIB: i64 = 4096;

/// Tables of what was read. Rows are inserted in the order the audit reads them (ledger by
/// ledger, each table in rowid order, manifests line by line), so `ORDER BY rowid` is the
/// order the checks have always reported in.
const SCHEMA: &str = "
CREATE TABLE dev(li INTEGER, rid INTEGER, profile TEXT, device_id TEXT, batch_id TEXT,
  state TEXT, live INTEGER, spki TEXT, serial TEXT, updated_at TEXT);
CREATE TABLE cert(li INTEGER, rid INTEGER, ikid TEXT, serial TEXT, nserial TEXT, prefix TEXT,
  profile TEXT, device_id TEXT, batch_id TEXT, state TEXT, der_sha TEXT, cert_sha TEXT,
  signed_at TEXT,
  leaf INTEGER,  -- NULL: not examined; 0: did not parse (leaf_err); 1: examined
  leaf_err TEXT, l_spki TEXT, l_serial TEXT, l_na INTEGER, l_issuer TEXT, l_ca INTEGER,
  diffs TEXT,    -- JSON array of profile differences; NULL: not compared
  ndiffs INTEGER);
CREATE TABLE issued(li INTEGER, serial TEXT, sha TEXT);
CREATE TABLE status(li INTEGER, ikid TEXT, serial TEXT, status TEXT);
CREATE TABLE rej(li INTEGER, batch_id TEXT, line INTEGER, device_id TEXT, kind TEXT,
  reason TEXT, at TEXT);
CREATE TABLE att(li INTEGER, id INTEGER, batch_id TEXT, station TEXT, operator TEXT,
  profile TEXT, device_id TEXT, started_at TEXT, outcome TEXT, step TEXT, reason TEXT);
CREATE TABLE mdev(mi INTEGER, line INTEGER, device_id TEXT, serial TEXT, sha TEXT);
CREATE TABLE cfile(path TEXT, idx INTEGER, sha TEXT UNIQUE, serial TEXT, subject TEXT);
CREATE TABLE finding(sev INTEGER, code TEXT, key BLOB, message TEXT, locations TEXT,
  device_id TEXT, serial TEXT);
CREATE TABLE rejected(ledger TEXT, batch_id TEXT, line INTEGER, device_id TEXT,
  category TEXT, reason TEXT);
CREATE TABLE ls(listing INTEGER, name BLOB);
CREATE INDEX ls_name ON ls(listing, name);
";

/// The indexes the checks' lookups and groupings use, made once everything is loaded.
const INDEXES: &str = "
CREATE INDEX cert_dev ON cert(li, profile, device_id, serial);
CREATE INDEX cert_serial ON cert(ikid, nserial);
CREATE INDEX cert_sha ON cert(der_sha);
CREATE INDEX dev_id ON dev(li, profile, device_id, serial);
CREATE INDEX dev_live ON dev(live, profile, device_id);
CREATE INDEX dev_key ON dev(live, spki);
CREATE INDEX issued_at ON issued(li, serial, sha);
CREATE INDEX status_of ON status(li, ikid, serial);
CREATE INDEX att_dev ON att(li, batch_id, device_id);
ANALYZE;
";

/// A `devices` row as stored.
#[derive(Debug, Clone)]
pub struct DeviceRec {
    /// Index of the ledger among the given ones.
    pub li: usize,
    /// The ledger's rowid (for locations).
    pub rowid: i64,
    pub profile: String,
    pub device_id: String,
    pub batch_id: String,
    /// The state column as written (a name of [`crate::ledger::DeviceState`], or other text).
    pub state: String,
    /// SPKI hash, hex.
    pub spki_sha256: String,
    /// Current serial.
    pub serial: Option<String>,
    /// Last change.
    pub updated_at: String,
}

/// A `certificates` row as stored, with what examining its certificate found.
#[derive(Debug, Clone)]
pub struct CertRow {
    /// Index of the ledger among the given ones.
    pub li: usize,
    /// The ledger's rowid.
    pub rowid: i64,
    /// Issuer key id, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    pub profile: String,
    pub device_id: String,
    pub batch_id: String,
    /// The state column as written (intent, signed, burned, or other text).
    pub state: String,
    /// SHA-256 of the certificate DER, hex, when the row holds one.
    pub der_sha256: Option<String>,
    /// Recorded SHA-256 of the DER.
    pub cert_sha256: Option<String>,
    /// The certificate examined while loading (signed rows with DER only).
    pub leaf: Option<Result<Leaf, String>>,
}

/// A device line of a manifest that verified.
#[derive(Debug, Clone)]
pub struct ManifestDevice {
    /// Index of the manifest among the given ones.
    pub mi: usize,
    /// Line number in the manifest file.
    pub line: u64,
    pub device_id: String,
    /// Serial, hex.
    pub serial: String,
    /// SHA-256 of the certificate DER, hex.
    pub cert_sha256: String,
}

/// A device certificate found in a file (`--certs`).
#[derive(Debug, Clone)]
pub struct CertFile {
    pub path: String,
    /// Which certificate in the file (1-based).
    pub index: i64,
    /// Serial (normalized hex; empty when it does not parse).
    pub serial: String,
    /// Subject, text (`(unparseable)` when it does not parse).
    pub subject: String,
}

/// A station attempt as the counts read it.
pub struct AttemptRow {
    pub batch_id: String,
    pub id: i64,
    pub station: String,
    pub operator: Option<String>,
    pub profile: String,
    pub device_id: Option<String>,
    pub started_at: String,
    pub outcome: String,
    pub step: String,
    pub reason: String,
}

/// The working database. The connection is closed before the directory is removed.
pub struct Scratch {
    conn: Connection,
    _dir: crate::output::ScratchDir,
    /// Dropped last, after the database and its directory are gone.
    _home: ProcessHome,
}

/// `TMPDIR/certfab-audit-PID`: this process's home for its working database. Named by the PID
/// so that an audit can tell a home a killed audit left (Ctrl-C does not run destructors, and a
/// million devices leave ~1.8 GB) from one a running audit is using: it removes the homes of
/// processes that no longer exist ([`sweep_dead_homes`]) and never touches a live one's.
struct ProcessHome {
    path: std::path::PathBuf,
}

const HOME_PREFIX: &str = "certfab-audit-";

impl Drop for ProcessHome {
    fn drop(&mut self) {
        // Empty by now (the scratch directory went first); a home left behind is swept later.
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Removes the working directories of audits that were killed: `certfab-audit-PID` homes in
/// `tmp` whose process is gone, that are real directories and this user's. Best effort: what
/// cannot be listed or removed stays for a later run. A home whose PID was reused by another
/// process stays until that one ends.
fn sweep_dead_homes(tmp: &std::path::Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    let me = rustix::process::geteuid().as_raw();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(HOME_PREFIX))
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = rustix::process::Pid::from_raw(pid).is_some_and(|p| {
            matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            )
        });
        let path = entry.path();
        // Not following a link: only a real directory of this user's is emptied.
        let ours = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if gone && ours {
            if let Ok(dir) = crate::output::OutDir::create(&path) {
                let _ = dir.remove_stale_temps();
            }
            let _ = std::fs::remove_dir(&path);
        }
    }
}

impl std::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scratch")
            .field("dir", &self._dir.path())
            .finish()
    }
}

pub(super) type R<T> = Result<T, CorpusError>;

impl From<rusqlite::Error> for CorpusError {
    fn from(e: rusqlite::Error) -> Self {
        CorpusError::Scratch(e.to_string())
    }
}

const CERT_COLS: &str = "c.li, c.rid, c.ikid, c.serial, c.profile, c.device_id, c.batch_id,
    c.state, c.der_sha, c.cert_sha, c.signed_at, c.leaf, c.leaf_err, c.l_spki, c.l_serial, c.l_na,
    c.l_issuer, c.l_ca, c.diffs";
const DEV_COLS: &str = "li, rid, profile, device_id, batch_id, state, spki, serial, updated_at";

fn time_of(ts: Option<i64>) -> Option<OffsetDateTime> {
    ts.and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok())
}

fn cert_of(r: &Row<'_>) -> rusqlite::Result<CertRow> {
    let leaf = match r.get::<_, Option<i64>>(11)? {
        None => None,
        Some(0) => Some(Err(r.get::<_, Option<String>>(12)?.unwrap_or_default())),
        Some(_) => Some(Ok(Leaf {
            spki_sha256: r.get(13)?,
            serial: r.get(14)?,
            not_after: time_of(r.get(15)?),
            issuer_name: r.get(16)?,
            ca: r.get::<_, Option<i64>>(17)?.map(|i| i as usize),
            profile_diffs: r
                .get::<_, Option<String>>(18)?
                .map(|d| serde_json::from_str(&d).unwrap_or_default()),
        })),
    };
    Ok(CertRow {
        li: r.get::<_, i64>(0)? as usize,
        rowid: r.get(1)?,
        issuer_key_id: r.get(2)?,
        serial: r.get(3)?,
        profile: r.get(4)?,
        device_id: r.get(5)?,
        batch_id: r.get(6)?,
        state: r.get(7)?,
        der_sha256: r.get(8)?,
        cert_sha256: r.get(9)?,
        leaf,
    })
}

fn dev_of(r: &Row<'_>) -> rusqlite::Result<DeviceRec> {
    Ok(DeviceRec {
        li: r.get::<_, i64>(0)? as usize,
        rowid: r.get(1)?,
        profile: r.get(2)?,
        device_id: r.get(3)?,
        batch_id: r.get(4)?,
        state: r.get(5)?,
        spki_sha256: r.get(6)?,
        serial: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// The bytes whose order (memcmp, shorter first) is the order of
/// [`super::natural_key`]: each (text, number) piece as 0x01, the text with NUL escaped,
/// a 0x00 0x00 end, and the number big-endian.
pub(super) fn sort_key(locations: &[String]) -> Vec<u8> {
    let mut k = Vec::new();
    for (text, num) in super::natural_key(locations) {
        k.push(1);
        for b in text.bytes() {
            k.push(b);
            if b == 0 {
                k.push(0xff);
            }
        }
        k.extend_from_slice(&[0, 0]);
        k.extend_from_slice(&num.to_be_bytes());
    }
    k
}

fn severity_of(n: i64) -> Severity {
    Severity::ALL
        .get(n.clamp(0, 4) as usize)
        .copied()
        .unwrap_or(Severity::Info)
}

impl Scratch {
    /// A new, empty working database in a private directory under the system's temporary
    /// directory (`TMPDIR`), after removing what killed audits left there.
    pub fn create() -> R<Self> {
        let tmp = std::env::temp_dir();
        let werr = |e: crate::output::WriteError| {
            CorpusError::Scratch(format!("{}: {}", e.path.display(), e.msg))
        };
        sweep_dead_homes(&tmp);
        let home = ProcessHome {
            path: tmp.join(format!("{HOME_PREFIX}{}", std::process::id())),
        };
        let dir = crate::output::OutDir::create(&home.path)
            .map_err(werr)?
            .scratch_dir()
            .map_err(werr)?;
        let path = dir.path().join("audit.sqlite");
        let conn = Connection::open(&path)?;
        // Every query the loading, checks and counts use stays prepared (rusqlite keeps 16).
        conn.set_prepared_statement_cache_capacity(64);
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF; PRAGMA temp_store = FILE;
             PRAGMA cache_size = -{CACHE_KIB}; PRAGMA mmap_size = 0;
             PRAGMA locking_mode = EXCLUSIVE; {SCHEMA} BEGIN;"
        ))?;
        Ok(Self {
            conn,
            _dir: dir,
            _home: home,
        })
    }

    pub(super) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Commits what was loaded, makes the indexes and starts the checks' transaction.
    pub(super) fn loaded(&self) -> R<()> {
        self.conn
            .execute_batch(&format!("COMMIT; {INDEXES} BEGIN;"))?;
        Ok(())
    }

    /// Commits the findings and counts.
    pub(super) fn done(&self) -> R<()> {
        self.conn.execute_batch("COMMIT;")?;
        Ok(())
    }

    /// Certificate rows matching `filter` (SQL over the `cert` table, with `?1…` params), in
    /// the order they were read.
    pub(super) fn certs(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
        mut f: impl FnMut(CertRow) -> R<()>,
    ) -> R<()> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {CERT_COLS} FROM cert c WHERE {filter} ORDER BY rowid"
        ))?;
        let mut rows = st.query(params)?;
        while let Some(r) = rows.next()? {
            f(cert_of(r)?)?;
        }
        Ok(())
    }

    /// Device rows matching `filter`, in the order they were read.
    pub(super) fn devices(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
        mut f: impl FnMut(DeviceRec) -> R<()>,
    ) -> R<()> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {DEV_COLS} FROM dev WHERE {filter} ORDER BY rowid"
        ))?;
        let mut rows = st.query(params)?;
        while let Some(r) = rows.next()? {
            f(dev_of(r)?)?;
        }
        Ok(())
    }

    /// Rows of any query, each mapped by `f`, one at a time.
    pub(super) fn each<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl Fn(&Row<'_>) -> rusqlite::Result<T>,
        mut f: impl FnMut(T) -> R<()>,
    ) -> R<()> {
        let mut st = self.conn.prepare_cached(sql)?;
        let mut rows = st.query(params)?;
        while let Some(r) = rows.next()? {
            f(map(r)?)?;
        }
        Ok(())
    }

    /// The first row of a query, if any.
    pub(super) fn first<T>(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
        map: impl FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    ) -> R<Option<T>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(params, map)
            .optional()?)
    }

    /// Manifest device lines matching `filter`, in file order.
    pub(super) fn manifest_devices(
        &self,
        filter: &str,
        mut f: impl FnMut(ManifestDevice) -> R<()>,
    ) -> R<()> {
        self.each(
            &format!(
                "SELECT mi, line, device_id, serial, sha FROM mdev m WHERE {filter} ORDER BY rowid"
            ),
            [],
            |r| {
                Ok(ManifestDevice {
                    mi: r.get::<_, i64>(0)? as usize,
                    line: r.get::<_, i64>(1)? as u64,
                    device_id: r.get(2)?,
                    serial: r.get(3)?,
                    cert_sha256: r.get(4)?,
                })
            },
            &mut f,
        )
    }

    /// Certificate files matching `filter`, in the order they were found.
    pub(super) fn cert_files(&self, filter: &str, mut f: impl FnMut(CertFile) -> R<()>) -> R<()> {
        self.each(
            &format!(
                "SELECT path, idx, serial, subject FROM cfile c WHERE {filter} ORDER BY rowid"
            ),
            [],
            |r| {
                Ok(CertFile {
                    path: r.get(0)?,
                    index: r.get(1)?,
                    serial: r.get(2)?,
                    subject: r.get(3)?,
                })
            },
            &mut f,
        )
    }

    /// A number a query returns (0 for NULL or no row).
    pub(super) fn count(&self, sql: &str, params: impl rusqlite::Params) -> R<u64> {
        Ok(self
            .first(sql, params, |r| r.get::<_, Option<i64>>(0))?
            .flatten()
            .unwrap_or(0)
            .max(0) as u64)
    }

    /// Stores a finding.
    pub(super) fn push(&self, f: &Finding) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO finding(sev, code, key, message, locations, device_id, serial)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                Severity::ALL
                    .iter()
                    .position(|s| *s == f.severity)
                    .unwrap_or(0) as i64,
                f.code.as_ref(),
                sort_key(&f.locations),
                f.message,
                serde_json::to_string(&f.locations).unwrap_or_else(|_| "[]".into()),
                f.device_id,
                f.serial,
            ])?;
        Ok(())
    }

    /// Findings, most severe first, then by code and location (`row 9` before `row 10`), ties
    /// in the order they were found; at most `limit`.
    pub fn findings(&self, limit: Option<u64>, mut f: impl FnMut(Finding) -> R<()>) -> R<()> {
        let lim = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        self.each(
            "SELECT sev, code, message, locations, device_id, serial FROM finding
             ORDER BY sev DESC, code, key, rowid LIMIT ?1",
            [lim],
            |r| {
                Ok(Finding {
                    severity: severity_of(r.get(0)?),
                    code: Cow::Owned(r.get(1)?),
                    message: r.get(2)?,
                    locations: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    device_id: r.get(4)?,
                    serial: r.get(5)?,
                })
            },
            &mut f,
        )
    }

    /// Stores a rejected request for the report's list.
    pub(super) fn push_rejected(&self, r: &super::counts::RejectedItem) -> R<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO rejected(ledger, batch_id, line, device_id, category, reason)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                r.ledger,
                r.batch_id,
                r.line,
                r.device_id,
                r.category,
                r.reason
            ])?;
        Ok(())
    }

    /// The rejected requests in report order; at most `limit`.
    pub fn rejected(
        &self,
        limit: Option<u64>,
        mut f: impl FnMut(super::counts::RejectedItem) -> R<()>,
    ) -> R<()> {
        let lim = limit.map_or(-1, |l| l.min(i64::MAX as u64) as i64);
        self.each(
            "SELECT ledger, batch_id, line, device_id, category, reason FROM rejected
             ORDER BY rowid LIMIT ?1",
            [lim],
            |r| {
                Ok(super::counts::RejectedItem {
                    ledger: r.get(0)?,
                    batch_id: r.get(1)?,
                    line: r.get(2)?,
                    device_id: r.get(3)?,
                    category: super::counts::category_name(&r.get::<_, String>(4)?),
                    reason: r.get(5)?,
                })
            },
            &mut f,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stored key sorts as the report has always sorted: `row 9` before `row 10`, a
    /// shorter location before a longer one it begins, NUL and digits where they fall.
    #[test]
    fn sort_key_orders_like_natural_key() {
        let cases: Vec<Vec<String>> = [
            vec!["l.sqlite devices row 10"],
            vec!["l.sqlite devices row 9"],
            vec!["l.sqlite devices row 9", "m.jsonl line 2"],
            vec!["l.sqlite devices row 9", "m.jsonl line 10"],
            vec!["l.sqlite devices row"],
            vec!["l.sqlite devices"],
            vec!["l.sqlite certificates row 100"],
            vec!["a\u{0}b"],
            vec!["a"],
            vec!["a0"],
            vec!["a00"],
            vec!["a 18446744073709551615"],
            vec!["a 99999999999999999999999"],
            vec![],
            vec![""],
        ]
        .iter()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .collect();
        for a in &cases {
            for b in &cases {
                assert_eq!(
                    sort_key(a).cmp(&sort_key(b)),
                    super::super::natural_key(a).cmp(&super::super::natural_key(b)),
                    "{a:?} vs {b:?}"
                );
            }
        }
    }

    /// The working database lives in a private directory that is gone when the audit ends.
    #[test]
    fn scratch_directory_is_private_and_removed() {
        let s = Scratch::create().unwrap();
        let dir = s._dir.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.join("audit.sqlite").exists());
        let home = s._home.path.clone();
        drop(s);
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(!home.exists(), "{} left behind", home.display());
    }
}
