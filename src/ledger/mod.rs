//! The ledger: a SQLite file (WAL, `synchronous=FULL`) or a central PostgreSQL database
//! (docs/central-ledger.md) that records every serial reserved, every certificate signed, every
//! rejection and a hash-chained audit trail. Both back ends run the same statements through
//! one seam ([`db`]); nothing above this module knows which one it has.
//!
//! Write order is the safety argument (DESIGN.md invariants 2, 5, 6, 7): the serial and TBS are
//! committed as an *intent* before the HSM is asked; the signed certificate is committed before
//! any file is written; an intent found at start-up (the process died in between) is burned,
//! never signed again. Every write is a transaction; when one fails the caller stops before the
//! next signature.

mod audit;
pub(crate) mod db;
mod import;
mod lease;
mod lifecycle;
mod location;
mod manifests;
#[cfg(test)]
mod migration_tests;
mod preview;
mod recover;
mod rules;
mod schema;
mod states;
mod station;

pub use crate::config::{LedgerLocation, PgTarget, PgTls};
pub use audit::{
    AuditEvent, AuditHead, ChainBreak, ChainReport, ChainVerifier, SignedCheckpoint, GENESIS,
};
pub use import::{ImportError, ImportReport};
pub use lifecycle::{CertRecord, CrlRecord};
pub use manifests::{ExportRow, ManifestRow, PendingManifest};
pub use preview::{LedgerPreview, ReservePreview};
pub use recover::RecoverReport;
pub use states::{CertState, DeviceState, KeyOrigin};
pub use station::{Attempt, StateChange};

use crate::clock::{Clock, SystemClock};
use db::{p, Conn, ToValue};
use rusqlite::Connection;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A ledger that cannot be used, or a write that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// Cannot open or set up.
    #[error("ledger {path}: {msg}")]
    Open {
        path: String,
        /// Why, and the fix.
        msg: String,
    },
    /// Written by a newer certfab.
    #[error("ledger {path} has schema version {found}, newer than this certfab knows ({supported}); use a newer certfab")]
    TooNew {
        path: String,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// Another process holds the ledger.
    #[error("ledger {0} is in use by another certfab process; wait for it to finish or stop it")]
    Locked(String),
    /// The file is not a certfab ledger: garbage, another program's database, or damaged.
    #[error("ledger {path} is not a certfab ledger or is damaged ({detail}); check the ledger: path in the site config, and if it is the right file, restore it from a backup (certfab leaves it as it is)")]
    NotALedger {
        path: String,
        /// What SQLite or the schema check said.
        detail: String,
    },
    /// The ledger existed (its marker file says so) and is now missing or empty.
    #[error("ledger {path} is {how}, but this site's ledger was recorded on {recorded_at} ({marker}): its records of every serial and device issued are gone, and starting over would sign every device again. Restore the ledger from a backup (with its -wal file if there is one) and run again; only to start a new, empty ledger on purpose, move {marker} away first")]
    Lost {
        path: String,
        /// missing, empty, blank.
        how: String,
        /// The marker file.
        marker: String,
        /// When the marker was written.
        recorded_at: String,
    },
    /// A statement or commit failed: nothing more is signed.
    #[error("{}", write_message(.0))]
    Write(#[from] rusqlite::Error),
    /// A PostgreSQL statement or commit failed, or the server went away: nothing more is
    /// signed, and the same command resumes once the server is back.
    #[error("ledger {}", location::server_message(.0))]
    Server(#[from] postgres::Error),
    /// A value in the ledger is not what this certfab wrote there.
    #[error("ledger data is not what certfab wrote ({0}); check the ledger with certfab log verify and audit")]
    Data(String),
    /// Another process has been building a manifest on this central ledger for longer than
    /// a build waits.
    #[error("ledger {path}: {holder} has been building a manifest on this ledger for over {waited_s} s, and manifests are built one at a time (each chains to the last); run the build again when it has finished")]
    ManifestBusy {
        path: String,
        /// Who holds it (its `application_name`), as far as the server says.
        holder: String,
        /// How long this build waited.
        waited_s: u64,
    },
    /// The ledger password could not be read from its source.
    #[error("ledger_password: {0}")]
    Secret(String),
}

impl LedgerError {
    /// A ledger failure is a storage failure (exit 5); an unreadable password source is a
    /// configuration error (exit 2).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Secret(_) => crate::exit::ExitCode::Usage,
            _ => crate::exit::ExitCode::Storage,
        }
    }
}

/// What happened to a failed ledger write and what to do, by SQLite's error code (a full disk,
/// a file size limit, permissions and a damaged file need different fixes).
fn write_message(e: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode as C;
    let (what, fix) = if crate::process::file_size_limit_hit() {
        (
            "the process file size limit (ulimit -f) was reached",
            "Raise the limit (ulimit -f unlimited), then run the same command again (a batch resumes)",
        )
    } else {
        match e.sqlite_error_code() {
            Some(C::DiskFull) => (
                "the disk is full",
                "Free disk space, then run the same command again (a batch resumes)",
            ),
            Some(C::ReadOnly | C::CannotOpen | C::PermissionDenied) => (
                "the ledger or its directory cannot be written",
                "Fix the permissions of the ledger, its -wal and -shm files and its directory, then run again",
            ),
            Some(C::NotADatabase | C::DatabaseCorrupt) => (
                "the ledger file is damaged",
                "Stop using it and restore it from a backup",
            ),
            Some(C::DatabaseBusy | C::DatabaseLocked) => (
                "another program holds the database (an sqlite3 shell, a backup tool)",
                "Close it, then run again",
            ),
            Some(C::SystemIoFailure) => (
                "the disk reported an I/O error",
                "Check the disk holding the ledger (dmesg), then run again",
            ),
            _ => (
                "",
                "Check the ledger file and its disk, then run the same command again",
            ),
        }
    };
    let sep = if what.is_empty() { "" } else { ": " };
    format!("ledger write failed ({e}){sep}{what}; stopped before the next signature. {fix}")
}

/// Filesystems where SQLite's locking and fsync cannot be trusted.
const NETWORK_FS: &[(i64, &str)] = &[
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x0102_1997, "9P"),
    (0x5346_414F, "AFS"),
    (0x00C3_6400, "Ceph"),
    (0x0BD0_0BD0, "Lustre"),
    (0x6573_5546, "FUSE"),
];

