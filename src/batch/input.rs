//! Batch inputs, streamed one row at a time: a CSV with a header, a directory of CSRs, or a
//! count of devices whose keys certfab generates. A malformed row is returned as an error with
//! its line number; the rows after it still come.

use crate::input::{absolute, open_user_file, CrlfToLf, InputRoot, Pipes};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Where the batch's devices come from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Source {
    /// CSV with `device_id` and `csr` or `pubkey` columns (paths relative to the CSV, or PEM).
    Csv {
        path: PathBuf,
        /// The directory key files must resolve inside (default: the CSV's directory).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_root: Option<PathBuf>,
    },
    /// Every `*.csr`, `*.pem`, `*.der` file in a directory; device id from the profile rule.
    CsrDir {
        /// The directory.
        path: PathBuf,
        /// The directory the files (and their links) must resolve inside (default: `path`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input_root: Option<PathBuf>,
    },
    /// `count` devices named by `id_template`, keys generated on this host.
    Count {
        /// How many.
        count: u64,
        /// e.g. `SN{seq:06}`.
        id_template: String,
    },
}

/// How the device key arrives.
#[derive(Debug, Clone)]
pub enum RowKey {
    /// CSR bytes (PEM or DER).
    Csr(Vec<u8>),
    /// SPKI bytes (PEM or DER).
    PublicKey(Vec<u8>),
    /// certfab generates the key.
    Generate,
}

/// One input row.
#[derive(Debug, Clone)]
pub struct Row {
    /// Line (CSV line, file index from 1, or sequence number).
    pub line: u64,
    /// Device id, when the input names it.
    pub device_id: Option<String>,
    pub key: RowKey,
    /// `csv.COLUMN` values.
    pub vars: BTreeMap<String, String>,
}

/// A row that could not be read.
#[derive(Debug, Clone)]
pub struct RowError {
    pub line: u64,
    /// Device id, if it could be read.
    pub device_id: Option<String>,
    pub reason: String,
    /// The input cannot be read past this row (a row over [`MAX_ROW`]): the batch stops here,
    /// resumable once the input is fixed, instead of silently skipping the rest.
    pub fatal: bool,
}

/// The largest CSV field: an inline PEM CSR is a few KiB, a device id or column value far less.
/// A longer field rejects its row.
pub const MAX_FIELD: usize = 64 * 1024;

/// The most bytes one CSV row may take. Enforced while reading, so a 100 MB field costs no more
/// memory than this; a longer row stops the batch (the reader cannot find where it ends
/// without reading it whole).
pub const MAX_ROW: u64 = 1024 * 1024;

/// Counts the bytes the CSV parser pulls since the last row ended and fails the read past
/// [`MAX_ROW`], so an endless field never has to be held.
struct RowBudget<R> {
    inner: R,
    used: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R: Read> Read for RowBudget<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        if self.used.load(Ordering::Relaxed) > MAX_ROW {
            return Err(std::io::Error::other("row over the limit"));
        }
        let n = self.inner.read(buf)?;
        self.used.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// An input that cannot be read at all.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {msg}")]
pub struct InputError {
    pub path: String,
    /// What is wrong and the fix.
    pub msg: String,
}

/// The widest zero padding `{seq:0N}` may ask for: a u64 has at most 20 digits, and a device id
/// at most 64 characters.
pub const MAX_SEQ_WIDTH: usize = 20;

/// A parsed `--id-template`: literal text around one `{seq}` or `{seq:0N}` placeholder.
/// Parsed (and refused) before a batch starts, so rendering an id can never fail halfway
/// through a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdTemplate {
    prefix: String,
    width: usize,
    suffix: String,
}

impl IdTemplate {
    /// Parses `template`, or says what is wrong with it (shown escaped).
    pub fn parse(template: &str) -> Result<Self, String> {
        let shown = crate::text::escape(template);
        let start = template.find("{seq").ok_or_else(|| {
            format!("--id-template '{shown}' has no {{seq}} or {{seq:0N}} placeholder")
        })?;
        let end = template[start..]
            .find('}')
            .map(|e| start + e)
            .ok_or_else(|| format!("--id-template '{shown}' has an unclosed '{{'"))?;
        let spec = &template[start + 4..end];
        let width = match spec.strip_prefix(":0") {
            Some(w) => match w.parse::<usize>() {
                Ok(w) if w <= MAX_SEQ_WIDTH => w,
                Ok(_) => {
                    return Err(format!(
                        "--id-template '{shown}': width {w} is over {MAX_SEQ_WIDTH} (a sequence number has at most 20 digits)"
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "--id-template '{shown}': the width in {{seq:0N}} must be a number 1..={MAX_SEQ_WIDTH}"
                    ))
                }
            },
            None if spec.is_empty() => 0,
            None => {
                return Err(format!(
                    "--id-template '{shown}': use {{seq}} or {{seq:0N}}, not {{seq{}}}",
                    crate::text::escape(spec)
                ))
            }
        };
        let (prefix, suffix) = (&template[..start], &template[end + 1..]);
        if prefix.contains(['{', '}']) || suffix.contains(['{', '}']) {
            return Err(format!(
                "--id-template '{shown}' has braces outside its one {{seq}} placeholder"
            ));
        }
        Ok(Self {
            prefix: prefix.into(),
            width,
            suffix: suffix.into(),
        })
    }

