//! The one seam between the ledger and its database engine: a connection that is either an
//! embedded SQLite file or a PostgreSQL server, with the handful of operations the ledger uses
//! (execute, query, stream, a write transaction). Statements are written once, in the SQL both
//! engines accept, with SQLite's numbered `?N` placeholders (translated to PostgreSQL's `$N`);
//! values cross the seam as [`Value`]s, so no ledger code names either driver.
//!
//! A write transaction is exclusive on both engines: SQLite's `BEGIN IMMEDIATE` takes the
//! file's write lock, and on PostgreSQL every write transaction first takes one transaction-level
//! advisory lock ([`WRITER_LOCK`]). The exactly-one-identity decision, the serial it reserves
//! and the audit event it appends are therefore made against the committed state of every
//! station, one writer at a time, and the audit chain stays one chain (docs/central-ledger.md).
//!
//! On PostgreSQL that lock is released when the transaction ends, and a synchronous commit
//! ends only after the server's WAL flush: every station would queue behind every other
//! station's disk flush, and no two commits could share one. So a process with a lease commits
//! asynchronously (the lock goes as soon as the commit is in the WAL) and, in the same round
//! trip, a synchronous write to its own lease row after it; the server flushes WAL in order,
//! so when that returns the transaction is on disk, and flushes of several stations are shared
//! (docs/central-ledger.md "Durable, without the lock held over the flush").

use super::LedgerError;
use std::cell::RefCell;
use std::collections::HashMap;

/// The advisory lock every PostgreSQL write transaction holds ("cfab" in ASCII): writers from
/// every station queue on it, as SQLite writers queue on the file lock.
pub(crate) const WRITER_LOCK: i64 = 0x6366_6162;

/// The advisory-lock namespace of process leases (`pg_advisory_lock(LEASE_NS, lease id)`).
pub(crate) const LEASE_NS: i32 = 0x6366_6c73;

/// A value crossing the seam: the four storage classes the ledger uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Null,
    Int(i64),
    Text(String),
    Blob(Vec<u8>),
}

/// A Rust value the ledger stores.
pub(crate) trait ToValue {
    fn to_value(&self) -> Value;
}

impl<T: ToValue + ?Sized> ToValue for &T {
    fn to_value(&self) -> Value {
        (**self).to_value()
    }
}

impl ToValue for str {
    fn to_value(&self) -> Value {
        Value::Text(self.to_owned())
    }
}

impl ToValue for String {
    fn to_value(&self) -> Value {
        Value::Text(self.clone())
    }
}

impl ToValue for i64 {
    fn to_value(&self) -> Value {
        Value::Int(*self)
    }
}

impl ToValue for bool {
    fn to_value(&self) -> Value {
        Value::Int(i64::from(*self))
    }
}

impl ToValue for [u8] {
    fn to_value(&self) -> Value {
        Value::Blob(self.to_vec())
    }
}

impl ToValue for Vec<u8> {
    fn to_value(&self) -> Value {
        Value::Blob(self.clone())
    }
}

impl<T: ToValue> ToValue for Option<T> {
    fn to_value(&self) -> Value {
        match self {
            Some(v) => v.to_value(),
            None => Value::Null,
        }
    }
}

/// A Rust value read back; the error says what was found instead.
pub(crate) trait FromValue: Sized {
    fn from_value(v: &Value) -> Result<Self, String>;
}

fn mismatch(want: &str, v: &Value) -> String {
    let got = match v {
        Value::Null => "NULL",
        Value::Int(_) => "an integer",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    };
    format!("expected {want}, found {got}")
}

impl FromValue for String {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Text(s) => Ok(s.clone()),
            _ => Err(mismatch("text", v)),
        }
    }
}

impl FromValue for i64 {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i),
            _ => Err(mismatch("an integer", v)),
        }
    }
}

impl FromValue for bool {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Int(i) => Ok(*i != 0),
            _ => Err(mismatch("a boolean", v)),
        }
    }
}

impl FromValue for Vec<u8> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Blob(b) => Ok(b.clone()),
            _ => Err(mismatch("bytes", v)),
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    fn from_value(v: &Value) -> Result<Self, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// Statement parameters: `p![a, b, c]` is a slice of [`Value`]s.
macro_rules! p {
    ($($x:expr),* $(,)?) => {
        &[$($crate::ledger::db::ToValue::to_value(&$x)),*] as &[$crate::ledger::db::Value]
    };
}
pub(crate) use p;

