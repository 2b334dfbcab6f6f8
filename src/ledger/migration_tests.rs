//! Ledger migrations, as cargo tests its SQLite files: every step applied to a ledger written
//! by the release before it (rebuilt from the prefix of the append-only migration list, with
//! the rows that release wrote), applying them again changes nothing, and a ledger of a newer
//! schema is refused with the error docs/batch.md shows, untouched.

use super::schema::{self, MIGRATIONS};
use super::*;
use rusqlite::params;
use rusqlite::types::Value;

const STATION: &str = "line-1";
const AT: &str = "2026-01-02T03:04:05Z";

/// A ledger file as the release whose schema was `version` left it: migrations 1..=version
/// applied the way that release applied them, then the rows it wrote — a finished batch with
/// two issued devices, a rejection and a hash-chained audit trail, plus a station attempt
/// (schema 2 on) and a complete manifest (schema 3 on) — each in the columns that schema had.
fn ledger_at(version: usize, path: &Path) {
    let db = Conn::Lite(Connection::open(path).unwrap());
    for (i, step) in MIGRATIONS[..version].iter().enumerate() {
        db.batch("BEGIN").unwrap();
        db.batch(step.sqlite).unwrap();
        schema::after_sql(i + 1, &db, AT).unwrap();
        let lite = db.lite().unwrap();
        lite.pragma_update(None, "user_version", (i + 1) as i64)
            .unwrap();
        db.batch("COMMIT").unwrap();
    }
    let Conn::Lite(conn) = db else {
        unreachable!("built as SQLite")
    };
    if version == 0 {
        return;
    }
    conn.execute(
        "INSERT INTO batches (id, input_key, profile, profile_sha256, ca, source, out_dir, station, created_at, finished_at)
         VALUES ('b1', 'k1', 'p', 'ps', 'issuing', '{}', 'out', ?1, ?2, ?2)",
        params![STATION, AT],
    )
    .unwrap();
    for (id, spki, serial) in DEVICES {
        conn.execute(
            "INSERT INTO devices (profile, device_id, batch_id, state, spki_sha256, serial, key_origin, input_line, updated_at)
             VALUES ('p', ?1, 'b1', 'signed', ?2, ?3, 'csr', 1, ?4)",
            params![id, spki, serial, AT],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO certificates (issuer_key_id, serial, profile, device_id, batch_id, state, tbs, der, cert_sha256, created_at, signed_at)
             VALUES ('aa', ?1, 'p', ?2, 'b1', 'signed', x'01', ?3, 'cs', ?4, ?4)",
            params![serial, id, der_of(serial), AT],
        )
        .unwrap();
        if version >= 4 {
            conn.execute(
                "UPDATE certificates SET spki_sha256 = ?2 WHERE serial = ?1",
                params![serial, spki],
            )
            .unwrap();
        }
        if version >= 5 {
            conn.execute(
                "UPDATE devices SET id_key = ?2 WHERE device_id = ?1",
                params![id, crate::identity::key(id)],
            )
            .unwrap();
        }
    }
    conn.execute(
        "INSERT INTO rejections (batch_id, line, device_id, kind, reason, at)
         VALUES ('b1', 3, 'SN-BAD', 'rejected', 'name policy', ?1)",
        [AT],
    )
    .unwrap();
    if version >= 2 {
        conn.execute(
            "INSERT INTO attempts (batch_id, station, profile, device_id, started_at, finished_at, outcome, step, reason, serial, device_ms, certfab_ms)
             VALUES ('b1', ?1, 'p', 'SN-1', ?2, ?2, 'pass', 'lock', '', '01aa', 5, 7)",
            params![STATION, AT],
        )
        .unwrap();
    }
    if version >= 3 {
        conn.execute(
            "INSERT INTO manifests (id, sequence, batches, path, sha256, merkle_root, count, range_first, range_last, signer_kid, state, created_at, completed_at)
             VALUES (1, 1, '[\"b1\"]', 'm.jsonl', 'ms', 'mr', 2, 1, 2, 'kid', 'complete', ?1, ?1)",
            [AT],
        )
        .unwrap();
        conn.execute(
            "INSERT INTO manifest_devices (manifest_id, profile, device_id, serial, state_before)
             VALUES (1, 'p', 'SN-1', '01aa', 'signed')",
            [],
        )
        .unwrap();
    }
    // The audit trail in the hash material that release wrote: version 1 rows before schema
    // 4 (which added the version, operator and per-station number), version 2 rows after.
    let mut prev = GENESIS.to_string();
    for seq in 1..=3i64 {
        let mut e = AuditEvent {
            seq,
            v: if version >= 4 { 2 } else { 1 },
            at: AT.into(),
            station: STATION.into(),
            station_seq: (version >= 4).then_some(seq),
            operator: (version >= 4).then(|| "op".to_string()),
            kind: "issued".into(),
            batch_id: Some("b1".into()),
            device_id: Some(format!("SN-{seq}")),
            detail: format!("{{\"n\":{seq}}}"),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        e.hash = e.expected_hash().unwrap();
        if version >= 4 {
            conn.execute(
                "INSERT INTO audit (seq, at, station, kind, batch_id, device_id, detail, prev_hash, hash, v, operator, station_seq)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 2, ?10, ?11)",
                params![e.seq, e.at, e.station, e.kind, e.batch_id, e.device_id, e.detail, e.prev_hash, e.hash, e.operator, e.station_seq],
            )
            .unwrap();
        } else {
            conn.execute(
                "INSERT INTO audit (seq, at, station, kind, batch_id, device_id, detail, prev_hash, hash)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![e.seq, e.at, e.station, e.kind, e.batch_id, e.device_id, e.detail, e.prev_hash, e.hash],
            )
            .unwrap();
        }
        prev = e.hash;
    }
}

/// (device id, SPKI hash, serial) of the devices every older ledger holds.
const DEVICES: [(&str, &str, &str); 2] = [("SN-1", "k1", "01aa"), ("SN-2", "k2", "01bb")];

/// The stand-in certificate stored for `serial`.
fn der_of(serial: &str) -> Vec<u8> {
    format!("cert {serial}").into_bytes()
}

/// Schema objects (tables, indexes) as SQLite stores them, in a fixed order.
fn schema_of(conn: &Connection) -> Vec<(String, String, Option<String>)> {
    conn.prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn user_version(conn: &Connection) -> i64 {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap()
}

/// Every row of every table, in rowid order, with the schema and the version: what a second
/// application of the migrations must leave exactly as it was.
fn dump(conn: &Connection) -> String {
    let mut out = format!("user_version {}\n", user_version(conn));
    for (kind, name, sql) in schema_of(conn) {
        out.push_str(&format!("{kind} {name}: {sql:?}\n"));
        if kind != "table" {
            continue;
        }
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, Value>(i))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&format!("  {:?}\n", row.unwrap()));
        }
    }
    out
}

