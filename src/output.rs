//! Writing results: atomically (temp file, fsync, rename), never over an existing file, so a
//! crash or a refusal leaves either the old state or the complete new file.

use crate::error::Error;
use std::io::Write;
use std::path::Path;

/// Writes `data` to `path`, which must not exist yet.
pub fn write_new(path: &Path, data: &[u8]) -> Result<(), Error> {
    let err = |msg: String| Error::Output {
        path: path.display().to_string(),
        msg,
    };
    if path.exists() {
        return Err(err("it already exists; certfab never overwrites an issued file. Choose a new --out or move it away".into()));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| err(e.to_string()))?;
    tmp.write_all(data).map_err(|e| err(e.to_string()))?;
    tmp.as_file().sync_all().map_err(|e| err(e.to_string()))?;
    tmp.persist_noclobber(path)
        .map_err(|e| err(e.error.to_string()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Refuses early when any of `paths` exists, so nothing is signed for output that cannot land.
pub fn check_free(paths: &[&Path]) -> Result<(), Error> {
    for p in paths {
        if p.exists() {
            return Err(Error::Output {
                path: p.display().to_string(),
                msg: "it already exists; certfab never overwrites an issued file. Choose a new --out or move it away".into(),
            });
        }
    }
    Ok(())
}