/// One result row.
#[derive(Debug, Clone)]
pub(crate) struct Row(Vec<Value>);

impl Row {
    /// Column `i` as `T`.
    pub(crate) fn get<T: FromValue>(&self, i: usize) -> Result<T, LedgerError> {
        let v = self.0.get(i).unwrap_or(&Value::Null);
        T::from_value(v).map_err(|e| LedgerError::Data(format!("column {i}: {e}")))
    }
}

/// A PostgreSQL connection and its prepared statements (batch issuance runs the same few
/// statements for every device; preparing each once saves a round trip per statement).
pub(crate) struct Pg {
    client: postgres::Client,
    stmts: HashMap<String, postgres::Statement>,
    /// The synchronous write sent with each `COMMIT` (see the module doc); none before the
    /// process has a lease (migrations, read-only opens): then commits are synchronous.
    barrier: Option<String>,
    /// The station whose audit head each write transaction reads in its first round trip
    /// ([`Conn::prefetch_audit_head`]); none before the schema is known to have the audit table.
    head_station: Option<String>,
    /// The audit head read with the lock in the current write transaction: (transaction id,
    /// station, last seq, last hash, the station's last number).
    prefetched: Option<Prefetched>,
}

/// An audit head read in a transaction's first round trip (see [`Pg::prefetched`]).
type Prefetched = (u64, String, Option<i64>, Option<String>, i64);

/// The chain's head and the station's last number (as `audit::read_head` asks for them), the
/// station named by the session setting `certfab.station`: a simple query can carry no
/// parameters, and a station id must not be pasted into SQL text.
const HEAD_SQL: &str = "SELECT h.seq, h.hash,
        (SELECT COALESCE(MAX(station_seq), 0) FROM audit WHERE station = current_setting('certfab.station'))
 FROM (SELECT 1 AS one) AS o
 LEFT JOIN (SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1) AS h ON TRUE";

/// An open database.
pub(crate) enum Conn {
    Lite(rusqlite::Connection),
    Pg(Box<RefCell<Pg>>),
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(*i),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, ToSql, Type};
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::BOOL => (*i != 0).to_sql(ty, out),
                _ => Err(format!("an integer given for a {ty} parameter").into()),
            },
            Value::Text(s) if <&str as ToSql>::accepts(ty) => s.as_str().to_sql(ty, out),
            Value::Blob(b) if *ty == Type::BYTEA => b.as_slice().to_sql(ty, out),
            Value::Text(_) => Err(format!("text given for a {ty} parameter").into()),
            Value::Blob(_) => Err(format!("bytes given for a {ty} parameter").into()),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

fn lite_row(r: &rusqlite::Row<'_>, n: usize) -> rusqlite::Result<Row> {
    use rusqlite::types::ValueRef;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(i) => Value::Int(i),
            // The ledger stores no floating point; a REAL here is someone else's row.
            ValueRef::Real(f) => Value::Text(f.to_string()),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => Value::Blob(b.to_vec()),
        });
    }
    Ok(Row(out))
}

fn pg_row(r: &postgres::Row) -> Result<Row, LedgerError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(r.len());
    for (i, c) in r.columns().iter().enumerate() {
        let ty = c.type_();
        let v = match *ty {
            Type::INT8 => r.try_get::<_, Option<i64>>(i)?.map(Value::Int),
            Type::INT4 => r
                .try_get::<_, Option<i32>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::INT2 => r
                .try_get::<_, Option<i16>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BOOL => r
                .try_get::<_, Option<bool>>(i)?
                .map(|v| Value::Int(v.into())),
            Type::BYTEA => r.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                r.try_get::<_, Option<String>>(i)?.map(Value::Text)
            }
            _ => {
                return Err(LedgerError::Data(format!(
                    "column {} has type {ty}, which the ledger does not use",
                    c.name()
                )))
            }
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row(out))
}