/// Identity of a batch: re-running the same command finds the same batch.
#[derive(Debug, Clone)]
pub struct BatchSpec {
    /// Hash of what makes two runs the same batch.
    pub input_key: String,
    /// Profile name.
    pub profile: String,
    /// Profile file hash.
    pub profile_sha256: String,
    /// CA name.
    pub ca: String,
    /// Human description of the input.
    pub source: String,
    /// Output directory.
    pub out_dir: String,
    /// Tenant of the profile (and its CA), if the site declares tenants.
    pub tenant: Option<String>,
}

/// A batch as recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchRow {
    /// Batch id.
    pub id: String,
    /// Profile name.
    pub profile: String,
    /// CA name.
    pub ca: String,
    /// Input description.
    pub source: String,
    /// Output directory.
    pub out_dir: String,
    pub station: String,
    pub created_at: String,
    /// Finished (all input processed), if so.
    pub finished_at: Option<String>,
}

/// One device's reservation: committed before its TBS goes to the HSM.
#[derive(Debug, Clone)]
pub struct Intent {
    /// Profile name.
    pub profile: String,
    pub device_id: String,
    /// SHA-256 of the device's SPKI, hex.
    pub spki_sha256: String,
    /// Where the key was made.
    pub key_origin: KeyOrigin,
    /// Input line (CSV line, file index, or sequence number).
    pub line: u64,
    /// The issuing CA's key identifier, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    /// TBSCertificate DER.
    pub tbs: Vec<u8>,
}

/// What the ledger decided for an intent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Committed: sign it.
    Reserved,
    /// The same device and key appeared earlier in this input: issued once.
    Duplicate {
        /// Where it first appeared.
        first_line: u64,
    },
    /// The device already has a live certificate for this key (a re-run): here it is.
    AlreadyIssued { der: Vec<u8> },
    /// Refused (exactly-one-identity rules).
    Refused(String),
}

/// A signature recorded.
#[derive(Debug, Clone)]
pub struct Signed {
    /// CA key identifier, hex.
    pub issuer_key_id: String,
    /// Serial, hex.
    pub serial: String,
    pub profile: String,
    pub device_id: String,
    /// Certificate DER.
    pub der: Vec<u8>,
}

/// A rejected or duplicate input row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rejection {
    /// Input line.
    pub line: u64,
    /// Device id, if known.
    pub device_id: Option<String>,
    /// rejected or duplicate.
    pub kind: String,
    pub reason: String,
}

/// A device as the ledger has it.
#[derive(Debug, Clone)]
pub struct DeviceRow {
    pub state: DeviceState,
    /// SHA-256 of the certified public key, hex.
    pub spki_sha256: String,
    /// Current serial, hex.
    pub serial: Option<String>,
    /// Batch that issued it.
    pub batch_id: String,
    /// Input line it came from.
    pub line: u64,
    /// Current certificate, when signed.
    pub der: Option<Vec<u8>>,
}

/// Counts and problems of a batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchStatus {
    pub batch: BatchRow,
    /// Devices by state, plus `rejected` and `duplicate` rows.
    pub counts: BTreeMap<String, u64>,
    /// Rejected and duplicate rows.
    pub problems: Vec<Rejection>,
}

/// What opening a ledger does with the intents of runs that ended without recording them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Intents {
    BurnInterrupted,
    Leave,
}

/// An open, migrated, locked ledger.
pub struct Ledger {
    conn: Conn,
    location: LedgerLocation,
    station: String,
    head: AuditHead,
    /// Where record times come from.
    clock: Arc<dyn Clock>,
    /// This process's lease on a PostgreSQL ledger (its intents carry it; none on SQLite,
    /// whose file lock already says the holder is alive, and none for readers).
    lease: Option<i64>,
    /// The intents this process burned (at open, or by `ledger recover`), for
    /// [`Ledger::recover`] to report.
    burned: Vec<recover::BurnedIntent>,
    /// A writer's lock (none for [`Ledger::open_read`]). Declared last: it is released after
    /// the connection has closed.
    _lock: Option<HeldLock>,
}

/// The ledgers (device, inode) this process holds open for writing.
static HELD: std::sync::Mutex<std::collections::BTreeSet<(u64, u64)>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

/// A writer's `flock` on the database file, and its entry in [`HELD`]. Closing *any* descriptor
/// of a file drops every POSIX lock this process holds on it, SQLite's included, so certfab
/// never opens a second descriptor of a ledger it already holds: a second writer in the same
/// process is refused from [`HELD`] before it opens the file, and readers keep no descriptor.
struct HeldLock {
    _file: std::fs::File,
    id: (u64, u64),
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The `serial_reserved` event's detail. Fields in the order a `json!` object gives them
/// (sorted): the text is the same as before the group path wrote it from a struct.
#[derive(serde::Serialize)]
struct ReservedDetail<'a> {
    issuer_key_id: &'a str,
    serial: &'a str,
    spki_sha256: &'a str,
    tbs_sha256: &'a str,
}

/// The `issued` event's detail (fields sorted, as [`ReservedDetail`]).
#[derive(serde::Serialize)]
struct IssuedDetail<'a> {
    cert_sha256: &'a str,
    serial: &'a str,
}

/// An event detail's JSON text (of plain string fields: it cannot fail).
fn detail_text(detail: &impl serde::Serialize) -> String {
    serde_json::to_string(detail).unwrap_or_default()
}

/// A record's time: the ledger's clock, RFC 3339 whole seconds.
fn stamp(clock: &dyn Clock) -> String {
    crate::clock::rfc3339(clock.now())
}

impl Ledger {
    /// Opens the ledger at `path` for `station`, creating it only for a site that never had one:
    /// refuses network filesystems, locks the database file itself (so every path to it,
    /// through symlinks, hard links or bind mounts, meets the same lock), refuses a ledger that
    /// existed and is now missing or empty ([`LedgerError::Lost`]) and a file that is not a
    /// certfab ledger ([`LedgerError::NotALedger`]), sets WAL + `synchronous=FULL` and checks
    /// both, migrates, and burns intents a crashed run left behind. The database and its
    /// `-wal`/`-shm` files are 0600 whatever the umask.
    ///
    /// A PostgreSQL ledger ([`LedgerLocation::Postgres`]) is connected to instead, migrated
    /// under the writers' lock, and this process takes a lease; only intents of leases whose
    /// process is gone are burned (docs/central-ledger.md).
    pub fn open(at: impl Into<LedgerLocation>, station: &str) -> Result<Self, LedgerError> {
        Self::open_with_clock(at, station, Arc::new(SystemClock))
    }

