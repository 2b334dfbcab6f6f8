//! Writing rendered export files into their output directory through [`crate::output`] (via
//! [`super::sink::Out`]): every file is staged as a unique temporary in its directory and
//! fsynced, and only when all are staged are they renamed into place, so a failure leaves no
//! partial set behind. Existing files are
//! refused unless `force`; a symlink is refused even then (nothing is written through a link).
//! Subdirectories are created 0750, key files 0600, the rest 0640.

use super::{ExportError, ExportFile, Out};
use std::path::Path;

/// Writes `files` into `out` (created if missing) through the same sink a streamed export
/// uses ([`Out::disk`]). Refuses names that leave `out`, duplicate names, and existing files
/// unless `force`. Files holding a private key get mode 0600.
pub(super) fn write_files(
    out: &Path,
    files: &[ExportFile],
    force: bool,
) -> Result<(), ExportError> {
    let mut sink = Out::disk(out, force)?;
    for f in files {
        sink.file(f.clone())?;
    }
    sink.commit()
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
