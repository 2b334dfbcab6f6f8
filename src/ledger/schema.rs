//! Append-only schema migrations (cargo's pattern): never edit or remove an entry, only add
//! one; a ledger newer than this binary is refused. One list for both back ends: each step is
//! written in SQLite's and PostgreSQL's dialect side by side (they differ in integer, blob and
//! key types; PostgreSQL tables that SQLite orders by its implicit `rowid` get an explicit
//! `rowid` column, so the ledger's queries are the same text on both). The version is SQLite's
//! `user_version`, and on PostgreSQL the one row of `certfab_schema`.

use super::db::{p, Conn};
use super::LedgerError;

/// One migration, in both dialects.
pub(crate) struct Step {
    pub sqlite: &'static str,
    pub pg: &'static str,
}

impl Step {
    /// The step in `conn`'s dialect.
    pub(crate) fn sql(&self, conn: &Conn) -> &'static str {
        if conn.is_pg() {
            self.pg
        } else {
            self.sqlite
        }
    }
}

/// The schema version a ledger is at (0: empty).
pub(crate) fn version(conn: &Conn) -> Result<i64, LedgerError> {
    match conn.lite() {
        Some(c) => Ok(c.query_row("PRAGMA user_version", [], |r| r.get(0))?),
        None => {
            if !conn.has_table("certfab_schema")? {
                return Ok(0);
            }
            conn.one("SELECT version FROM certfab_schema", &[], |r| r.get(0))
        }
    }
}

/// Records that the ledger is at `version` (inside the migration's transaction).
pub(crate) fn set_version(conn: &Conn, version: i64) -> Result<(), LedgerError> {
    match conn.lite() {
        Some(c) => Ok(c.pragma_update(None, "user_version", version)?),
        None => {
            if version == 1 {
                conn.batch(
                    "CREATE TABLE certfab_schema (version BIGINT NOT NULL);
                     INSERT INTO certfab_schema (version) VALUES (1);",
                )
            } else {
                conn.exec("UPDATE certfab_schema SET version = ?1", p![version])
                    .map(|_| ())
            }
        }
    }
}

/// How many tables a database holds that has no certfab schema (a database that is not a
/// ledger is refused, not written into).
pub(crate) fn foreign_tables(conn: &Conn) -> Result<i64, LedgerError> {
    match conn.lite() {
        Some(c) => Ok(c.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get(0))?),
        None => conn.one(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            &[],
            |r| r.get(0),
        ),
    }
}