    /// The id of device `n`.
    pub fn render(&self, n: u64) -> String {
        format!("{}{n:0w$}{}", self.prefix, self.suffix, w = self.width)
    }
}

/// Opens a source as a stream of rows.
pub fn rows(
    source: &Source,
) -> Result<Box<dyn Iterator<Item = Result<Row, RowError>> + Send>, InputError> {
    match source {
        Source::Csv { path, input_root } => csv_rows(path, input_root.as_deref()),
        Source::CsrDir { path, input_root } => dir_rows(path, input_root.as_deref()),
        Source::Count { count, id_template } => {
            let t = IdTemplate::parse(id_template).map_err(|msg| InputError {
                path: "--id-template".into(),
                msg,
            })?;
            Ok(Box::new((1..=*count).map(move |n| {
                Ok(Row {
                    line: n,
                    device_id: Some(t.render(n)),
                    key: RowKey::Generate,
                    vars: BTreeMap::new(),
                })
            })))
        }
    }
}

/// The input root: `given`, or the input's own directory.
fn input_root(given: Option<&Path>, own: &Path) -> Result<InputRoot, InputError> {
    let root = given.unwrap_or(own);
    InputRoot::open(root).map_err(|e| InputError {
        path: root.display().to_string(),
        msg: format!("{e} (--input-root)"),
    })
}