/// The schema a new ledger gets today.
fn fresh_schema() -> Vec<(String, String, Option<String>)> {
    let dir = tempfile::tempdir().unwrap();
    let l = Ledger::open(dir.path().join("new.sqlite"), STATION).unwrap();
    schema_of(l.connection())
}

fn column<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> Vec<T> {
    conn.prepare(sql)
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn intent(id: &str, spki: &str, serial: &str) -> Intent {
    Intent {
        profile: "p".into(),
        device_id: id.into(),
        spki_sha256: spki.into(),
        key_origin: KeyOrigin::Csr,
        line: 9,
        issuer_key_id: "aa".into(),
        serial: serial.into(),
        tbs: vec![2],
    }
}

/// Every migration step, applied by opening a ledger the release before it wrote: the
/// ledger reaches today's version with exactly today's schema, keeps every row, back-fills
/// what later steps added (identity keys, certificate key hashes, per-station audit numbers),
/// its old audit chain still verifies, and issuance goes on: a re-run gets the certificate
/// the old release issued, a new device is reserved, a new event chains on.
#[test]
fn migration_each_step_upgrades_a_ledger_of_the_previous_schema() {
    let latest = MIGRATIONS.len();
    let want_schema = fresh_schema();
    for version in 0..latest {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        ledger_at(version, &path);
        let mut l = Ledger::open(&path, STATION)
            .unwrap_or_else(|e| panic!("schema {version} → {latest}: {e}"));
        let c = l.connection();
        assert_eq!(user_version(c), latest as i64, "from schema {version}");
        assert_eq!(schema_of(c), want_schema, "from schema {version}");
        if version == 0 {
            continue;
        }
        let devices: Vec<(String, String)> = c
            .prepare("SELECT device_id, id_key FROM devices ORDER BY device_id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            devices,
            vec![
                ("SN-1".to_string(), crate::identity::key("SN-1")),
                ("SN-2".into(), crate::identity::key("SN-2"))
            ],
            "from schema {version}: devices kept, identity keys filled in"
        );
        let certs: Vec<(String, Vec<u8>, String)> = c
            .prepare("SELECT serial, der, spki_sha256 FROM certificates ORDER BY serial")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            certs,
            DEVICES
                .iter()
                .map(|(_, spki, serial)| (serial.to_string(), der_of(serial), spki.to_string()))
                .collect::<Vec<_>>(),
            "from schema {version}: certificates kept, key hashes filled in"
        );
        assert_eq!(
            column::<String>(c, "SELECT device_id FROM rejections"),
            ["SN-BAD"],
            "from schema {version}"
        );
        assert_eq!(
            column::<i64>(c, "SELECT station_seq FROM audit ORDER BY seq"),
            [1, 2, 3],
            "from schema {version}: per-station numbers back-filled"
        );
        assert_eq!(
            column::<i64>(c, "SELECT COUNT(*) FROM attempts"),
            [i64::from(version >= 2)],
            "from schema {version}"
        );
        assert_eq!(
            column::<String>(c, "SELECT state FROM manifests"),
            if version >= 3 {
                vec!["complete".to_string()]
            } else {
                vec![]
            },
            "from schema {version}"
        );
        assert_eq!(
            l.verify_audit_chain(),
            Ok(3),
            "from schema {version}: the old chain verifies as it was written"
        );
        // Issuance goes on where the old release left off, in a new batch.
        l.connection()
            .execute(
                "INSERT INTO batches (id, input_key, profile, profile_sha256, ca, source, out_dir, station, created_at)
                 VALUES ('b2', 'k2', 'p', 'ps', 'issuing', '{}', 'out', ?1, ?2)",
                params![STATION, AT],
            )
            .unwrap();
        let d = l.reserve("b2", &[intent("SN-1", "k1", "01cc")]).unwrap();
        assert_eq!(
            d,
            [Reserve::AlreadyIssued {
                der: der_of("01aa")
            }],
            "from schema {version}: a re-run gets the certificate already issued"
        );
        let d = l.reserve("b2", &[intent("SN-3", "k3", "01dd")]).unwrap();
        assert_eq!(d, [Reserve::Reserved], "from schema {version}");
        let d = l.reserve("b2", &[intent("sn-1", "k9", "01ee")]).unwrap();
        assert!(
            matches!(&d[0], Reserve::Refused(r) if r.contains("same identity as SN-1")),
            "from schema {version}: another spelling of an old id is refused: {d:?}"
        );
        l.record_event(
            "note",
            Some("b2"),
            None,
            &serde_json::json!({"after": "upgrade"}),
        )
        .unwrap();
        let events = column::<i64>(l.connection(), "SELECT COUNT(*) FROM audit")[0];
        assert!(events > 3, "from schema {version}: {events} events");
        assert_eq!(
            l.verify_audit_chain(),
            Ok(events as u64),
            "from schema {version}: new events chain onto the old ones"
        );
    }
}