/// Migration `i` takes the schema from version `i` to `i + 1`.
pub(super) const MIGRATIONS: &[Step] = &[
    // 1: batches, devices, certificates, rejections, hash-chained audit events.
    Step {
        sqlite: r#"
        CREATE TABLE batches (
            id             TEXT PRIMARY KEY,
            input_key      TEXT NOT NULL UNIQUE,
            profile        TEXT NOT NULL,
            profile_sha256 TEXT NOT NULL,
            ca             TEXT NOT NULL,
            source         TEXT NOT NULL,
            out_dir        TEXT NOT NULL,
            station        TEXT NOT NULL,
            created_at     TEXT NOT NULL,
            finished_at    TEXT
        );
        -- One row per (profile, device id): the device's current identity.
        CREATE TABLE devices (
            profile      TEXT NOT NULL,
            device_id    TEXT NOT NULL,
            batch_id     TEXT NOT NULL REFERENCES batches(id),
            state        TEXT NOT NULL CHECK (state IN
                           ('signing','signed','sign_failed','installing','installed',
                            'install_unconfirmed','exported','superseded','revoked')),
            spki_sha256  TEXT NOT NULL,
            serial       TEXT,
            key_origin   TEXT NOT NULL,
            input_line   INTEGER,
            updated_at   TEXT NOT NULL,
            PRIMARY KEY (profile, device_id)
        );
        -- Exactly one live device per public key within a profile.
        CREATE UNIQUE INDEX devices_live_key ON devices(profile, spki_sha256)
            WHERE state NOT IN ('superseded', 'revoked');
        CREATE INDEX devices_spki ON devices(spki_sha256);
        CREATE INDEX devices_batch ON devices(batch_id, state);
        -- Every serial ever reserved, with the TBS committed before the HSM was asked.
        CREATE TABLE certificates (
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            profile       TEXT NOT NULL,
            device_id     TEXT NOT NULL,
            batch_id      TEXT NOT NULL REFERENCES batches(id),
            state         TEXT NOT NULL CHECK (state IN ('intent', 'signed', 'burned')),
            tbs           BLOB NOT NULL,
            der           BLOB,
            cert_sha256   TEXT,
            reason        TEXT,
            created_at    TEXT NOT NULL,
            signed_at     TEXT,
            PRIMARY KEY (issuer_key_id, serial)
        );
        CREATE INDEX certificates_device ON certificates(profile, device_id);
        CREATE INDEX certificates_state ON certificates(batch_id, state);
        -- Requests refused (or duplicate input rows), with where they came from and why.
        CREATE TABLE rejections (
            batch_id   TEXT NOT NULL REFERENCES batches(id),
            line       INTEGER NOT NULL,
            device_id  TEXT,
            kind       TEXT NOT NULL CHECK (kind IN ('rejected', 'duplicate')),
            reason     TEXT NOT NULL,
            at         TEXT NOT NULL,
            PRIMARY KEY (batch_id, line)
        );
        CREATE TABLE audit (
            seq        INTEGER PRIMARY KEY,
            at         TEXT NOT NULL,
            station    TEXT NOT NULL,
            kind       TEXT NOT NULL,
            batch_id   TEXT,
            device_id  TEXT,
            detail     TEXT NOT NULL,
            prev_hash  TEXT NOT NULL,
            hash       TEXT NOT NULL
        );
        "#,
        pg: r#"
        CREATE TABLE batches (
            rowid          BIGSERIAL NOT NULL UNIQUE,
            id             TEXT PRIMARY KEY,
            input_key      TEXT NOT NULL UNIQUE,
            profile        TEXT NOT NULL,
            profile_sha256 TEXT NOT NULL,
            ca             TEXT NOT NULL,
            source         TEXT NOT NULL,
            out_dir        TEXT NOT NULL,
            station        TEXT NOT NULL,
            created_at     TEXT NOT NULL,
            finished_at    TEXT
        );
        -- One row per (profile, device id): the device's current identity.
        CREATE TABLE devices (
            rowid          BIGSERIAL NOT NULL UNIQUE,
            profile      TEXT NOT NULL,
            device_id    TEXT NOT NULL,
            batch_id     TEXT NOT NULL REFERENCES batches(id),
            state        TEXT NOT NULL CHECK (state IN
                           ('signing','signed','sign_failed','installing','installed',
                            'install_unconfirmed','exported','superseded','revoked')),
            spki_sha256  TEXT NOT NULL,
            serial       TEXT,
            key_origin   TEXT NOT NULL,
            input_line   BIGINT,
            updated_at   TEXT NOT NULL,
            PRIMARY KEY (profile, device_id)
        );
        -- Exactly one live device per public key within a profile.
        CREATE UNIQUE INDEX devices_live_key ON devices(profile, spki_sha256)
            WHERE state NOT IN ('superseded', 'revoked');
        CREATE INDEX devices_spki ON devices(spki_sha256);
        CREATE INDEX devices_batch ON devices(batch_id, state);
        -- Every serial ever reserved, with the TBS committed before the HSM was asked.
        CREATE TABLE certificates (
            rowid          BIGSERIAL NOT NULL UNIQUE,
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            profile       TEXT NOT NULL,
            device_id     TEXT NOT NULL,
            batch_id      TEXT NOT NULL REFERENCES batches(id),
            state         TEXT NOT NULL CHECK (state IN ('intent', 'signed', 'burned')),
            tbs           BYTEA NOT NULL,
            der           BYTEA,
            cert_sha256   TEXT,
            reason        TEXT,
            created_at    TEXT NOT NULL,
            signed_at     TEXT,
            PRIMARY KEY (issuer_key_id, serial)
        );
        CREATE INDEX certificates_device ON certificates(profile, device_id);
        CREATE INDEX certificates_state ON certificates(batch_id, state);
        -- Requests refused (or duplicate input rows), with where they came from and why.
        CREATE TABLE rejections (
            batch_id   TEXT NOT NULL REFERENCES batches(id),
            line       BIGINT NOT NULL,
            device_id  TEXT,
            kind       TEXT NOT NULL CHECK (kind IN ('rejected', 'duplicate')),
            reason     TEXT NOT NULL,
            at         TEXT NOT NULL,
            PRIMARY KEY (batch_id, line)
        );
        CREATE TABLE audit (
            seq        BIGINT PRIMARY KEY,
            at         TEXT NOT NULL,
            station    TEXT NOT NULL,
            kind       TEXT NOT NULL,
            batch_id   TEXT,
            device_id  TEXT,
            detail     TEXT NOT NULL,
            prev_hash  TEXT NOT NULL,
            hash       TEXT NOT NULL
        );
        "#,
    },
    // 2: station mode: one row per device attempt (who, when, how far, why, how long), and
    // certificate status changes that are not issuance (superseded now, revoked later).
    Step {
        sqlite: r#"
        CREATE TABLE attempts (
            id           INTEGER PRIMARY KEY,
            batch_id     TEXT NOT NULL REFERENCES batches(id),
            station      TEXT NOT NULL,
            operator     TEXT,
            profile      TEXT NOT NULL,
            device_id    TEXT,
            started_at   TEXT NOT NULL,
            finished_at  TEXT NOT NULL,
            outcome      TEXT NOT NULL CHECK (outcome IN ('pass', 'fail', 'refused')),
            step         TEXT NOT NULL,
            reason       TEXT NOT NULL,
            serial       TEXT,
            device_ms    INTEGER NOT NULL,
            certfab_ms   INTEGER NOT NULL
        );
        CREATE INDEX attempts_device ON attempts(profile, device_id);
        CREATE INDEX attempts_batch ON attempts(batch_id);
        CREATE TABLE cert_status (
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            status        TEXT NOT NULL CHECK (status IN ('superseded', 'revoked')),
            reason        TEXT NOT NULL,
            at            TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, serial, status),
            FOREIGN KEY (issuer_key_id, serial) REFERENCES certificates(issuer_key_id, serial)
        );
        "#,
        pg: r#"
        CREATE TABLE attempts (
            id           BIGSERIAL PRIMARY KEY,
            batch_id     TEXT NOT NULL REFERENCES batches(id),
            station      TEXT NOT NULL,
            operator     TEXT,
            profile      TEXT NOT NULL,
            device_id    TEXT,
            started_at   TEXT NOT NULL,
            finished_at  TEXT NOT NULL,
            outcome      TEXT NOT NULL CHECK (outcome IN ('pass', 'fail', 'refused')),
            step         TEXT NOT NULL,
            reason       TEXT NOT NULL,
            serial       TEXT,
            device_ms    BIGINT NOT NULL,
            certfab_ms   BIGINT NOT NULL
        );
        CREATE INDEX attempts_device ON attempts(profile, device_id);
        CREATE INDEX attempts_batch ON attempts(batch_id);
        CREATE TABLE cert_status (
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            status        TEXT NOT NULL CHECK (status IN ('superseded', 'revoked')),
            reason        TEXT NOT NULL,
            at            TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, serial, status),
            FOREIGN KEY (issuer_key_id, serial) REFERENCES certificates(issuer_key_id, serial)
        );
        "#,
    },
    // 3: manifests: each one built from this ledger, chained (sequence, prev_sha256) and the
    // devices it covers. A manifest is 'pending' from before its file is written until the
    // devices are marked exported; a pending one whose file never landed is 'abandoned'.
    Step {
        sqlite: r#"
        CREATE TABLE manifests (
            id           INTEGER PRIMARY KEY,
            sequence     INTEGER NOT NULL,
            batches      TEXT NOT NULL,
            path         TEXT NOT NULL,
            sha256       TEXT NOT NULL,
            merkle_root  TEXT NOT NULL,
            count        INTEGER NOT NULL,
            range_first  INTEGER NOT NULL,
            range_last   INTEGER NOT NULL,
            prev_sha256  TEXT,
            signer_kid   TEXT NOT NULL,
            state        TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'abandoned')),
            created_at   TEXT NOT NULL,
            completed_at TEXT
        );
        CREATE UNIQUE INDEX manifests_sequence ON manifests(sequence) WHERE state = 'complete';
        CREATE TABLE manifest_devices (
            manifest_id  INTEGER NOT NULL REFERENCES manifests(id),
            profile      TEXT NOT NULL,
            device_id    TEXT NOT NULL,
            serial       TEXT NOT NULL,
            state_before TEXT NOT NULL,
            PRIMARY KEY (manifest_id, profile, device_id)
        );
        CREATE INDEX manifest_devices_device ON manifest_devices(profile, device_id);
        "#,
        pg: r#"
        CREATE TABLE manifests (
            id           BIGSERIAL PRIMARY KEY,
            sequence     BIGINT NOT NULL,
            batches      TEXT NOT NULL,
            path         TEXT NOT NULL,
            sha256       TEXT NOT NULL,
            merkle_root  TEXT NOT NULL,
            count        BIGINT NOT NULL,
            range_first  BIGINT NOT NULL,
            range_last   BIGINT NOT NULL,
            prev_sha256  TEXT,
            signer_kid   TEXT NOT NULL,
            state        TEXT NOT NULL CHECK (state IN ('pending', 'complete', 'abandoned')),
            created_at   TEXT NOT NULL,
            completed_at TEXT
        );
        CREATE UNIQUE INDEX manifests_sequence ON manifests(sequence) WHERE state = 'complete';
        CREATE TABLE manifest_devices (
            manifest_id  BIGINT NOT NULL REFERENCES manifests(id),
            profile      TEXT NOT NULL,
            device_id    TEXT NOT NULL,
            serial       TEXT NOT NULL,
            state_before TEXT NOT NULL,
            PRIMARY KEY (manifest_id, profile, device_id)
        );
        CREATE INDEX manifest_devices_device ON manifest_devices(profile, device_id);
        "#,
    },
    // 4: lifecycle and a tamper-evident audit log. Audit rows gain the hash-material version
    // (`v`: 1 for rows written before this migration, whose hash covers the original fields
    // only; 2 for new rows, whose hash also covers operator and station_seq), the operator and
    // a per-station sequence number (back-filled for old rows, informational there). Signed
    // checkpoints of the chain head; CRLs issued (the CRL number is monotonic per CA key);
    // keys whose certificate was revoked (never certified again); the SPKI hash of every
    // certificate (one key, one device, for renewals); tenant per batch; the last hash seen of
    // each config file, so changes are audited.
    Step {
        sqlite: r#"
        ALTER TABLE audit ADD COLUMN v INTEGER NOT NULL DEFAULT 1;
        ALTER TABLE audit ADD COLUMN operator TEXT;
        ALTER TABLE audit ADD COLUMN station_seq INTEGER;
        UPDATE audit SET station_seq =
            (SELECT COUNT(*) FROM audit a2 WHERE a2.station = audit.station AND a2.seq <= audit.seq);
        CREATE UNIQUE INDEX audit_station_seq ON audit(station, station_seq);
        CREATE TABLE checkpoints (
            id            INTEGER PRIMARY KEY,
            station       TEXT NOT NULL,
            head_seq      INTEGER NOT NULL,
            head_hash     TEXT NOT NULL,
            at            TEXT NOT NULL,
            statement     TEXT NOT NULL,
            signer_sha256 TEXT NOT NULL
        );
        CREATE TABLE crls (
            issuer_key_id TEXT NOT NULL,
            number        INTEGER NOT NULL,
            ca            TEXT NOT NULL,
            this_update   TEXT NOT NULL,
            next_update   TEXT NOT NULL,
            entries       INTEGER NOT NULL,
            der           BLOB NOT NULL,
            sha256        TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, number)
        );
        CREATE TABLE revoked_keys (
            spki_sha256   TEXT PRIMARY KEY,
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            at            TEXT NOT NULL
        );
        ALTER TABLE certificates ADD COLUMN spki_sha256 TEXT;
        UPDATE certificates SET spki_sha256 =
            (SELECT d.spki_sha256 FROM devices d WHERE d.profile = certificates.profile
                AND d.device_id = certificates.device_id AND d.serial = certificates.serial);
        CREATE INDEX certificates_spki ON certificates(spki_sha256);
        ALTER TABLE batches ADD COLUMN tenant TEXT;
        CREATE TABLE config_seen (
            kind   TEXT NOT NULL,
            name   TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            at     TEXT NOT NULL,
            PRIMARY KEY (kind, name)
        );
        "#,
        pg: r#"
        ALTER TABLE audit ADD COLUMN v BIGINT NOT NULL DEFAULT 1;
        ALTER TABLE audit ADD COLUMN operator TEXT;
        ALTER TABLE audit ADD COLUMN station_seq BIGINT;
        UPDATE audit SET station_seq =
            (SELECT COUNT(*) FROM audit a2 WHERE a2.station = audit.station AND a2.seq <= audit.seq);
        CREATE UNIQUE INDEX audit_station_seq ON audit(station, station_seq);
        CREATE TABLE checkpoints (
            id            BIGSERIAL PRIMARY KEY,
            station       TEXT NOT NULL,
            head_seq      BIGINT NOT NULL,
            head_hash     TEXT NOT NULL,
            at            TEXT NOT NULL,
            statement     TEXT NOT NULL,
            signer_sha256 TEXT NOT NULL
        );
        CREATE TABLE crls (
            issuer_key_id TEXT NOT NULL,
            number        BIGINT NOT NULL,
            ca            TEXT NOT NULL,
            this_update   TEXT NOT NULL,
            next_update   TEXT NOT NULL,
            entries       BIGINT NOT NULL,
            der           BYTEA NOT NULL,
            sha256        TEXT NOT NULL,
            PRIMARY KEY (issuer_key_id, number)
        );
        CREATE TABLE revoked_keys (
            spki_sha256   TEXT PRIMARY KEY,
            issuer_key_id TEXT NOT NULL,
            serial        TEXT NOT NULL,
            at            TEXT NOT NULL
        );
        ALTER TABLE certificates ADD COLUMN spki_sha256 TEXT;
        UPDATE certificates SET spki_sha256 =
            (SELECT d.spki_sha256 FROM devices d WHERE d.profile = certificates.profile
                AND d.device_id = certificates.device_id AND d.serial = certificates.serial);
        CREATE INDEX certificates_spki ON certificates(spki_sha256);
        ALTER TABLE batches ADD COLUMN tenant TEXT;
        CREATE TABLE config_seen (
            kind   TEXT NOT NULL,
            name   TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            at     TEXT NOT NULL,
            PRIMARY KEY (kind, name)
        );
        "#,
    },
    // 5: identity folding (docs/batch.md "Exactly one identity per device"). Each device row
    // gains its identity key (crate::identity::key), filled in by `after_sql` below, which also
    // makes (profile, id_key) unique. Rows whose keys collide already (issued before folding)
    // are kept and recorded in identity_fold_collisions: the first row by rowid owns the key;
    // each later one keeps its id (exact-spelling requests still reach it) under a key of its
    // own, and no new spelling of that identity can be issued.
    Step {
        sqlite: r#"
        ALTER TABLE devices ADD COLUMN id_key TEXT;
        CREATE TABLE identity_fold_collisions (
            profile    TEXT NOT NULL,
            device_id  TEXT NOT NULL,
            id_key     TEXT NOT NULL,
            same_as    TEXT NOT NULL,
            found_at   TEXT NOT NULL,
            PRIMARY KEY (profile, device_id)
        );
        "#,
        pg: r#"
        ALTER TABLE devices ADD COLUMN id_key TEXT;
        CREATE TABLE identity_fold_collisions (
            profile    TEXT NOT NULL,
            device_id  TEXT NOT NULL,
            id_key     TEXT NOT NULL,
            same_as    TEXT NOT NULL,
            found_at   TEXT NOT NULL,
            PRIMARY KEY (profile, device_id)
        );
        "#,
    },
    // 6: leases (docs/central-ledger.md "Leases"): one row per process that opened a central
    // ledger for writing; each intent names the lease of the process that committed it, so
    // the intents of a dead process can be told from those of a live one. On SQLite, whose
    // file lock admits one process, intents carry no lease and every one found at open is
    // burned as before.
    Step {
        sqlite: r#"
        CREATE TABLE leases (
            id            INTEGER PRIMARY KEY,
            station       TEXT NOT NULL,
            host          TEXT NOT NULL,
            pid           INTEGER NOT NULL,
            started_at    TEXT NOT NULL,
            closed_at     TEXT,
            closed_reason TEXT
        );
        ALTER TABLE certificates ADD COLUMN lease INTEGER REFERENCES leases(id);
        CREATE INDEX certificates_open_intents ON certificates(lease) WHERE state = 'intent';
        "#,
        pg: r#"
        CREATE TABLE leases (
            id            BIGSERIAL PRIMARY KEY,
            station       TEXT NOT NULL,
            host          TEXT NOT NULL,
            pid           BIGINT NOT NULL,
            started_at    TEXT NOT NULL,
            closed_at     TEXT,
            closed_reason TEXT
        );
        ALTER TABLE certificates ADD COLUMN lease BIGINT REFERENCES leases(id);
        CREATE INDEX certificates_open_intents ON certificates(lease) WHERE state = 'intent';
        "#,
    },
    // 7: station ledgers imported into a central one (docs/central-ledger.md "Importing a
    // station ledger"). Each import is a row; the station's audit events and checkpoints are
    // kept verbatim beside the central chain (their hashes only verify in their own chain),
    // tied to it by a `ledger_imported` event carrying the station chain's head. Its
    // manifests keep their own sequence and chain, so the ledger's own manifest chain is the
    // rows without an import.
    Step {
        sqlite: r#"
        CREATE TABLE imports (
            id           INTEGER PRIMARY KEY,
            source       TEXT NOT NULL,
            ledger_id    TEXT NOT NULL UNIQUE,
            stations     TEXT NOT NULL,
            head_seq     INTEGER NOT NULL,
            head_hash    TEXT NOT NULL,
            events       INTEGER NOT NULL,
            imported_at  TEXT NOT NULL,
            imported_by  TEXT NOT NULL
        );
        CREATE TABLE imported_audit (
            import_id    INTEGER NOT NULL REFERENCES imports(id),
            seq          INTEGER NOT NULL,
            v            INTEGER NOT NULL,
            at           TEXT NOT NULL,
            station      TEXT NOT NULL,
            station_seq  INTEGER,
            operator     TEXT,
            kind         TEXT NOT NULL,
            batch_id     TEXT,
            device_id    TEXT,
            detail       TEXT NOT NULL,
            prev_hash    TEXT NOT NULL,
            hash         TEXT NOT NULL,
            PRIMARY KEY (import_id, seq)
        );
        CREATE TABLE imported_checkpoints (
            import_id     INTEGER NOT NULL REFERENCES imports(id),
            id            INTEGER NOT NULL,
            station       TEXT NOT NULL,
            head_seq      INTEGER NOT NULL,
            head_hash     TEXT NOT NULL,
            at            TEXT NOT NULL,
            statement     TEXT NOT NULL,
            signer_sha256 TEXT NOT NULL,
            PRIMARY KEY (import_id, id)
        );
        ALTER TABLE manifests ADD COLUMN import_id INTEGER REFERENCES imports(id);
        DROP INDEX manifests_sequence;
        CREATE UNIQUE INDEX manifests_sequence ON manifests(sequence)
            WHERE state = 'complete' AND import_id IS NULL;
        "#,
        pg: r#"
        CREATE TABLE imports (
            id           BIGSERIAL PRIMARY KEY,
            source       TEXT NOT NULL,
            ledger_id    TEXT NOT NULL UNIQUE,
            stations     TEXT NOT NULL,
            head_seq     BIGINT NOT NULL,
            head_hash    TEXT NOT NULL,
            events       BIGINT NOT NULL,
            imported_at  TEXT NOT NULL,
            imported_by  TEXT NOT NULL
        );
        CREATE TABLE imported_audit (
            import_id    BIGINT NOT NULL REFERENCES imports(id),
            seq          BIGINT NOT NULL,
            v            BIGINT NOT NULL,
            at           TEXT NOT NULL,
            station      TEXT NOT NULL,
            station_seq  BIGINT,
            operator     TEXT,
            kind         TEXT NOT NULL,
            batch_id     TEXT,
            device_id    TEXT,
            detail       TEXT NOT NULL,
            prev_hash    TEXT NOT NULL,
            hash         TEXT NOT NULL,
            PRIMARY KEY (import_id, seq)
        );
        CREATE TABLE imported_checkpoints (
            import_id     BIGINT NOT NULL REFERENCES imports(id),
            id            BIGINT NOT NULL,
            station       TEXT NOT NULL,
            head_seq      BIGINT NOT NULL,
            head_hash     TEXT NOT NULL,
            at            TEXT NOT NULL,
            statement     TEXT NOT NULL,
            signer_sha256 TEXT NOT NULL,
            PRIMARY KEY (import_id, id)
        );
        ALTER TABLE manifests ADD COLUMN import_id BIGINT REFERENCES imports(id);
        DROP INDEX manifests_sequence;
        CREATE UNIQUE INDEX manifests_sequence ON manifests(sequence)
            WHERE state = 'complete' AND import_id IS NULL;
        "#,
    },
];

