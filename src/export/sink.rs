//! Where an exporter's files go while it renders: collected in memory ([`Out::memory`], for
//! [`super::render`] and the library), only named ([`Out::names`], the preflight), or
//! streamed into the output directory ([`Out::disk`]): each file written in pieces to a
//! unique temporary through [`crate::output`] as its rows are rendered, fsynced when it is
//! complete, and every one renamed into place only after all of them (and the summary) are
//! written, so a failure leaves no partial set. Only the files' names, sizes, hashes and row
//! counts are held, never their content.

use super::{ExportError, ExportFile, SummaryFile};
use crate::output::{Access, Existing, Finished, OutDir, WriteError};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

fn werr(e: WriteError) -> ExportError {
    ExportError::Write {
        path: e.path,
        msg: e.msg,
    }
}

/// A file opened with [`Out::open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId(usize);

enum Mode {
    Memory,
    Names,
    Disk(Box<Disk>),
}

struct Disk {
    out: PathBuf,
    root: OutDir,
    dirs: BTreeMap<PathBuf, OutDir>,
    force: bool,
    /// Temporaries written in full: (directory, temporary), renamed at the end.
    finished: Vec<(PathBuf, Finished)>,
}

struct Entry {
    name: String,
    consumer: usize,
    devices: usize,
    bytes: usize,
    sha256: [u8; 32],
    group: u32,
    data: Vec<u8>,
}

struct Open {
    entry: usize,
    /// Made owner-only ([`Access::Secret`]).
    secret: bool,
    hash: sha2::Sha256,
    len: usize,
    data: Vec<u8>,
    file: Option<(PathBuf, crate::output::StagedFile)>,
}

/// The files of one export, in the making.
pub struct Out {
    mode: Mode,
    entries: Vec<Entry>,
    open: Vec<Option<Open>>,
    names: BTreeSet<String>,
    consumers: Vec<String>,
    group: u32,
}

impl Out {
    fn with(mode: Mode) -> Self {
        Self {
            mode,
            entries: Vec::new(),
            open: Vec::new(),
            names: BTreeSet::new(),
            consumers: Vec::new(),
            group: 0,
        }
    }

    /// Collects every file's content in memory.
    pub fn memory() -> Self {
        Self::with(Mode::Memory)
    }

    /// Records only the files' names (content is dropped as it is rendered).
    pub fn names() -> Self {
        Self::with(Mode::Names)
    }

    /// Streams the files into `out` (created if missing): existing files are refused unless
    /// `force`, symlinks always.
    pub fn disk(out: &Path, force: bool) -> Result<Self, ExportError> {
        let root = OutDir::create(out).map_err(werr)?;
        Ok(Self::with(Mode::Disk(Box::new(Disk {
            out: out.to_path_buf(),
            root,
            dirs: BTreeMap::new(),
            force,
            finished: Vec::new(),
        }))))
    }

    /// Files opened from now on are listed after every file of a lower group, whatever the
    /// order they are written in (a format that writes two kinds of row files in one pass
    /// lists them kind by kind, as it always has).
    pub fn group(&mut self, group: u32) {
        self.group = group;
    }

    /// Adds a file rendered whole (templates, requests, CA material).
    pub fn file(&mut self, f: ExportFile) -> Result<(), ExportError> {
        let access = if holds_private_key(&f.bytes) {
            Access::Secret
        } else {
            Access::Shared
        };
        let id = self.open_with(&f.name, f.consumer, access)?;
        self.write(id, &f.bytes)?;
        self.close(id, f.devices)
    }

    /// Opens a file that is written in pieces ([`Out::write`]) and then closed with its row
    /// count ([`Out::close`]). Such files hold certificates and records, never a private key.
    pub fn open(&mut self, name: &str, consumer: String) -> Result<FileId, ExportError> {
        self.open_with(name, consumer, Access::Shared)
    }

    fn open_with(
        &mut self,
        name: &str,
        consumer: String,
        access: Access,
    ) -> Result<FileId, ExportError> {
        let (parent, file_name) = plain(name)?;
        if !self.names.insert(name.to_string()) {
            return Err(ExportError::Usage(format!(
                "export file name {name} is produced twice"
            )));
        }
        let file = match &mut self.mode {
            Mode::Disk(d) => Some((parent.clone(), d.stage(&parent, &file_name, access)?)),
            _ => None,
        };
        let consumer = match self.consumers.iter().position(|c| *c == consumer) {
            Some(i) => i,
            None => {
                self.consumers.push(consumer);
                self.consumers.len() - 1
            }
        };
        self.entries.push(Entry {
            name: name.to_string(),
            consumer,
            devices: 0,
            bytes: 0,
            sha256: [0; 32],
            group: self.group,
            data: Vec::new(),
        });
        self.open.push(Some(Open {
            entry: self.entries.len() - 1,
            secret: access == Access::Secret,
            hash: sha2::Sha256::new(),
            len: 0,
            data: Vec::new(),
            file,
        }));
        Ok(FileId(self.open.len() - 1))
    }