fn csv_rows(
    path: &Path,
    root: Option<&Path>,
) -> Result<Box<dyn Iterator<Item = Result<Row, RowError>> + Send>, InputError> {
    let file = open_user_file(path, Pipes::Refused).map_err(|e| InputError {
        path: path.display().to_string(),
        msg: e.to_string(),
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let root = input_root(root, base)?;
    csv_rows_from(file, path, Some(root))
}

/// The rows of CSV text read from `file`; `path` names it in errors, and relative key paths
/// are read from its directory, confined to `root` (without a root, no key file is read). What [`rows`] does for a CSV (and the CSV fuzz target).
pub(crate) fn csv_rows_from<R: Read + Send + 'static>(
    file: R,
    path: &Path,
    root: Option<InputRoot>,
) -> Result<Box<dyn Iterator<Item = Result<Row, RowError>> + Send>, InputError> {
    let shown = path.display().to_string();
    let err = |msg: String| InputError {
        path: shown.clone(),
        msg,
    };
    let used = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    // CRLF is read as LF so line numbers are the file's (the csv reader counts CRLF lines
    // one too low).
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(RowBudget {
            inner: CrlfToLf::new(file),
            used: used.clone(),
        });
    let headers: Vec<String> = rdr
        .headers()
        .map_err(|e| {
            err(
                if used.load(std::sync::atomic::Ordering::Relaxed) > MAX_ROW {
                    format!(
                        "the header line is over the {} KiB row limit",
                        MAX_ROW / 1024
                    )
                } else {
                    format!("cannot read the header line: {e}")
                },
            )
        })?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let col = |name: &str| headers.iter().position(|h| h == name);
    let id_col = col("device_id").ok_or_else(|| {
        err(format!(
            "the header has no device_id column (found: {})",
            headers.join(",")
        ))
    })?;
    let (key_col, is_csr) = match (col("csr"), col("pubkey")) {
        (Some(c), None) => (c, true),
        (None, Some(c)) => (c, false),
        (Some(_), Some(_)) => {
            return Err(err(
                "the header has both csr and pubkey columns; use one".into()
            ))
        }
        (None, None) => return Err(err("the header needs a csr or a pubkey column".into())),
    };
    let what = if is_csr { "csr" } else { "pubkey" };
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let width = headers.len();
    let mut records = rdr.into_records();
    let mut stopped = false;
    // Each row gets a fresh budget; a row over it ends the input with a fatal error.
    let bounded = std::iter::from_fn(move || {
        if stopped {
            return None;
        }
        used.store(0, std::sync::atomic::Ordering::Relaxed);
        let start = records.reader().position().line();
        let rec = records.next()?;
        Some(rec.map_err(|e| {
            if used.load(std::sync::atomic::Ordering::Relaxed) > MAX_ROW {
                stopped = true;
                RowError {
                    line: start,
                    device_id: None,
                    reason: format!(
                        "the row starting here is over the {} KiB row limit (a CSV field may have at most {} KiB); the input cannot be read past it",
                        MAX_ROW / 1024,
                        MAX_FIELD / 1024
                    ),
                    fatal: true,
                }
            } else {
                RowError {
                    line: e.position().map(|p| p.line()).unwrap_or(start),
                    device_id: None,
                    reason: format!("malformed CSV row: {e}"),
                    fatal: false,
                }
            }
        }))
    });
    let iter = bounded.map(move |rec| {
        let rec = rec?;
        let line = rec.position().map(|p| p.line()).unwrap_or(0);
        let fail = |device_id: Option<String>, reason: String| RowError {
            line,
            device_id,
            reason,
            fatal: false,
        };
        if rec.len() != width {
            return Err(fail(
                None,
                format!("row has {} fields, the header has {width}", rec.len()),
            ));
        }
        if let Some((h, v)) = headers
            .iter()
            .zip(rec.iter())
            .find(|(_, v)| v.len() > MAX_FIELD)
        {
            let id = rec
                .get(id_col)
                .filter(|id| id.len() <= 64)
                .map(str::to_string);
            return Err(fail(
                id,
                format!(
                    "field {} is {} bytes, over the {} KiB limit for a CSV field",
                    crate::text::escape(h),
                    v.len(),
                    MAX_FIELD / 1024
                ),
            ));
        }
        let id = rec.get(id_col).unwrap_or("").trim().to_string();
        if id.is_empty() {
            return Err(fail(None, "device_id is empty".into()));
        }
        let value = rec.get(key_col).unwrap_or("").trim();
        if value.is_empty() {
            return Err(fail(
                Some(id),
                format!("{} is empty", if is_csr { "csr" } else { "pubkey" }),
            ));
        }
        let bytes = if value.starts_with("-----BEGIN") {
            value.as_bytes().to_vec()
        } else {
            let Some(root) = &root else {
                return Err(fail(
                    Some(id),
                    format!("{what} names a file, and no input root is open to read it from"),
                ));
            };
            root.relative(&base, value)
                .and_then(|rel| root.read(&rel, crate::csr::MAX_INPUT))
                .map_err(|e| fail(Some(id.clone()), format!("{what} file {value:?}: {e}")))?
        };
        let mut vars = BTreeMap::new();
        for (h, v) in headers.iter().zip(rec.iter()) {
            vars.insert(format!("csv.{h}"), v.to_string());
        }
        Ok(Row {
            line,
            device_id: Some(id),
            key: if is_csr {
                RowKey::Csr(bytes)
            } else {
                RowKey::PublicKey(bytes)
            },
            vars,
        })
    });
    Ok(Box::new(iter))
}

fn dir_rows(
    path: &Path,
    root: Option<&Path>,
) -> Result<Box<dyn Iterator<Item = Result<Row, RowError>> + Send>, InputError> {
    let err = |msg: String| InputError {
        path: path.display().to_string(),
        msg,
    };
    let root = input_root(root, path)?;
    let rel_dir = absolute(path)
        .strip_prefix(root.path())
        .map(Path::to_path_buf)
        .map_err(|_| {
            err(format!(
                "the directory is not inside --input-root {}",
                root.path().display()
            ))
        })?;
    // Every entry with a CSR extension but a directory is a row: a link is followed only
    // inside the input root, and anything but a regular file is a rejected row (a FIFO or
    // device is never opened for reading).
    let mut files: Vec<std::ffi::OsString> = std::fs::read_dir(path)
        .map_err(|e| err(format!("cannot list: {e}")))?
        .filter_map(|e| e.ok())
        .filter(|e| !e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|x| x == "csr" || x == "pem" || x == "der")
        })
        .collect();
    if files.is_empty() {
        return Err(err("no *.csr, *.pem or *.der files".into()));
    }
    // Sorted, so a re-run sees the same order and line numbers.
    files.sort();
    Ok(Box::new(files.into_iter().enumerate().map(
        move |(i, name)| {
            let line = i as u64 + 1;
            let shown = name.to_string_lossy().into_owned();
            let bytes = root
                .read(&rel_dir.join(&name), crate::csr::MAX_INPUT)
                .map_err(|e| RowError {
                    line,
                    device_id: None,
                    reason: format!("{shown}: {e}"),
                    fatal: false,
                })?;
            let mut vars = BTreeMap::new();
            vars.insert("csv.file".to_string(), shown);
            Ok(Row {
                line,
                device_id: None,
                key: RowKey::Csr(bytes),
                vars,
            })
        },
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders a template for sequence `n` (`SN{seq:06}`), as `--count` does.
    fn render_id(template: &str, n: u64) -> Result<String, String> {
        Ok(IdTemplate::parse(template)?.render(n))
    }

    #[test]
    fn id_templates() {
        assert_eq!(render_id("SN{seq:06}", 42).unwrap(), "SN000042");
        assert_eq!(render_id("dev-{seq}-x", 7).unwrap(), "dev-7-x");
        assert!(render_id("SN", 1).is_err());
        assert!(render_id("SN{seq:x}", 1).is_err());
        assert_eq!(render_id("SN{seq:020}", 7).unwrap().len(), 22);
        assert_eq!(
            render_id("SN{seq:020}", u64::MAX).unwrap(),
            "SN18446744073709551615"
        );
    }

    #[test]
    fn item16_wide_or_odd_templates_refused_at_parse() {
        for (bad, why) in [
            ("SN{seq:068345}", "over 20"),
            ("SN{seq:021}", "over 20"),
            ("SN{seq:099999999999999999999999}", "must be a number"),
            ("SN{seq:0}", "must be a number"),
            ("SN{seq}{seq}", "braces outside"),
            ("{x}SN{seq}", "braces outside"),
            ("SN{seq", "unclosed"),
        ] {
            let e = IdTemplate::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn item15_long_field_rejects_its_row_and_an_endless_row_stops_the_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        let big = "x".repeat(MAX_FIELD + 1);
        let huge = "y".repeat(3 * MAX_ROW as usize);
        std::fs::write(
            &p,
            format!("device_id,pubkey,site\nA,-----BEGIN PUBLIC KEY-----x,{big}\nB,-----BEGIN PUBLIC KEY-----y,b\nC,\"{huge}\",c\nD,-----BEGIN PUBLIC KEY-----z,d\n"),
        )
        .unwrap();
        let rows: Vec<_> = rows(&Source::Csv {
            path: p,
            input_root: None,
        })
        .unwrap()
        .collect();
        let a = rows[0].as_ref().unwrap_err();
        assert!(
            !a.fatal && a.device_id.as_deref() == Some("A") && a.reason.contains("field site"),
            "{a:?}"
        );
        assert!(rows[1]
            .as_ref()
            .is_ok_and(|r| r.device_id.as_deref() == Some("B")));
        let c = rows[2].as_ref().unwrap_err();
        assert!(
            c.fatal && c.line == 4 && c.reason.contains("1024 KiB row limit"),
            "{c:?}"
        );
        assert_eq!(rows.len(), 3, "nothing is read past the endless row");
    }

    /// Issue 10 item 14: the csv reader counts CRLF lines one too low; rows are reported at
    /// their physical line whatever the line ends (a quoted PEM spanning lines included).
    #[test]
    fn item14_crlf_csv_reports_the_right_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(
            &p,
            "device_id,pubkey,site\r\nA,\"-----BEGIN PUBLIC KEY-----\r\nx\",b1\r\nB,only-two\r\nD,-----BEGIN PUBLIC KEY-----y,b4\r\n",
        )
        .unwrap();
        let rows: Vec<_> = rows(&Source::Csv {
            path: p,
            input_root: None,
        })
        .unwrap()
        .collect();
        assert_eq!(rows[0].as_ref().unwrap().line, 2);
        assert_eq!(rows[1].as_ref().unwrap_err().line, 4);
        let d = rows[2].as_ref().unwrap();
        assert_eq!((d.line, d.vars["csv.site"].as_str()), (5, "b4"));
    }

    #[test]
    fn csv_malformed_row_reports_its_line_and_the_rest_continue() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("in.csv");
        std::fs::write(&p, "device_id,pubkey,site\nA,-----BEGIN PUBLIC KEY-----x,b1\nB,only-two\nD,-----BEGIN PUBLIC KEY-----y,b4\n").unwrap();
        let rows: Vec<_> = rows(&Source::Csv {
            path: p,
            input_root: None,
        })
        .unwrap()
        .collect();
        assert!(rows[0].is_ok());
        let e = rows[1].as_ref().unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.reason.contains("2 fields"), "{}", e.reason);
        assert!(rows.iter().any(|r| r
            .as_ref()
            .is_ok_and(|r| r.device_id.as_deref() == Some("A") && r.vars["csv.site"] == "b1")));
    }
}