/// SQLite's `?N` placeholders as PostgreSQL's `$N` (string literals left alone).
pub(crate) fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut quoted = false;
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                out.push(c);
            }
            '?' if !quoted => out.push('$'),
            c => out.push(c),
        }
    }
    out
}

impl Pg {
    fn prepared(&mut self, sql: &str) -> Result<postgres::Statement, LedgerError> {
        if let Some(s) = self.stmts.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(&pg_sql(sql))?;
        self.stmts.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|v| v as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

impl Conn {
    /// A PostgreSQL connection.
    pub(crate) fn pg(client: postgres::Client) -> Self {
        Conn::Pg(Box::new(RefCell::new(Pg {
            client,
            stmts: HashMap::new(),
            barrier: None,
            head_station: None,
            prefetched: None,
        })))
    }

    /// From now on, each write transaction reads `station`'s audit head in the round trip
    /// that begins it and takes the writers' lock, instead of one more round trip when its first
    /// event is appended (three per station device). PostgreSQL only; call once the schema
    /// has the audit table.
    pub(crate) fn prefetch_audit_head(&self, station: &str) -> Result<(), LedgerError> {
        if let Conn::Pg(pg) = self {
            let mut pg = pg.borrow_mut();
            pg.client.execute(
                "SELECT set_config('certfab.station', $1, false)",
                &[&station],
            )?;
            // Planned once for the session: a statement in a simple query is planned anew
            // each time, which cost more than the round trip it saves.
            pg.client
                .batch_execute(&format!("PREPARE certfab_head AS {HEAD_SQL}"))?;
            pg.head_station = Some(station.to_string());
        }
        Ok(())
    }

    /// From now on, write transactions commit asynchronously, each followed in the same
    /// round trip by a synchronous no-op update of lease `lease`'s row, which flushes the WAL
    /// through the commit before [`Tx::commit`] returns (module doc). SQLite: nothing changes.
    pub(crate) fn flush_through_lease(&self, lease: i64) {
        if let Conn::Pg(pg) = self {
            pg.borrow_mut().barrier =
                Some(format!("UPDATE leases SET pid = pid WHERE id = {lease}"));
        }
    }

    /// The PostgreSQL write transaction's `COMMIT`, with the flush barrier when there is one.
    fn pg_commit(&self) -> Option<String> {
        match self {
            Conn::Pg(pg) => Some(match &pg.borrow().barrier {
                Some(b) => format!("COMMIT; {b}"),
                None => "COMMIT".into(),
            }),
            Conn::Lite(_) => None,
        }
    }

    /// Whether this is the PostgreSQL back end.
    pub(crate) fn is_pg(&self) -> bool {
        matches!(self, Conn::Pg(_))
    }

    /// The SQLite connection, when that is the back end (pragmas, file checks).
    pub(crate) fn lite(&self) -> Option<&rusqlite::Connection> {
        match self {
            Conn::Lite(c) => Some(c),
            Conn::Pg(_) => None,
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) fn exec(&self, sql: &str, params: &[Value]) -> Result<usize, LedgerError> {
        match self {
            Conn::Lite(c) => Ok(c
                .prepare_cached(sql)?
                .execute(rusqlite::params_from_iter(params))?),
            Conn::Pg(pg) => {
                let mut pg = pg.borrow_mut();
                let st = pg.prepared(sql)?;
                Ok(pg.client.execute(&st, &pg_params(params))? as usize)
            }
        }
    }

    /// Runs statements without parameters (migrations, transaction control).
    pub(crate) fn batch(&self, sql: &str) -> Result<(), LedgerError> {
        match self {
            Conn::Lite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(pg) => Ok(pg.borrow_mut().client.batch_execute(sql)?),
        }
    }

    /// Calls `f` with each row in order until it returns false, holding one row at a time.
    pub(crate) fn each(
        &self,
        sql: &str,
        params: &[Value],
        mut f: impl FnMut(Row) -> Result<bool, LedgerError>,
    ) -> Result<(), LedgerError> {
        match self {
            Conn::Lite(c) => {
                let mut st = c.prepare_cached(sql)?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(params))?;
                while let Some(r) = rows.next()? {
                    if !f(lite_row(r, n)?)? {
                        break;
                    }
                }
                Ok(())
            }
            Conn::Pg(pg) => {
                use postgres::fallible_iterator::FallibleIterator;
                let mut pg = pg.borrow_mut();
                let st = pg.prepared(sql)?;
                let mut rows = pg.client.query_raw(&st, pg_params(params))?;
                while let Some(r) = rows.next()? {
                    if !f(pg_row(&r)?)? {
                        break;
                    }
                }
                Ok(())
            }
        }
    }

    /// Every row, each mapped by `f`.
    pub(crate) fn map<T>(
        &self,
        sql: &str,
        params: &[Value],
        mut f: impl FnMut(&Row) -> Result<T, LedgerError>,
    ) -> Result<Vec<T>, LedgerError> {
        let mut out = Vec::new();
        self.each(sql, params, |r| {
            out.push(f(&r)?);
            Ok(true)
        })?;
        Ok(out)
    }

    /// The first row, if any, mapped by `f`.
    pub(crate) fn opt<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> Result<T, LedgerError>,
    ) -> Result<Option<T>, LedgerError> {
        let mut first = None;
        self.each(sql, params, |r| {
            first = Some(r);
            Ok(false)
        })?;
        first.as_ref().map(f).transpose()
    }

    /// The first row, which must exist, mapped by `f`.
    pub(crate) fn one<T>(
        &self,
        sql: &str,
        params: &[Value],
        f: impl FnOnce(&Row) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        self.opt(sql, params, f)?.ok_or_else(|| {
            LedgerError::Data("a query that always returns a row returned none".into())
        })
    }

    /// Starts the one write transaction (see the module doc): SQLite's `BEGIN IMMEDIATE`, or
    /// PostgreSQL's `BEGIN` and the writers' advisory lock.
    pub(crate) fn begin(&self) -> Result<Tx<'_>, LedgerError> {
        match self {
            Conn::Lite(_) => self.batch("BEGIN IMMEDIATE")?,
            Conn::Pg(pg) => {
                // One round trip: the transaction, its commit mode and the writers' lock.
                let lazy = if pg.borrow().barrier.is_some() {
                    " SET LOCAL synchronous_commit = off;"
                } else {
                    ""
                };
                let tx = Tx {
                    conn: self,
                    open: true,
                    id: next_tx_id(),
                };
                let begin = format!("BEGIN;{lazy} SELECT pg_advisory_xact_lock({WRITER_LOCK})");
                let mut pg = pg.borrow_mut();
                pg.prefetched = None;
                let Some(station) = pg.head_station.clone() else {
                    pg.client.batch_execute(&begin)?;
                    return Ok(tx);
                };
                // The head is read after the lock, in the same transaction: it stays true
                // until the commit, as `audit::read_head`'s own query would be.
                let mut head = None;
                for m in pg
                    .client
                    .simple_query(&format!("{begin}; EXECUTE certfab_head"))?
                {
                    if let postgres::SimpleQueryMessage::Row(r) = m {
                        if r.len() == 3 {
                            head = Some((
                                r.get(0).map(str::parse::<i64>).transpose(),
                                r.get(1).map(str::to_string),
                                r.get(2).map(str::parse::<i64>).transpose(),
                            ));
                        }
                    }
                }
                if let Some((Ok(seq), hash, Ok(Some(station_seq)))) = head {
                    pg.prefetched = Some((tx.id, station, seq, hash, station_seq));
                }
                return Ok(tx);
            }
        }
        Ok(Tx {
            conn: self,
            open: true,
            id: next_tx_id(),
        })
    }