    /// Appends to an open file.
    pub fn write(&mut self, id: FileId, bytes: &[u8]) -> Result<(), ExportError> {
        let memory = matches!(self.mode, Mode::Memory);
        let names = matches!(self.mode, Mode::Names);
        let o = self
            .open
            .get_mut(id.0)
            .and_then(Option::as_mut)
            .ok_or_else(|| ExportError::Usage("export file written after it was closed".into()))?;
        if !o.secret && holds_private_key(bytes) {
            // Streamed files are made 0640 before their content is known: a key in one would
            // be readable by the group. No exporter does this; refuse rather than write it.
            return Err(ExportError::Usage(format!(
                "export file {} would hold a private key but was not opened owner-only; nothing was written",
                self.entries[o.entry].name
            )));
        }
        if names {
            return Ok(());
        }
        o.hash.update(bytes);
        o.len += bytes.len();
        if memory {
            o.data.extend_from_slice(bytes);
        }
        if let Some((_, f)) = &mut o.file {
            f.write_all(bytes).map_err(werr)?;
        }
        Ok(())
    }

    /// Ends an open file that holds `devices` rows.
    pub fn close(&mut self, id: FileId, devices: usize) -> Result<(), ExportError> {
        let o = self
            .open
            .get_mut(id.0)
            .and_then(Option::take)
            .ok_or_else(|| ExportError::Usage("export file closed twice".into()))?;
        let e = &mut self.entries[o.entry];
        e.devices = devices;
        e.bytes = o.len;
        e.sha256 = o.hash.finalize().into();
        e.data = o.data;
        if let (Some((dir, f)), Mode::Disk(d)) = (o.file, &mut self.mode) {
            let done = f.finish().map_err(werr)?;
            d.finished.push((dir, done));
        }
        Ok(())
    }

    fn order(&self) -> Vec<usize> {
        let mut idx: Vec<usize> = (0..self.entries.len()).collect();
        idx.sort_by_key(|&i| self.entries[i].group);
        idx
    }

    /// The files' names, in listing order.
    pub fn file_names(&self) -> Vec<String> {
        self.order()
            .into_iter()
            .map(|i| self.entries[i].name.clone())
            .collect()
    }

    /// The files in listing order, with their content ([`Out::memory`]).
    pub fn into_files(mut self) -> Vec<ExportFile> {
        let order = self.order();
        let mut files = Vec::with_capacity(order.len());
        for i in order {
            let e = &mut self.entries[i];
            files.push(ExportFile {
                name: e.name.clone(),
                bytes: std::mem::take(&mut e.data),
                devices: e.devices,
                consumer: self.consumers[e.consumer].clone(),
            });
        }
        files
    }

    /// The summary lines of the files, in listing order.
    pub fn summary_files(&self) -> Vec<SummaryFile> {
        self.order()
            .into_iter()
            .map(|i| {
                let e = &self.entries[i];
                SummaryFile {
                    name: e.name.clone(),
                    devices: e.devices,
                    bytes: e.bytes,
                    sha256: hex::encode(e.sha256),
                    consumer: self.consumers[e.consumer].clone(),
                }
            })
            .collect()
    }

    /// Renames every staged file into place ([`Out::disk`]), then syncs the directories.
    /// Every file must be closed.
    pub fn commit(mut self) -> Result<(), ExportError> {
        if self.open.iter().any(Option::is_some) {
            return Err(ExportError::Usage(
                "an export file was left open; nothing was written".into(),
            ));
        }
        let Mode::Disk(d) = &mut self.mode else {
            return Ok(());
        };
        let existing = if d.force {
            Existing::Replace
        } else {
            Existing::Refuse
        };
        while let Some((dir, f)) = d.finished.pop() {
            let at = if dir.as_os_str().is_empty() {
                &d.root
            } else {
                d.dirs.get(&dir).unwrap_or(&d.root)
            };
            at.commit_finished(f, existing).map_err(werr)?;
        }
        d.root.sync_dir().map_err(werr)?;
        for dir in d.dirs.values() {
            dir.sync_dir().map_err(werr)?;
        }
        // Committed: nothing for Drop to remove.
        self.mode = Mode::Memory;
        Ok(())
    }
}

impl Drop for Out {
    /// An export that did not commit leaves nothing behind: its temporaries are removed, and
    /// the output directory too if this run made it and it is still empty.
    fn drop(&mut self) {
        self.open.clear();
        if let Mode::Disk(d) = &mut self.mode {
            while let Some((dir, f)) = d.finished.pop() {
                let at = d.dirs.get(&dir).unwrap_or(&d.root);
                at.discard_finished(f);
            }
            d.dirs.clear();
            d.root.remove_if_fresh_and_empty();
        }
    }
}