    /// [`Ledger::open`], with every record's time (and each new batch's id) taken from `clock`.
    pub fn open_with_clock(
        at: impl Into<LedgerLocation>,
        station: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LedgerError> {
        Self::open_as(at.into(), station, clock, Intents::BurnInterrupted)
    }

    /// [`Ledger::open_with_clock`] for a process that only appends an audit event after its
    /// command's own ledger has closed (the `token_signatures` count at exit): the intents a
    /// failed run left stay as they are, for the next command to burn and report as its
    /// recovery, rather than being burned by the failing process on its way out.
    pub fn open_to_record(
        at: impl Into<LedgerLocation>,
        station: &str,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, LedgerError> {
        Self::open_as(at.into(), station, clock, Intents::Leave)
    }

    fn open_as(
        at: LedgerLocation,
        station: &str,
        clock: Arc<dyn Clock>,
        intents: Intents,
    ) -> Result<Self, LedgerError> {
        match at {
            LedgerLocation::Sqlite(path) => Self::open_sqlite(&path, station, clock, intents),
            LedgerLocation::Postgres(t) => Self::open_pg(t, station, clock, intents),
        }
    }

    fn open_sqlite(
        path: &Path,
        station: &str,
        clock: Arc<dyn Clock>,
        intents: Intents,
    ) -> Result<Self, LedgerError> {
        let shown = path.display().to_string();
        let open_err = |msg: String| LedgerError::Open {
            path: shown.clone(),
            msg,
        };
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o750)
                .create(dir)
                .map_err(|e| open_err(format!("cannot create its directory: {e}")))?;
        }
        if let Ok(st) = rustix::fs::statfs(dir) {
            // f_type's width differs between platforms.
            #[allow(clippy::unnecessary_cast)]
            let t = st.f_type as i64;
            if let Some((_, name)) = NETWORK_FS.iter().find(|(m, _)| *m == t) {
                return Err(open_err(format!(
                    "it is on a {name} filesystem, where locking and fsync cannot be trusted; keep the ledger on a local disk"
                )));
            }
        }
        let real = real_path(path, dir).map_err(open_err)?;
        let marker = marker_path(&real);
        // HELD stays locked from the check to the insert, so two threads of this process never
        // both open the file.
        let (lock, st) = {
            let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
            if let Ok(m) = std::fs::metadata(&real) {
                use std::os::unix::fs::MetadataExt;
                if held.contains(&(m.dev(), m.ino())) {
                    return Err(LedgerError::Locked(shown.clone()));
                }
            }
            let file = open_db_file(&real, &marker, &shown)?;
            rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .map_err(|_| LedgerError::Locked(shown.clone()))?;
            let st = rustix::fs::fstat(&file).map_err(|e| open_err(e.to_string()))?;
            #[allow(clippy::unnecessary_cast)]
            let id = (st.st_dev as u64, st.st_ino as u64);
            held.insert(id);
            // Built last: its drop takes HELD, which this block still holds.
            (HeldLock { _file: file, id }, st)
        };
        let file = &lock._file;
        if st.st_nlink > 1 {
            return Err(open_err(format!(
                "the file has {} names (hard links); SQLite keeps the write-ahead log beside the name it is opened by, so another name can miss committed records. Keep one name: remove the others (find / -xdev -samefile {})",
                st.st_nlink,
                real.display()
            )));
        }
        if st.st_size == 0 {
            if let Some(m) = Marker::read(&marker) {
                return Err(m.lost(&shown, "empty (0 bytes)"));
            }
        }
        // Older certfab versions created the ledger with the umask's mode. Best effort: a file
        // this user does not own keeps its mode.
        let _ = rustix::fs::fchmod(file, rustix::fs::Mode::from_raw_mode(0o600));

        let conn = Connection::open_with_flags(
            &real,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| open_err(e.to_string()))?;
        // SQLite opened the name; the lock is on the inode we opened. They must be one file.
        match std::fs::metadata(&real) {
            Ok(m) if same_file(&m, &st) => {}
            _ => {
                return Err(open_err(
                    "the file was replaced while certfab opened it; run the command again".into(),
                ))
            }
        }
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let not_a_ledger = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                LedgerError::NotALedger {
                    path: shown.clone(),
                    detail: e.to_string(),
                }
            }
            _ => LedgerError::Write(e),
        };
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(not_a_ledger)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(open_err(format!(
                "journal_mode is {mode}, WAL could not be enabled"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        let sync: i64 = conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
        if sync != 2 {
            return Err(open_err(format!(
                "synchronous is {sync}, FULL (2) could not be set"
            )));
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(not_a_ledger)?;
        if version == 0 {
            let objects: i64 =
                conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?;
            if objects > 0 {
                return Err(LedgerError::NotALedger {
                    path: shown.clone(),
                    detail: format!(
                        "an SQLite database with {objects} tables or indexes but no certfab schema"
                    ),
                });
            }
            if let Some(m) = Marker::read(&marker) {
                return Err(m.lost(&shown, "a blank database"));
            }
        }
        let conn = Conn::Lite(conn);
        migrate(&conn, &shown, &stamp(&*clock))?;
        // SQLite gives new -wal/-shm files the database's mode; ones left by an older certfab
        // are tightened here (best effort, as above).
        for suffix in ["-wal", "-shm"] {
            let mut side = real.clone().into_os_string();
            side.push(suffix);
            let _ = std::fs::set_permissions(
                &side,
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            );
        }
        if !marker.exists() {
            Marker::write(&marker, &real, station, &stamp(&*clock)).map_err(open_err)?;
        }
        let head = AuditHead::load(&conn, station, clock.clone())?;
        let mut ledger = Self {
            conn,
            location: LedgerLocation::Sqlite(path.to_path_buf()),
            station: station.to_string(),
            head,
            clock,
            lease: None,
            burned: Vec::new(),
            _lock: Some(lock),
        };
        // The file lock is held: no other process has an intent in flight.
        if intents == Intents::BurnInterrupted {
            ledger.burn_interrupted(None)?;
        }
        Ok(ledger)
    }

    /// Connects to a central ledger, migrates it (under the writers' lock, so two stations
    /// starting at once migrate once), takes this process's lease and burns the intents of
    /// leases whose process is gone.
    fn open_pg(
        t: PgTarget,
        station: &str,
        clock: Arc<dyn Clock>,
        intents: Intents,
    ) -> Result<Self, LedgerError> {
        let shown = t.to_string();
        let conn = Conn::pg(t.connect(station)?);
        migrate(&conn, &shown, &stamp(&*clock))?;
        let head = AuditHead::load(&conn, station, clock.clone())?;
        let lease = lease::take(&conn, station, &stamp(&*clock))?;
        conn.flush_through_lease(lease);
        conn.prefetch_audit_head(station)?;
        let mut ledger = Self {
            conn,
            location: LedgerLocation::Postgres(t),
            station: station.to_string(),
            head,
            clock,
            lease: Some(lease),
            burned: Vec::new(),
            _lock: None,
        };
        if intents == Intents::BurnInterrupted {
            for dead in lease::dead(&ledger.conn, lease)? {
                ledger.burn_interrupted(Some(dead))?;
            }
        }
        Ok(ledger)
    }

    /// Opens an existing ledger read-only, without the lock, for `batch status` while a batch
    /// runs. Nothing is migrated or burned.
    pub fn open_read(at: impl Into<LedgerLocation>, station: &str) -> Result<Self, LedgerError> {
        let path = match at.into() {
            LedgerLocation::Sqlite(path) => path,
            LedgerLocation::Postgres(t) => {
                let shown = t.to_string();
                let conn = Conn::pg(t.connect(station)?);
                let version = schema_version(&conn)?;
                let supported = schema::MIGRATIONS.len() as i64;
                if version > supported {
                    return Err(LedgerError::TooNew {
                        path: shown,
                        found: version,
                        supported,
                    });
                }
                return Ok(Self {
                    conn,
                    location: LedgerLocation::Postgres(t),
                    station: station.into(),
                    head: AuditHead::default(),
                    clock: Arc::new(SystemClock),
                    lease: None,
                    burned: Vec::new(),
                    _lock: None,
                });
            }
        };
        let path = path.as_path();
        let shown = path.display().to_string();
        if !path.exists() {
            return Err(LedgerError::Open {
                path: shown,
                msg: "does not exist yet: no batch has run with this site config".into(),
            });
        }
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| LedgerError::Open {
                path: shown.clone(),
                msg: e.to_string(),
            })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt) => {
                    LedgerError::NotALedger {
                        path: shown.clone(),
                        detail: e.to_string(),
                    }
                }
                _ => LedgerError::Write(e),
            })?;
        let supported = schema::MIGRATIONS.len() as i64;
        if version > supported {
            return Err(LedgerError::TooNew {
                path: shown,
                found: version,
                supported,
            });
        }
        Ok(Self {
            conn: Conn::Lite(conn),
            location: LedgerLocation::Sqlite(path.to_path_buf()),
            station: station.into(),
            head: AuditHead::default(),
            clock: Arc::new(SystemClock),
            lease: None,
            burned: Vec::new(),
            _lock: None,
        })
    }

    /// Where the ledger is: its file, or its server and database (shown without secrets).
    pub fn location(&self) -> &LedgerLocation {
        &self.location
    }

    /// Intents without a recorded signature belong to a run that died between commit and
    /// record: their serials are burned and the devices retried with new ones. `lease`: only
    /// the intents of that dead lease (a central ledger, where other processes are alive);
    /// none: every intent (SQLite, whose file lock this process holds).
    fn burn_interrupted(&mut self, lease: Option<lease::Dead>) -> Result<u64, LedgerError> {
        let tx = self.conn.begin()?;
        let at = stamp(&*self.clock);
        self.burned
            .extend(recover::intents_to_burn(&tx, lease.as_ref())?);
        let n = match &lease {
            None => {
                tx.exec(
                    "UPDATE devices SET state = 'sign_failed', updated_at = ?1 WHERE state = 'signing'",
                    p![at],
                )?;
                tx.exec(
                    "UPDATE certificates SET state = 'burned', reason = 'interrupted before the signature was recorded'
                     WHERE state = 'intent'",
                    &[],
                )?
            }
            Some(d) => {
                tx.exec(
                    "UPDATE devices SET state = 'sign_failed', updated_at = ?1 WHERE state = 'signing'
                       AND (profile, device_id, serial) IN (SELECT profile, device_id, serial FROM certificates
                            WHERE state = 'intent' AND lease IS NOT DISTINCT FROM ?2)",
                    p![at, d.id],
                )?;
                tx.exec(
                    "UPDATE certificates SET state = 'burned', reason = 'interrupted before the signature was recorded'
                     WHERE state = 'intent' AND lease IS NOT DISTINCT FROM ?1",
                    p![d.id],
                )?
            }
        } as u64;
        if n > 0 {
            audit::append(
                &tx,
                &mut self.head,
                &self.station,
                "serials_burned",
                None,
                None,
                &match &lease {
                    None => serde_json::json!({"count": n, "reason": "interrupted run"}),
                    Some(d) => serde_json::json!({"count": n, "reason": "interrupted run",
                        "lease": d.id, "lease_station": d.station, "lease_host": d.host, "lease_pid": d.pid}),
                },
            )?;
        }
        if let Some(d) = &lease {
            lease::close(&tx, d, &at)?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Finds the batch for `spec` (a re-run: recorded as resumed) or creates it.
    pub fn begin_batch(&mut self, spec: &BatchSpec) -> Result<(BatchRow, bool), LedgerError> {
        let (b, existed) = self.ensure_batch(spec)?;
        if existed {
            let tx = self.conn.begin()?;
            audit::append(
                &tx,
                &mut self.head,
                &self.station,
                "batch_resumed",
                Some(&b.id),
                None,
                &serde_json::json!({}),
            )?;
            tx.exec(
                "UPDATE batches SET finished_at = NULL WHERE id = ?1",
                p![b.id],
            )?;
            tx.commit()?;
        }
        Ok((b, existed))
    }

    /// Finds or creates the batch for `spec`, without recording a resume (single issues share
    /// one standing batch per profile and CA).
    pub fn ensure_batch(&mut self, spec: &BatchSpec) -> Result<(BatchRow, bool), LedgerError> {
        if let Some(b) = self.batch_by_key(&spec.input_key)? {
            return Ok((b, true));
        }
        let id = format!(
            "b-{}-{}",
            self.clock.now().unix_timestamp(),
            &spec.input_key[..8]
        );
        let tx = self.conn.begin()?;
        // Asked again under the writers' lock: another station may have just created it.
        if let Some(id) = tx.opt(
            "SELECT id FROM batches WHERE input_key = ?1",
            p![spec.input_key],
            |r| r.get::<String>(0),
        )? {
            drop(tx);
            let b = self
                .batch(&id)?
                .ok_or_else(|| LedgerError::Data(format!("batch {id} vanished")))?;
            return Ok((b, true));
        }
        tx.exec(
            "INSERT INTO batches (id, input_key, profile, profile_sha256, ca, source, out_dir, station, created_at, tenant)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            p![id, spec.input_key, spec.profile, spec.profile_sha256, spec.ca, spec.source, spec.out_dir, self.station, stamp(&*self.clock), spec.tenant],
        )?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "batch_started",
            Some(&id),
            None,
            &serde_json::json!({"profile": spec.profile, "profile_sha256": spec.profile_sha256, "ca": spec.ca, "source": spec.source, "tenant": spec.tenant}),
        )?;
        tx.commit()?;
        let b = self
            .batch(&id)?
            .ok_or_else(|| LedgerError::Data(format!("batch {id} vanished")))?;
        Ok((b, false))
    }

    /// Marks a batch as having processed all its input.
    pub fn finish_batch(
        &mut self,
        id: &str,
        counts: &BTreeMap<String, u64>,
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        tx.exec(
            "UPDATE batches SET finished_at = ?2 WHERE id = ?1",
            p![id, stamp(&*self.clock)],
        )?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "batch_finished",
            Some(id),
            None,
            &serde_json::json!(counts),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Closes a batch that will not be resumed (its input is gone, or was wrong from the start):
    /// marked finished, with the operator's reason and the batch's counts in the audit chain.
    /// What it issued stays issued; a re-run of the same command starts it again.
    pub fn close_batch(
        &mut self,
        id: &str,
        reason: &str,
        counts: &BTreeMap<String, u64>,
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        tx.exec(
            "UPDATE batches SET finished_at = ?2 WHERE id = ?1",
            p![id, stamp(&*self.clock)],
        )?;
        audit::append(
            &tx,
            &mut self.head,
            &self.station,
            "batch_closed",
            Some(id),
            None,
            &serde_json::json!({"reason": reason, "counts": counts}),
        )?;
        tx.commit()?;
        Ok(())
    }

    fn batch_by_key(&self, key: &str) -> Result<Option<BatchRow>, LedgerError> {
        self.batch_where("input_key = ?1", key)
    }

    /// A batch by id.
    pub fn batch(&self, id: &str) -> Result<Option<BatchRow>, LedgerError> {
        self.batch_where("id = ?1", id)
    }

    /// The most recently created batch.
    pub fn latest_batch(&self) -> Result<Option<BatchRow>, LedgerError> {
        let id: Option<String> = self.conn.opt(
            "SELECT id FROM batches ORDER BY rowid DESC LIMIT 1",
            &[],
            |r| r.get(0),
        )?;
        match id {
            Some(id) => self.batch(&id),
            None => Ok(None),
        }
    }

    /// The spec a batch was created with (to resume it by id).
    pub fn batch_input_key(&self, id: &str) -> Result<Option<String>, LedgerError> {
        self.conn
            .opt("SELECT input_key FROM batches WHERE id = ?1", p![id], |r| {
                r.get(0)
            })
    }

    fn batch_where(&self, cond: &str, arg: &str) -> Result<Option<BatchRow>, LedgerError> {
        let sql = format!(
            "SELECT id, profile, ca, source, out_dir, station, created_at, finished_at FROM batches WHERE {cond}"
        );
        self.conn.opt(&sql, p![arg], |r| {
            Ok(BatchRow {
                id: r.get(0)?,
                profile: r.get(1)?,
                ca: r.get(2)?,
                source: r.get(3)?,
                out_dir: r.get(4)?,
                station: r.get(5)?,
                created_at: r.get(6)?,
                finished_at: r.get(7)?,
            })
        })
    }

    /// The device's state, batch, input line and certificate, if it has a row.
    pub fn device(&self, profile: &str, device_id: &str) -> Result<Option<DeviceRow>, LedgerError> {
        self.conn
            .opt(
                "SELECT d.state, d.batch_id, d.input_line, c.der, d.spki_sha256, d.serial FROM devices d
                 LEFT JOIN certificates c ON c.profile = d.profile AND c.device_id = d.device_id
                      AND c.serial = d.serial AND c.state = 'signed'
                 WHERE d.profile = ?1 AND d.device_id = ?2",
                p![profile, device_id],
                |r| {
                    Ok(DeviceRow {
                        state: r.get(0)?,
                        batch_id: r.get(1)?,
                        line: r.get::<Option<i64>>(2)?.unwrap_or(0) as u64,
                        der: r.get(3)?,
                        spki_sha256: r.get(4)?,
                        serial: r.get(5)?,
                    })
                },
            )
    }

    /// [`Ledger::device`] of several ids of one profile, in a statement per
    /// [`db::ROWS_PER_STATEMENT`] ids (a batch group's check in a few round trips): the rows
    /// found, by device id.
    pub fn devices(
        &self,
        profile: &str,
        device_ids: &[&str],
    ) -> Result<std::collections::HashMap<String, DeviceRow>, LedgerError> {
        let mut out = std::collections::HashMap::new();
        for chunk in device_ids.chunks(db::ROWS_PER_STATEMENT) {
            let mut params = vec![profile.to_value()];
            params.extend(chunk.iter().map(|d| d.to_value()));
            let rows = self.conn.map(
                &format!("SELECT d.state, d.batch_id, d.input_line, c.der, d.spki_sha256, d.serial, d.device_id FROM devices d
                 LEFT JOIN certificates c ON c.profile = d.profile AND c.device_id = d.device_id
                      AND c.serial = d.serial AND c.state = 'signed'
                 WHERE d.profile = ?1 AND d.device_id IN ({})",
                    (2..chunk.len() + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")),
                &params,
                |r| {
                    Ok((
                        r.get::<String>(6)?,
                        DeviceRow {
                            state: r.get(0)?,
                            batch_id: r.get(1)?,
                            line: r.get::<Option<i64>>(2)?.unwrap_or(0) as u64,
                            der: r.get(3)?,
                            spki_sha256: r.get(4)?,
                            serial: r.get(5)?,
                        },
                    ))
                },
            )?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// Reserves serials for a group of devices in one transaction, applying the
    /// exactly-one-identity rules. Only `Reserved` items may be signed.
    pub fn reserve(
        &mut self,
        batch_id: &str,
        intents: &[Intent],
    ) -> Result<Vec<Reserve>, LedgerError> {
        let tx = self.conn.begin()?;
        let mut out = Vec::with_capacity(intents.len());
        let at = stamp(&*self.clock);
        // Decided one by one against the group's rows (read once), then written together:
        // a few statements per group, not a handful per device (docs/performance.md).
        let mut group = rules::Group::read(&tx, intents)?;
        let mut reserved = Vec::new();
        for it in intents {
            let decision = rules::decide(&group, batch_id, it)?;
            if decision == Reserve::Reserved {
                group.reserve(batch_id, it);
                reserved.push(it);
            }
            out.push(decision);
        }
        for chunk in reserved.chunks(db::ROWS_PER_STATEMENT) {
            let mut devices = Vec::with_capacity(chunk.len() * 9);
            let mut certs = Vec::with_capacity(chunk.len() * 9);
            let mut events = Vec::with_capacity(chunk.len());
            for it in chunk {
                let id_key = crate::identity::key(&it.device_id);
                devices.extend_from_slice(p![
                    it.profile,
                    it.device_id,
                    batch_id,
                    it.spki_sha256,
                    it.serial,
                    it.key_origin,
                    it.line as i64,
                    at,
                    id_key
                ]);
                certs.extend_from_slice(p![
                    it.issuer_key_id,
                    it.serial,
                    it.profile,
                    it.device_id,
                    batch_id,
                    it.tbs,
                    at,
                    it.spki_sha256,
                    self.lease
                ]);
                events.push(audit::Event {
                    kind: "serial_reserved",
                    batch: Some(batch_id),
                    device: Some(&it.device_id),
                    detail: detail_text(&ReservedDetail {
                        issuer_key_id: &it.issuer_key_id,
                        serial: &it.serial,
                        spki_sha256: &it.spki_sha256,
                        tbs_sha256: &hex::encode(crate::crypto::sha256(&it.tbs)),
                    }),
                });
            }
            tx.exec(&format!("INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, serial, key_origin, input_line, updated_at, id_key)
                 VALUES {}
                 ON CONFLICT (profile, device_id) DO UPDATE SET
                   batch_id = excluded.batch_id, state = 'signing', spki_sha256 = excluded.spki_sha256,
                   serial = excluded.serial, key_origin = excluded.key_origin,
                   input_line = excluded.input_line, updated_at = excluded.updated_at",
                    tx.values(chunk.len(), &["", "", "", "='signing'", "", "", "", "BIGINT", "", ""])),
                &devices,
            )?;
            tx.exec(&format!("INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, created_at, spki_sha256, lease)
                 VALUES {}",
                    tx.values(chunk.len(), &["", "", "", "", "", "='intent'", "BYTEA", "", "", "BIGINT"])),
                &certs,
            )?;
            audit::append_many(&tx, &mut self.head, &self.station, &events)?;
        }
        tx.commit()?;
        Ok(out)
    }

    /// Records a group in one transaction: signatures (certificates and devices signed), input
    /// lines that now succeeded (their earlier rejections cleared), and new problem rows.
    pub fn record_group(
        &mut self,
        batch_id: &str,
        items: &[Signed],
        cleared_lines: &[u64],
        problems: &[Rejection],
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        let at = stamp(&*self.clock);
        for chunk in items.chunks(db::ROWS_PER_STATEMENT) {
            let mut certs = vec![at.to_value()];
            let mut devices = vec![at.to_value()];
            let mut events = Vec::with_capacity(chunk.len());
            for s in chunk {
                let sha = hex::encode(crate::crypto::sha256(&s.der));
                certs.extend_from_slice(p![s.issuer_key_id, s.serial, s.der, sha]);
                devices.extend_from_slice(p![s.profile, s.device_id]);
                events.push(audit::Event {
                    kind: "issued",
                    batch: Some(batch_id),
                    device: Some(&s.device_id),
                    detail: detail_text(&IssuedDetail {
                        cert_sha256: &sha,
                        serial: &s.serial,
                    }),
                });
            }
            let n = tx.exec(&format!("UPDATE certificates SET state = 'signed', der = v.column3, cert_sha256 = v.column4, signed_at = ?1
                 FROM (VALUES {}) AS v
                 WHERE certificates.issuer_key_id = v.column1 AND certificates.serial = v.column2 AND certificates.state = 'intent'",
                    tx.values_from(2, chunk.len(), &["", "", "BYTEA", ""])),
                &certs,
            )?;
            if n != chunk.len() {
                // Burned meanwhile: this process's lease was taken for dead (its connection
                // dropped) and another process or `ledger recover` burned the intent. The
                // signatures are discarded (the transaction rolls back); nothing leaves the
                // process.
                let open = tx.map(
                    &format!("SELECT serial FROM certificates WHERE state = 'signed' AND issuer_key_id || ' ' || serial IN ({})",
                        (0..chunk.len()).map(|i| format!("?{}", i + 1)).collect::<Vec<_>>().join(", ")),
                    &chunk.iter().map(|s| format!("{} {}", s.issuer_key_id, s.serial).to_value()).collect::<Vec<_>>(),
                    |r| r.get::<String>(0),
                )?;
                let lost = chunk
                    .iter()
                    .find(|s| !open.contains(&s.serial))
                    .map_or("?", |s| s.serial.as_str());
                return Err(LedgerError::Data(format!(
                    "the intent of serial {lost} is no longer open (burned after this process lost its lease); the certificate was discarded, run the command again"
                )));
            }
            tx.exec(&format!("UPDATE devices SET state = 'signed', updated_at = ?1 WHERE (profile, device_id) IN (VALUES {})",
                    tx.values_from(2, chunk.len(), &["", ""])),
                &devices,
            )?;
            audit::append_many(&tx, &mut self.head, &self.station, &events)?;
        }
        // A batch without problem rows (the usual case) has nothing to clear: one look instead
        // of a DELETE per signed line.
        let has_problems = !cleared_lines.is_empty()
            && tx.one(
                "SELECT COUNT(*) FROM (SELECT 1 FROM rejections WHERE batch_id = ?1 LIMIT 1) AS r",
                p![batch_id],
                |r| r.get::<i64>(0),
            )? > 0;
        if has_problems {
            for l in cleared_lines {
                tx.exec(
                    "DELETE FROM rejections WHERE batch_id = ?1 AND line = ?2",
                    p![batch_id, *l as i64],
                )?;
            }
        }
        Self::insert_rejections(&tx, &mut self.head, &self.station, batch_id, problems)?;
        tx.commit()?;
        Ok(())
    }

    /// Records failed signatures: serials burned, devices retried later with new serials.
    pub fn record_failed(
        &mut self,
        batch_id: &str,
        items: &[(Intent, String)],
    ) -> Result<(), LedgerError> {
        let tx = self.conn.begin()?;
        let at = stamp(&*self.clock);
        for (it, reason) in items {
            tx.exec("UPDATE certificates SET state = 'burned', reason = ?3 WHERE issuer_key_id = ?1 AND serial = ?2",
                p![it.issuer_key_id, it.serial, reason],
            )?;
            tx.exec("UPDATE devices SET state = 'sign_failed', updated_at = ?3 WHERE profile = ?1 AND device_id = ?2",
                p![it.profile, it.device_id, at],
            )?;
            audit::append(
                &tx,
                &mut self.head,
                &self.station,
                "sign_failed",
                Some(batch_id),
                Some(&it.device_id),
                &serde_json::json!({"serial": it.serial, "reason": reason}),
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn insert_rejections(
        tx: &db::Tx<'_>,
        head: &mut AuditHead,
        station: &str,
        batch_id: &str,
        items: &[Rejection],
    ) -> Result<(), LedgerError> {
        let at = stamp(&*head.clock);
        for r in items {
            tx.exec("INSERT INTO rejections (batch_id, line, device_id, kind, reason, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (batch_id, line) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
                   reason = excluded.reason, at = excluded.at",
                p![batch_id, r.line as i64, r.device_id, r.kind, r.reason, at],
            )?;
            audit::append(
                tx,
                head,
                station,
                &r.kind,
                Some(batch_id),
                r.device_id.as_deref(),
                &serde_json::json!({"line": r.line, "reason": r.reason}),
            )?;
        }
        Ok(())
    }

    /// Counts by state and the problem rows of a batch.
    pub fn status(&self, batch_id: &str) -> Result<Option<BatchStatus>, LedgerError> {
        let Some(batch) = self.batch(batch_id)? else {
            return Ok(None);
        };
        let mut counts = BTreeMap::new();
        for (s, n) in self.conn.map(
            "SELECT state, COUNT(*) FROM devices WHERE batch_id = ?1 GROUP BY state",
            p![batch_id],
            |r| Ok((r.get::<String>(0)?, r.get::<i64>(1)?)),
        )? {
            counts.insert(s, n as u64);
        }
        let problems = self.conn.map(
            "SELECT line, device_id, kind, reason FROM rejections WHERE batch_id = ?1 ORDER BY line",
            p![batch_id],
            |r| {
                Ok(Rejection {
                    line: r.get::<i64>(0)? as u64,
                    device_id: r.get(1)?,
                    kind: r.get(2)?,
                    reason: r.get(3)?,
                })
            },
        )?;
        for p in &problems {
            *counts.entry(p.kind.clone()).or_insert(0) += 1;
        }
        let burned: i64 = self.conn.one(
            "SELECT COUNT(*) FROM certificates WHERE batch_id = ?1 AND state = 'burned'",
            p![batch_id],
            |r| r.get(0),
        )?;
        if burned > 0 {
            counts.insert("serials_burned".into(), burned as u64);
        }
        Ok(Some(BatchStatus {
            batch,
            counts,
            problems,
        }))
    }

    /// Verifies the audit hash chain from the start (see [`verify_events`]); returns the
    /// number of events.
    pub fn verify_audit_chain(&self) -> Result<u64, String> {
        match self.verify_chain() {
            Ok(Ok(r)) => Ok(r.events),
            Ok(Err(b)) => Err(b.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The database, for the audit report and tests that query the ledger directly.
    pub(crate) fn db(&self) -> &Conn {
        &self.conn
    }

    /// This process's lease on a central ledger.
    pub fn lease(&self) -> Option<i64> {
        self.lease
    }

    /// The SQLite connection, for tests that read a ledger's tables directly.
    #[cfg(test)]
    pub(crate) fn connection(&self) -> &Connection {
        self.conn.lite().expect("a SQLite ledger")
    }
}

/// The ledger's real path: symlinks resolved, so every name for it leads to one marker and one
/// set of `-wal`/`-shm` files. A new ledger is named in its directory's real path.
fn real_path(path: &Path, dir: &Path) -> Result<PathBuf, String> {
    match std::fs::symlink_metadata(path) {
        Ok(_) => std::fs::canonicalize(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "it is a symbolic link to a file that does not exist; restore the ledger it points to, or correct the link".into(),
            _ => format!("cannot resolve the path: {e}"),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = path.file_name().ok_or(
                "the ledger path names a directory; set ledger: in the site config to a file such as ledger.sqlite",
            )?;
            let dir = std::fs::canonicalize(dir)
                .map_err(|e| format!("cannot resolve its directory: {e}"))?;
            Ok(dir.join(name))
        }
        Err(e) => Err(format!("cannot read it: {e}")),
    }
}

/// Opens the database file for the lock, creating it (0600) only when no marker says a ledger
/// existed here.
fn open_db_file(real: &Path, marker: &Path, shown: &str) -> Result<std::fs::File, LedgerError> {
    use std::os::unix::fs::OpenOptionsExt;
    let open_err = |msg: String| LedgerError::Open {
        path: shown.to_string(),
        msg,
    };
    let nofollow = rustix::fs::OFlags::NOFOLLOW.bits() as i32;
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nofollow)
        .open(real)
    {
        Ok(f) => {
            let regular = f.metadata().map(|m| m.is_file()).unwrap_or(false);
            if !regular {
                return Err(open_err(
                    "it is not a regular file; set ledger: in the site config to a file".into(),
                ));
            }
            Ok(f)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(m) = Marker::read(marker) {
                return Err(m.lost(shown, "missing"));
            }
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(nofollow)
                .open(real)
                .map_err(|e| open_err(format!("cannot create it: {e}")))?;
            // The umask can only clear bits of 0600, but say it explicitly.
            rustix::fs::fchmod(&f, rustix::fs::Mode::from_raw_mode(0o600))
                .map_err(|e| open_err(format!("cannot set its mode to 0600: {e}")))?;
            Ok(f)
        }
        Err(e) => Err(open_err(format!(
            "cannot open it for writing: {e}; check its owner, mode and attributes (ls -l, lsattr)"
        ))),
    }
}

fn same_file(m: &std::fs::Metadata, st: &rustix::fs::Stat) -> bool {
    use std::os::unix::fs::MetadataExt;
    #[allow(clippy::unnecessary_cast)]
    let same = m.dev() == st.st_dev as u64 && m.ino() == st.st_ino as u64;
    same
}

/// `LEDGER.created` beside the real ledger file.
fn marker_path(real: &Path) -> PathBuf {
    let mut p = real.as_os_str().to_owned();
    p.push(".created");
    PathBuf::from(p)
}

/// The marker file beside the ledger: its existence says this site has had a ledger, so a
/// missing or emptied ledger is refused instead of silently started over. It needs no schema
/// change and is written once (through [`crate::output`]).
struct Marker {
    path: PathBuf,
    recorded_at: String,
}

impl Marker {
    /// The marker, if one exists (any file at that name counts; its text is only shown).
    fn read(path: &Path) -> Option<Self> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        // Only a small regular file is read (a FIFO would block).
        let text = (meta.is_file() && meta.len() <= 4096)
            .then(|| std::fs::read(path).ok())
            .flatten()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let recorded_at = text
            .lines()
            .find_map(|l| l.strip_prefix("recorded_at: "))
            .filter(|t| t.len() <= 40 && t.chars().all(|c| c.is_ascii_graphic()))
            .unwrap_or("an unknown date")
            .to_string();
        Some(Self {
            path: path.to_path_buf(),
            recorded_at,
        })
    }

    fn write(path: &Path, real: &Path, station: &str, at: &str) -> Result<(), String> {
        let text = format!(
            "# certfab ledger marker: this site has a ledger, {real}.\n\
             # While this file exists, certfab refuses to start over from a missing or empty\n\
             # ledger (docs/batch.md \"Ledger\"). Back it up and restore it with the ledger.\n\
             recorded_at: {at}\nstation: {station}\n",
            real = real.display(),
            station = station.escape_debug(),
        );
        // 0600 like the ledger it stands for.
        let (dir, name) = crate::output::split(path).map_err(|e| e.to_string())?;
        crate::output::OutDir::create(dir)
            .and_then(|d| {
                d.write(
                    name,
                    text.as_bytes(),
                    crate::output::Access::Secret,
                    crate::output::Existing::Refuse,
                    crate::output::Durability::Now,
                )
            })
            .map_err(|e| e.to_string())
    }

    fn lost(&self, shown: &str, how: &str) -> LedgerError {
        LedgerError::Lost {
            path: shown.to_string(),
            how: how.to_string(),
            marker: self.path.display().to_string(),
            recorded_at: self.recorded_at.clone(),
        }
    }
}

/// The schema version (see [`schema::version`]).
fn schema_version(conn: &Conn) -> Result<i64, LedgerError> {
    schema::version(conn)
}

/// Brings the schema up to date in one write transaction (on PostgreSQL under the writers'
/// lock, so stations starting together migrate once); refuses a newer schema, and on a
/// PostgreSQL database one that holds tables but no certfab schema.
fn migrate(conn: &Conn, path: &str, at: &str) -> Result<(), LedgerError> {
    let tx = conn.begin()?;
    let version = schema_version(&tx)?;
    let supported = schema::MIGRATIONS.len() as i64;
    if version > supported {
        return Err(LedgerError::TooNew {
            path: path.into(),
            found: version,
            supported,
        });
    }
    if version == supported {
        return Ok(());
    }
    if version == 0 && tx.is_pg() {
        let tables = schema::foreign_tables(&tx)?;
        if tables > 0 {
            return Err(LedgerError::NotALedger {
                path: path.into(),
                detail: format!("a database with {tables} tables but no certfab schema"),
            });
        }
    }
    for (i, step) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch(step.sql(&tx))?;
        schema::after_sql(i + 1, &tx, at)?;
        schema::set_version(&tx, (i + 1) as i64)?;
    }
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(id: &str, spki: &str, serial: &str) -> Intent {
        Intent {
            profile: "p".into(),
            device_id: id.into(),
            spki_sha256: spki.into(),
            key_origin: KeyOrigin::Csr,
            line: 1,
            issuer_key_id: "aa".into(),
            serial: serial.into(),
            tbs: vec![1],
        }
    }

    /// Item 13: a ledger whose rows already collide after folding migrates without losing a
    /// row; the collisions are recorded, the first spelling owns the identity, every existing
    /// spelling still reaches its own row, and no new spelling can be reserved.
    #[test]
    fn item13_migration_keeps_colliding_rows_and_records_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            for step in &schema::MIGRATIONS[..4] {
                conn.execute_batch(step.sqlite).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute_batch(
                "INSERT INTO batches (id, input_key, profile, profile_sha256, ca, source, out_dir, station, created_at)
                 VALUES ('b', 'k', 'p', 's', 'c', '{}', '', 'st', 't');",
            )
            .unwrap();
            for (id, spki) in [
                ("SN1", "k1"),
                ("ＳＮ1", "k2"),
                ("\u{405}N1", "k3"),
                ("SN2", "k4"),
            ] {
                conn.execute(
                    "INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, serial, key_origin, input_line, updated_at)
                     VALUES ('p', ?1, 'b', 'signed', ?2, ?1, 'csr', 1, 't')",
                    rusqlite::params![id, spki],
                )
                .unwrap();
            }
        }
        let mut l = Ledger::open(&path, "st").unwrap();
        let c = l.db();
        let n: i64 = c
            .one(
                "SELECT COUNT(*) FROM devices WHERE id_key IS NOT NULL",
                &[],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 4, "every row kept, every row keyed");
        let collisions: Vec<(String, String)> = c
            .map(
                "SELECT device_id, same_as FROM identity_fold_collisions ORDER BY device_id",
                &[],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(
            collisions,
            vec![
                ("\u{405}N1".to_string(), "SN1".to_string()),
                ("ＳＮ1".into(), "SN1".into())
            ]
        );
        // The exact spellings reach their own rows (a re-run gets its recorded state).
        for (id, spki) in [("SN1", "k1"), ("ＳＮ1", "k2")] {
            let d = l.reserve("b", &[intent(id, spki, "01")]).unwrap();
            assert!(
                matches!(&d[0], Reserve::Refused(r) if r.contains("without a certificate")),
                "{id}: {d:?}"
            );
        }
        // A new spelling of the identity is refused, naming the recorded one.
        let d = l.reserve("b", &[intent("sn1", "k9", "02")]).unwrap();
        assert!(
            matches!(&d[0], Reserve::Refused(r) if r.contains("same identity as SN1")),
            "{d:?}"
        );
        // A new identity is reserved, and the database itself refuses a second spelling.
        let d = l.reserve("b", &[intent("SN3", "k5", "03")]).unwrap();
        assert_eq!(d[0], Reserve::Reserved);
        let e = l.db().exec(
            "INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, key_origin, updated_at, id_key)
             VALUES ('p', 'sn3', 'b', 'signing', 'k6', 'csr', 't', ?1)",
            p![crate::identity::key("sn3")],
        );
        assert!(e.is_err(), "the unique index must refuse another spelling");
    }
}