/// Work a migration needs beyond SQL, run in the same transaction right after migration
/// `version` (1-based) is applied.
pub(super) fn after_sql(version: usize, tx: &Conn, at: &str) -> Result<(), LedgerError> {
    if version != 5 {
        return Ok(());
    }
    let rows: Vec<(i64, String, String)> = tx.map(
        "SELECT rowid, profile, device_id FROM devices ORDER BY rowid",
        &[],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let mut owner: std::collections::HashMap<(String, String), String> =
        std::collections::HashMap::new();
    for (rowid, profile, id) in rows {
        let folded = crate::identity::key(&id);
        let key = match owner.get(&(profile.clone(), folded.clone())) {
            None => {
                owner.insert((profile.clone(), folded.clone()), id.clone());
                folded
            }
            Some(first) => {
                // NUL never occurs in a folded id (control characters are refused in ids).
                let own = format!("{folded}\u{0}{id}");
                tx.exec(
                    "INSERT INTO identity_fold_collisions (profile, device_id, id_key, same_as, found_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    p![profile, id, folded, first, at],
                )?;
                own
            }
        };
        tx.exec(
            "UPDATE devices SET id_key = ?2 WHERE rowid = ?1",
            p![rowid, key],
        )?;
    }
    tx.batch("CREATE UNIQUE INDEX devices_id_key ON devices(profile, id_key);")
}
