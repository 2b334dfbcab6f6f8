//! Writing an export into its output directory through [`crate::output`]: every file is
//! staged as a unique temporary in its directory and fsynced, and only when all are staged are
//! they renamed into place, so a failure leaves no partial set behind. Existing files are
//! refused unless `force`; a symlink is refused even then (nothing is written through a link).
//! Subdirectories are created 0750, key files 0600, the rest 0640.

use super::{ExportError, ExportFile};
use crate::output::{Access, Durability, Existing, OutDir, WriteError};
use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

fn werr(e: WriteError) -> ExportError {
    ExportError::Write {
        path: e.path,
        msg: e.msg,
    }
}

/// Writes `files` into `out` (created if missing). Refuses names that leave `out`, duplicate
/// names, and existing files unless `force`. Files holding a private key get mode 0600.
pub fn write_files(out: &Path, files: &[ExportFile], force: bool) -> Result<(), ExportError> {
    // (directory relative to out, file name) of each file, checked before anything is made.
    let mut places = Vec::with_capacity(files.len());
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        let rel = Path::new(&f.name);
        let plain = !f.name.is_empty()
            && rel.components().all(|c| matches!(c, Component::Normal(_)))
            && rel.file_name().and_then(|n| n.to_str()).is_some();
        if !plain {
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
        let parent = rel.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        places.push((parent, name.to_string()));
    }
    // Directories, opened once each (subdirectories never through a symlink).
    let root = OutDir::create(out).map_err(werr)?;
    let mut dirs: BTreeMap<PathBuf, OutDir> = BTreeMap::new();
    for (parent, _) in &places {
        if parent.as_os_str().is_empty() || dirs.contains_key(parent) {
            continue;
        }
        let mut at: Option<OutDir> = None;
        for c in parent.components() {
            let name = c.as_os_str().to_str().unwrap_or_default();
            let next = at.as_ref().unwrap_or(&root).subdir(name).map_err(werr)?;
            at = Some(next);
        }
        if let Some(d) = at {
            dirs.insert(parent.clone(), d);
        }
    }
    let dir_of = |parent: &Path| dirs.get(parent).unwrap_or(&root);
    let existing = if force {
        Existing::Replace
    } else {
        Existing::Refuse
    };
    for (parent, name) in &places {
        let dir = dir_of(parent);
        let path = out.join(parent).join(name);
        match dir.probe(name).map_err(werr)? {
            None => {}
            Some(rustix::fs::FileType::RegularFile) if force => {}
            Some(rustix::fs::FileType::Symlink) => {
                return Err(ExportError::Write {
                    path,
                    msg: "it is a symbolic link; certfab never writes through or over a link in its output. Remove it, then export again".into(),
                })
            }
            Some(_) => {
                return Err(ExportError::Write {
                    path,
                    msg: "it already exists; choose a new --out directory, move it away, or pass --force to replace it".into(),
                })
            }
        }
    }
    let mut staged = Vec::with_capacity(files.len());
    for (f, (parent, name)) in files.iter().zip(&places) {
        let access = if holds_private_key(&f.bytes) {
            Access::Secret
        } else {
            Access::Shared
        };
        staged.push(
            dir_of(parent)
                .stage(name, &f.bytes, access, Durability::Now)
                .map_err(werr)?,
        );
    }
    for s in staged {
        s.commit(existing).map_err(werr)?;
    }
    root.sync_dir().map_err(werr)?;
    for d in dirs.values() {
        d.sync_dir().map_err(werr)?;
    }
    Ok(())
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
    use std::os::unix::fs::PermissionsExt;

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
    fn nested_names_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write_files(
            d.path(),
            &[file("a/b/c.json", "C"), file("a/d.json", "D")],
            false,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(d.path().join("a/b/c.json")).unwrap(),
            "C"
        );
        std::os::unix::fs::symlink(outside.path(), d.path().join("s")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("x"), d.path().join("x.json")).unwrap();
        for name in ["s/y.json", "x.json"] {
            let e = write_files(d.path(), &[file(name, "X")], true).unwrap_err();
            assert!(e.to_string().contains("symbolic link"), "{e}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
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
        assert_eq!(mode("c.pem"), 0o640);
    }
}