impl Disk {
    /// The directory `parent` (relative to the output), opened once, never through a symlink.
    fn dir(&mut self, parent: &Path) -> Result<&OutDir, ExportError> {
        if parent.as_os_str().is_empty() {
            return Ok(&self.root);
        }
        if !self.dirs.contains_key(parent) {
            let mut at: Option<OutDir> = None;
            for c in parent.components() {
                let name = c.as_os_str().to_str().unwrap_or_default();
                let next = at
                    .as_ref()
                    .unwrap_or(&self.root)
                    .subdir(name)
                    .map_err(werr)?;
                at = Some(next);
            }
            if let Some(d) = at {
                self.dirs.insert(parent.to_path_buf(), d);
            }
        }
        Ok(self.dirs.get(parent).unwrap_or(&self.root))
    }

    /// Checks the final name is free (or a regular file with `force`), then starts its
    /// temporary.
    fn stage(
        &mut self,
        parent: &Path,
        name: &str,
        access: Access,
    ) -> Result<crate::output::StagedFile, ExportError> {
        let path = self.out.join(parent).join(name);
        let force = self.force;
        let dir = self.dir(parent)?;
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
        dir.stage_file(name, access).map_err(werr)
    }
}

/// The directory and file name of a plain relative export file name.
fn plain(name: &str) -> Result<(PathBuf, String), ExportError> {
    let rel = Path::new(name);
    let file_name = rel.file_name().and_then(|n| n.to_str());
    match file_name {
        Some(f)
            if !name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_))) =>
        {
            Ok((
                rel.parent().map(Path::to_path_buf).unwrap_or_default(),
                f.to_string(),
            ))
        }
        _ => Err(ExportError::Usage(format!(
            "export file name {name:?} is not a plain relative path"
        ))),
    }
}

/// Whether `bytes` hold a PEM private key (plain or encrypted), whichever exporter made them.
pub fn holds_private_key(bytes: &[u8]) -> bool {
    bytes
        .windows(b"PRIVATE KEY-----".len())
        .any(|w| w == b"PRIVATE KEY-----")
}

/// Row files of at most `limit` rows each (all in one when `None`), opened as rows come.
pub struct Rows {
    limit: Option<usize>,
    shard: usize,
    open: Option<(FileId, usize)>,
}

impl Rows {
    /// Shards of at most `limit` rows.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit: limit.filter(|&l| l > 0),
            shard: 0,
            open: None,
        }
    }

    /// The file the next row goes into: the current shard, or a new one made by `open`
    /// (given its 0-based index) when the current one is full or there is none yet.
    pub fn next(
        &mut self,
        out: &mut Out,
        open: impl FnOnce(&mut Out, usize) -> Result<FileId, ExportError>,
    ) -> Result<FileId, ExportError> {
        if let (Some((id, n)), Some(l)) = (self.open, self.limit) {
            if n >= l {
                out.close(id, n)?;
                self.open = None;
            }
        }
        let (id, n) = match self.open {
            Some(o) => o,
            None => {
                let id = open(out, self.shard)?;
                self.shard += 1;
                (id, 0)
            }
        };
        self.open = Some((id, n + 1));
        Ok(id)
    }

    /// The current shard if it is full: the next row goes into a new one, and this one is
    /// closed by [`Rows::next`] (a format that ends a file with a footer writes it first).
    pub fn full(&self) -> Option<FileId> {
        match (self.open, self.limit) {
            (Some((id, n)), Some(l)) if n >= l => Some(id),
            _ => None,
        }
    }

    /// Closes the last shard.
    pub fn finish(self, out: &mut Out) -> Result<(), ExportError> {
        match self.open {
            Some((id, n)) => out.close(id, n),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A streamed export that fails before it commits leaves nothing: no temporaries, no
    /// files, and not the output directory it created.
    #[test]
    fn an_uncommitted_export_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("new-out");
        {
            let mut o = Out::disk(&out, false).unwrap();
            let id = o.open("rows-0001.jsonl", "c".into()).unwrap();
            o.write(id, b"{}\n").unwrap();
            o.close(id, 1).unwrap();
            let id = o.open("rows-0002.jsonl", "c".into()).unwrap();
            o.write(id, b"{}\n").unwrap();
            // Dropped here with one file finished and one still open.
        }
        assert!(
            !out.exists(),
            "{:?}",
            std::fs::read_dir(&out).map(|r| r.count())
        );

        // Committed, the files are in place with their content, and the summary lines
        // describe them.
        let mut o = Out::disk(&out, false).unwrap();
        let id = o.open("rows-0001.jsonl", "c".into()).unwrap();
        o.write(id, b"{\"a\":1}\n").unwrap();
        o.close(id, 1).unwrap();
        let lines = o.summary_files();
        o.commit().unwrap();
        assert_eq!(
            std::fs::read(out.join("rows-0001.jsonl")).unwrap(),
            b"{\"a\":1}\n"
        );
        assert_eq!(lines[0].bytes, 8);

        // A key is never streamed into a file made group-readable.
        let mut o = Out::memory();
        let id = o.open("x.jsonl", "c".into()).unwrap();
        let e = o.write(id, b"-----BEGIN PRIVATE KEY-----\n").unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        assert_eq!(
            lines[0].sha256,
            hex::encode(crate::crypto::sha256(b"{\"a\":1}\n"))
        );
    }
}