/// Applying the migrations to a ledger that has them changes nothing: not the version, not
/// the schema, not a row — whether by the migration runner itself or by opening the ledger
/// again, from every older schema.
#[test]
fn migration_applied_twice_is_a_no_op() {
    for version in 0..MIGRATIONS.len() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.sqlite");
        ledger_at(version, &path);
        let db = Conn::Lite(Connection::open(&path).unwrap());
        migrate(&db, "ledger.sqlite", AT).unwrap();
        let once = dump(db.lite().unwrap());
        migrate(&db, "ledger.sqlite", "2030-01-01T00:00:00Z").unwrap();
        assert_eq!(dump(db.lite().unwrap()), once, "from schema {version}");
        drop(db);

        drop(Ledger::open(&path, STATION).unwrap());
        let opened = dump(&Connection::open(&path).unwrap());
        drop(Ledger::open(&path, STATION).unwrap());
        assert_eq!(
            dump(&Connection::open(&path).unwrap()),
            opened,
            "from schema {version}: a second open changes nothing"
        );
    }
}

/// A ledger written by a newer certfab (a schema version past the last migration this binary
/// has) is refused, by a run and by a read-only open alike, with the message docs/batch.md
/// shows and exit code 5, and is left exactly as it was.
#[test]
fn migration_newer_schema_is_refused_with_the_documented_error() {
    let latest = MIGRATIONS.len() as i64;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.sqlite");
    drop(Ledger::open(&path, STATION).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("CREATE TABLE from_the_future (x TEXT);")
            .unwrap();
        conn.pragma_update(None, "user_version", latest + 1)
            .unwrap();
    }
    let before = dump(&Connection::open(&path).unwrap());

    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/batch.md"))
        .unwrap();
    let template = doc
        .split('`')
        .find(|s| s.starts_with("ledger LEDGER has schema version"))
        .expect("docs/batch.md shows the message for a newer schema");
    let want = template
        .replace("LEDGER", &path.display().to_string())
        .replace("FOUND", &(latest + 1).to_string())
        .replace("SUPPORTED", &latest.to_string());

    for (how, result) in [
        ("open", Ledger::open(&path, STATION).map(drop)),
        ("open_read", Ledger::open_read(&path, STATION).map(drop)),
    ] {
        let e = result.expect_err(how);
        assert!(
            matches!(e, LedgerError::TooNew { found, supported, .. }
                if found == latest + 1 && supported == latest),
            "{how}: {e:?}"
        );
        assert_eq!(e.to_string(), want, "{how}");
        assert_eq!(e.exit_code() as u8, 5, "{how}");
    }
    assert_eq!(
        dump(&Connection::open(&path).unwrap()),
        before,
        "the newer ledger is left as it was"
    );
}