    /// Starts a read-only snapshot that later queries share (never committed: the reader is
    /// dropped). SQLite: a deferred transaction; PostgreSQL: repeatable read.
    pub(crate) fn snapshot(&self) -> Result<(), LedgerError> {
        self.batch(match self {
            Conn::Lite(_) => "BEGIN",
            Conn::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        })
    }

    /// Whether a table exists (the audit report reads ledgers of every schema version).
    pub(crate) fn has_table(&self, name: &str) -> Result<bool, LedgerError> {
        let sql = match self {
            Conn::Lite(_) => "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            Conn::Pg(_) => {
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?1"
            }
        };
        Ok(self.one(sql, p![name], |r| r.get::<i64>(0))? > 0)
    }

    /// Whether a table has a column.
    pub(crate) fn has_column(&self, table: &str, column: &str) -> Result<bool, LedgerError> {
        let sql = match self {
            Conn::Lite(_) => "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
            Conn::Pg(_) => {
                "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ?1 AND column_name = ?2"
            }
        };
        Ok(self.one(sql, p![table, column], |r| r.get::<i64>(0))? > 0)
    }
}

/// Rows per multi-row statement (a group's inserts and updates): a few thousand parameters,
/// well inside both engines' limits (SQLite 32766, PostgreSQL 65535).
pub(crate) const ROWS_PER_STATEMENT: usize = 256;

