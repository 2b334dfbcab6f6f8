//! Writing an export into its output directory: every file is staged as a temporary file in
//! the same directory and fsynced, and only when all are staged are they renamed into place,
//! so a failure leaves no partial set behind. Existing files are refused unless `force`.

use super::{ExportError, ExportFile};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Paths written.
#[derive(Debug, Clone)]
pub struct Written {
    /// Absolute or as-given paths of the files, in order.
    pub paths: Vec<PathBuf>,
}

/// Writes `files` into `out` (created if missing). Refuses names that leave `out`, duplicate
/// names, and existing files unless `force`. Files holding a private key get mode 0600.
pub fn write_files(out: &Path, files: &[ExportFile], force: bool) -> Result<Written, ExportError> {
    let werr = |path: &Path, msg: String| ExportError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let mut targets = Vec::with_capacity(files.len());
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let rel = Path::new(&f.name);
        if f.name.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ExportError::Usage(format!(
                "export file name {:?} is not a plain relative path",
                f.name
            )));
        }
        if !seen.insert(f.name.clone()) {
            return Err(ExportError::Usage(format!(
                "export file name {} is produced twice",
                f.name
            )));
        }
        let path = out.join(rel);
        if !force && path.exists() {
            return Err(werr(
                &path,
                "it already exists; choose a new --out directory, move it away, or pass --force to replace it".into(),
            ));
        }
        targets.push(path);
    }
    let mut staged = Vec::with_capacity(files.len());
    for (f, path) in files.iter().zip(&targets) {
        let dir = path.parent().unwrap_or(out);
        std::fs::create_dir_all(dir).map_err(|e| werr(dir, e.to_string()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".certfab-export-")
            .tempfile_in(dir)
            .map_err(|e| werr(dir, e.to_string()))?;
        let mode = if holds_private_key(&f.bytes) {
            0o600
        } else {
            0o644
        };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| werr(path, e.to_string()))?;
        tmp.write_all(&f.bytes)
            .map_err(|e| werr(path, e.to_string()))?;
        tmp.as_file()
            .sync_all()
            .map_err(|e| werr(path, e.to_string()))?;
        staged.push(tmp);
    }
    for (tmp, path) in staged.into_iter().zip(&targets) {
        if force {
            tmp.persist(path)
                .map_err(|e| werr(path, e.error.to_string()))?;
        } else {
            tmp.persist_noclobber(path)
                .map_err(|e| werr(path, e.error.to_string()))?;
        }
    }
    let mut dirs: Vec<&Path> = targets.iter().filter_map(|p| p.parent()).collect();
    dirs.dedup();
    for d in dirs {
        if let Ok(f) = std::fs::File::open(d) {
            let _ = f.sync_all();
        }
    }
    Ok(Written { paths: targets })
}

/// Whether `bytes` hold a PEM private key (plain or encrypted), whichever exporter made them.
fn holds_private_key(bytes: &[u8]) -> bool {
    bytes
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, body: &str) -> ExportFile {
        ExportFile {
            name: name.into(),
            bytes: body.as_bytes().to_vec(),
            devices: 0,
            consumer: "test".into(),
        }
    }

    #[test]
    fn refuses_existing_unless_forced_and_leaves_nothing_partial() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.json"), "old").unwrap();
        let files = [file("a.json", "A"), file("b.json", "B")];
        assert!(write_files(d.path(), &files, false).is_err());
        assert!(
            !d.path().join("a.json").exists(),
            "a.json written before the refusal"
        );
        assert_eq!(
            std::fs::read_to_string(d.path().join("b.json")).unwrap(),
            "old"
        );
        write_files(d.path(), &files, true).unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("b.json")).unwrap(),
            "B"
        );
        let leftovers: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".certfab"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn refuses_names_outside_out_and_duplicates() {
        let d = tempfile::tempdir().unwrap();
        for bad in ["../x", "/etc/x", "", "a/../../x"] {
            assert!(
                write_files(d.path(), &[file(bad, "x")], false).is_err(),
                "{bad}"
            );
        }
        assert!(write_files(d.path(), &[file("a", "1"), file("a", "2")], false).is_err());
    }

    #[test]
    fn key_files_are_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let files = [
            file("k.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n..."),
            file("c.pem", "-----BEGIN CERTIFICATE-----\n..."),
        ];
        write_files(d.path(), &files, false).unwrap();
        let mode = |n: &str| {
            std::fs::metadata(d.path().join(n))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode("k.pem"), 0o600);
        assert_eq!(mode("c.pem"), 0o644);
    }
}