impl Conn {
    /// `(…), (…)`: `rows` rows of a multi-row `VALUES` list, parameters numbered from 1 (see
    /// [`Conn::values_from`]).
    pub(crate) fn values(&self, rows: usize, cols: &[&str]) -> String {
        self.values_from(1, rows, cols)
    }

    /// `rows` rows of a `VALUES` list, parameters numbered from `first`. Each column is `""`
    /// (a parameter), `"=SQL"` (that literal, no parameter), or a type name: a parameter cast
    /// to it on PostgreSQL, where a value in a `VALUES` list has no column to take its type
    /// from and would otherwise be text (bytes and integers need BYTEA and BIGINT).
    pub(crate) fn values_from(&self, first: usize, rows: usize, cols: &[&str]) -> String {
        let mut n = first;
        let mut out = String::with_capacity(rows * cols.len() * 8);
        for r in 0..rows {
            out.push_str(if r == 0 { "(" } else { ", (" });
            for (i, c) in cols.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                if let Some(lit) = c.strip_prefix('=') {
                    out.push_str(lit);
                    continue;
                }
                // Written in place: a group's statements have thousands of placeholders.
                use std::fmt::Write;
                let _ = match (c.is_empty(), self.is_pg()) {
                    (false, true) => write!(out, "CAST(?{n} AS {c})"),
                    _ => write!(out, "?{n}"),
                };
                n += 1;
            }
            out.push(')');
        }
        out
    }
}

/// A write transaction: rolled back when dropped without [`Tx::commit`].
pub(crate) struct Tx<'c> {
    conn: &'c Conn,
    open: bool,
    /// Unique in this process: what was read inside one transaction stays true until it ends.
    id: u64,
}

/// The next transaction's id.
static TX_IDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_tx_id() -> u64 {
    TX_IDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

impl Tx<'_> {
    /// This transaction's id (see [`Tx::id`]'s field).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// `station`'s audit head as this transaction's first round trip read it
    /// ([`Conn::prefetch_audit_head`]): the last seq and hash, and the station's last number.
    pub(crate) fn prefetched_head(
        &self,
        station: &str,
    ) -> Option<(Option<i64>, Option<String>, i64)> {
        let Conn::Pg(pg) = self.conn else {
            return None;
        };
        match pg.borrow_mut().prefetched.take() {
            Some((id, s, seq, hash, station_seq)) if id == self.id && s == station => {
                Some((seq, hash, station_seq))
            }
            _ => None,
        }
    }

    /// Commits, durably when it returns (SQLite: fsync'd under `synchronous=FULL`;
    /// PostgreSQL: the commit and the lease row's synchronous update after it, whose WAL flush
    /// covers the commit, or a plain synchronous commit before the process has a lease).
    pub(crate) fn commit(mut self) -> Result<(), LedgerError> {
        self.open = false;
        match self.conn.pg_commit() {
            Some(sql) => self.conn.batch(&sql),
            None => self.conn.batch("COMMIT"),
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.open {
            // Best effort: a connection that is gone has rolled back already.
            let _ = self.conn.batch("ROLLBACK");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_lists_number_cast_and_inline() {
        let lite = Conn::Lite(rusqlite::Connection::open_in_memory().unwrap());
        assert_eq!(
            lite.values_from(2, 2, &["", "='x'", "BYTEA"]),
            "(?2, 'x', ?3), (?4, 'x', ?5)"
        );
    }

    #[test]
    fn placeholders_translate_outside_literals() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = '?2' AND d = ?12"),
            "SELECT a FROM t WHERE b = $1 AND c = '?2' AND d = $12"
        );
    }
}
