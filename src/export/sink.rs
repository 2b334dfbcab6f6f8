//! Where an exporter's files go while it renders: collected in memory ([`Out::memory`], for
//! [`super::render`] and the library), only named ([`Out::names`], the preflight), or
//! streamed into the output directory ([`Out::disk`]): each file written in pieces to a
//! unique temporary through [`crate::output`] as its rows are rendered, fsynced when it is
//! complete, and every one renamed into place only after all of them (and the summary) are
//! written, so a failure leaves no partial set. Never the files' content is held, and not
//! what is kept of each file either (its name, size, hash, row count and temporary): that
//! goes to scratch records ([`super::spool`]) as the file is closed, so memory does not grow
//! with the number of files (`azure-dps` writes one per ten devices). What stays in memory
//! per file is a 128-bit hash of its name, to refuse a name produced twice.

use super::spool::{Dec, Enc, Reader, Spool};
use super::{ExportError, ExportFile, SummaryFile};
use crate::output::{Access, Existing, Finished, OutDir, WriteError};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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
    /// Names only; with a directory, the first file (in listing order) already in it is noted.
    Names(Option<PathBuf>),
    Disk(Box<Disk>),
    /// Committed: nothing left to remove.
    Done,
}

struct Disk {
    out: PathBuf,
    root: OutDir,
    dirs: BTreeMap<PathBuf, OutDir>,
    force: bool,
    /// Temporaries written in full, in the order they finished: (directory, temporary,
    /// name), renamed at the end, last first.
    finished: Option<Spool>,
    /// How many of them (from the last) are renamed already.
    committed: usize,
}

struct Open {
    name: String,
    consumer: Consumer,
    group: u32,
    /// Made owner-only ([`Access::Secret`]).
    secret: bool,
    hash: sha2::Sha256,
    len: usize,
    data: Vec<u8>,
    file: Option<(PathBuf, crate::output::StagedFile)>,
}

/// A file's consumer text: one of the first few distinct ones (held once), or the text
/// itself (formats whose every file has its own, like aws-bulk's S3 keys).
enum Consumer {
    Held(u64),
    Own(String),
}

/// Distinct consumer texts held in memory; more are written out with each file's record.
const CONSUMERS_HELD: usize = 64;
/// Marks a record whose consumer text follows it.
const OWN_CONSUMER: u64 = u64::MAX;

/// The files of one export, in the making.
pub struct Out {
    mode: Mode,
    /// Files opened and not closed yet, by their place in the opening order.
    open: BTreeMap<usize, Open>,
    opened: usize,
    /// A 128-bit hash (SHA-256, cut) of each name: two different names of an export that
    /// share one do not occur in practice (about 2^-64 even at 2^32 files).
    names: HashSet<u128>,
    consumers: Vec<String>,
    group: u32,
    groups: BTreeSet<u32>,
    /// Each closed file's summary record, in opening order ([`Out::listing`]).
    listing: Option<Spool>,
    /// Records of files closed before a file opened earlier, until that one closes too.
    pending: BTreeMap<usize, Vec<u8>>,
    /// Content by opening order ([`Out::memory`]).
    data: BTreeMap<usize, Vec<u8>>,
    /// A name or consumer text holds a private-key marker (the summary is made owner-only).
    marked: bool,
    /// ([`Mode::Names`] with a directory) the first file already there: (group, order, path).
    existing: Option<(u32, usize, PathBuf)>,
}

impl Out {
    fn with(mode: Mode, listing: Option<Spool>) -> Self {
        Self {
            mode,
            open: BTreeMap::new(),
            opened: 0,
            names: HashSet::new(),
            consumers: Vec::new(),
            group: 0,
            groups: BTreeSet::new(),
            listing,
            pending: BTreeMap::new(),
            data: BTreeMap::new(),
            marked: false,
            existing: None,
        }
    }

    /// Collects every file's content in memory.
    pub fn memory() -> Self {
        Self::with(Mode::Memory, Some(Spool::memory()))
    }

    /// Checks only the files' names (content is dropped as it is rendered).
    pub fn names() -> Self {
        Self::with(Mode::Names(None), None)
    }

    /// [`Out::names`], noting the first file that already exists in `out`
    /// ([`Out::first_existing`]).
    pub fn names_in(out: &Path) -> Self {
        Self::with(Mode::Names(Some(out.to_path_buf())), None)
    }

    /// ([`Out::names_in`]) The first file, in listing order, that already exists.
    pub fn first_existing(&self) -> Option<&Path> {
        self.existing.as_ref().map(|(_, _, p)| p.as_path())
    }

    /// Streams the files into `out` (created if missing): existing files are refused unless
    /// `force`, symlinks always.
    pub fn disk(out: &Path, force: bool) -> Result<Self, ExportError> {
        let root = OutDir::create(out).map_err(werr)?;
        // The files and scratch records of an export that was killed.
        root.take_for_writing().map_err(werr)?;
        let listing = Spool::scratch(&root, "export-files.list").map_err(werr)?;
        let finished = Spool::scratch(&root, "export-renames.list").map_err(werr)?;
        Ok(Self::with(
            Mode::Disk(Box::new(Disk {
                out: out.to_path_buf(),
                root,
                dirs: BTreeMap::new(),
                force,
                finished: Some(finished),
                committed: 0,
            })),
            Some(listing),
        ))
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

    /// [`Out::open`] with the file's access (the summary is made owner-only if it names a
    /// private key marker, as any file holding one is).
    pub(super) fn open_with(
        &mut self,
        name: &str,
        consumer: String,
        access: Access,
    ) -> Result<FileId, ExportError> {
        let (parent, file_name) = plain(name)?;
        let h = crate::crypto::sha256(name.as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&h[..16]);
        if !self.names.insert(u128::from_le_bytes(key)) {
            return Err(ExportError::Usage(format!(
                "export file name {name} is produced twice"
            )));
        }
        let seq = self.opened;
        let file = match &mut self.mode {
            Mode::Disk(d) => Some((parent.clone(), d.stage(&parent, &file_name, access)?)),
            Mode::Names(Some(out)) => {
                let p = out.join(name);
                let first = match &self.existing {
                    Some((g, _, _)) => self.group < *g,
                    None => true,
                };
                if first && p.exists() {
                    self.existing = Some((self.group, seq, p));
                }
                None
            }
            _ => None,
        };
        self.marked |= holds_private_key(name.as_bytes()) || holds_private_key(consumer.as_bytes());
        let consumer = match self.consumers.iter().position(|c| *c == consumer) {
            Some(i) => Consumer::Held(i as u64),
            None if self.consumers.len() < CONSUMERS_HELD => {
                self.consumers.push(consumer);
                Consumer::Held(self.consumers.len() as u64 - 1)
            }
            None => Consumer::Own(consumer),
        };
        self.opened += 1;
        self.groups.insert(self.group);
        self.open.insert(
            seq,
            Open {
                name: name.to_string(),
                consumer,
                group: self.group,
                secret: access == Access::Secret,
                hash: sha2::Sha256::new(),
                len: 0,
                data: Vec::new(),
                file,
            },
        );
        Ok(FileId(seq))
    }

    /// Appends to an open file.
    pub fn write(&mut self, id: FileId, bytes: &[u8]) -> Result<(), ExportError> {
        let memory = matches!(self.mode, Mode::Memory);
        let names = matches!(self.mode, Mode::Names(_));
        let o = self
            .open
            .get_mut(&id.0)
            .ok_or_else(|| ExportError::Usage("export file written after it was closed".into()))?;
        if !o.secret && holds_private_key(bytes) {
            // Streamed files are made 0640 before their content is known: a key in one would
            // be readable by the group. No exporter does this; refuse rather than write it.
            return Err(ExportError::Usage(format!(
                "export file {} would hold a private key but was not opened owner-only; nothing was written",
                o.name
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
            .remove(&id.0)
            .ok_or_else(|| ExportError::Usage("export file closed twice".into()))?;
        let sha256: [u8; 32] = o.hash.finalize().into();
        let mut rec = Enc::default()
            .u64(id.0 as u64)
            .u64(u64::from(o.group))
            .u64(devices as u64)
            .u64(o.len as u64)
            .bytes(&sha256)
            .bytes(o.name.as_bytes());
        rec = match &o.consumer {
            Consumer::Held(i) => rec.u64(*i),
            Consumer::Own(text) => rec.u64(OWN_CONSUMER).bytes(text.as_bytes()),
        };
        if matches!(self.mode, Mode::Memory) {
            self.data.insert(id.0, o.data);
        }
        if let (Some((dir, f)), Mode::Disk(d)) = (o.file, &mut self.mode) {
            let (tmp, name) = f.finish().map_err(werr)?.into_parts();
            let r = Enc::default()
                .bytes(dir.to_string_lossy().as_bytes())
                .bytes(tmp.as_bytes())
                .bytes(name.as_bytes());
            if let Some(s) = &mut d.finished {
                s.push(&r.0).map_err(werr)?;
            }
        }
        self.pending.insert(id.0, rec.0);
        self.flush_pending()
    }

    /// Moves the records of closed files to the listing as soon as no file opened before
    /// them is still open, so the listing stays in opening order.
    fn flush_pending(&mut self) -> Result<(), ExportError> {
        let Some(listing) = &mut self.listing else {
            self.pending.clear();
            return Ok(());
        };
        let open_first = self.open.keys().next().copied().unwrap_or(usize::MAX);
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() > open_first {
                break;
            }
            listing.push(&entry.remove()).map_err(werr)?;
        }
        Ok(())
    }

    /// The summary lines of the files closed so far, read back in listing order (by group,
    /// then in the order they were opened). Every file must be closed.
    pub fn listing(&mut self) -> Result<Listing, ExportError> {
        if !self.open.is_empty() {
            return Err(ExportError::Usage(
                "an export file was left open; nothing was written".into(),
            ));
        }
        let path = match &self.mode {
            Mode::Disk(d) => d.out.clone(),
            _ => PathBuf::new(),
        };
        let reader = match &mut self.listing {
            Some(s) => Some(s.reader().map_err(werr)?),
            None => None,
        };
        Ok(Listing(Source::Spool {
            reader,
            groups: self.groups.iter().copied().collect(),
            consumers: Arc::new(self.consumers.clone()),
            path,
        }))
    }

    /// Whether any file name or consumer text holds a private-key marker.
    pub(super) fn marked(&self) -> bool {
        self.marked
    }

    /// The files in listing order, with their content ([`Out::memory`]).
    pub fn into_files(mut self) -> Result<Vec<ExportFile>, ExportError> {
        let listing = self.listing()?;
        let mut files = Vec::new();
        listing.each_record(|seq, f| {
            files.push(ExportFile {
                name: f.name,
                bytes: self.data.remove(&seq).unwrap_or_default(),
                devices: f.devices,
                consumer: f.consumer,
            });
            Ok(())
        })?;
        Ok(files)
    }

    /// Renames every staged file into place ([`Out::disk`]), then syncs the directories.
    /// Every file must be closed.
    pub fn commit(mut self) -> Result<(), ExportError> {
        if !self.open.is_empty() {
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
        let renames = match &mut d.finished {
            Some(s) => s.reader().map_err(werr)?,
            None => return Ok(()),
        };
        let (root, dirs, committed) = (&d.root, &d.dirs, &mut d.committed);
        let out = d.out.clone();
        let io = |e: std::io::Error| ExportError::Write {
            path: out.clone(),
            msg: format!("cannot read the export's list of temporaries back: {e}"),
        };
        renames.backward(io, |rec| {
            let (dir, f) = decode_finished(rec, &d.out)?;
            let at = if dir.as_os_str().is_empty() {
                root
            } else {
                dirs.get(&dir).unwrap_or(root)
            };
            at.commit_finished(f, existing).map_err(werr)?;
            *committed += 1;
            Ok::<_, ExportError>(())
        })?;
        // The scratch records go before the directories are synced (the reader returned by
        // `listing` keeps its file open).
        d.finished = None;
        self.listing = None;
        d.root.sync_dir().map_err(werr)?;
        for dir in d.dirs.values() {
            dir.sync_dir().map_err(werr)?;
        }
        // Committed: nothing for Drop to remove.
        self.mode = Mode::Done;
        Ok(())
    }
}

/// One record of [`Disk::finished`].
fn decode_finished(rec: &[u8], out: &Path) -> Result<(PathBuf, Finished), ExportError> {
    let bad = |e: std::io::Error| ExportError::Write {
        path: out.to_path_buf(),
        msg: format!("cannot read the export's list of temporaries back: {e}"),
    };
    let mut r = Dec(rec);
    let dir = PathBuf::from(r.string().map_err(bad)?);
    let tmp = r.string().map_err(bad)?;
    let name = r.string().map_err(bad)?;
    let f = Finished::from_parts(&out.join(&dir), tmp, name).map_err(werr)?;
    Ok((dir, f))
}

impl Drop for Out {
    /// An export that did not commit leaves nothing behind: its temporaries are removed, and
    /// the output directory too if this run made it and it is still empty.
    fn drop(&mut self) {
        self.open.clear();
        self.listing = None;
        if let Mode::Disk(d) = &mut self.mode {
            if let Some(s) = &mut d.finished {
                // Those not renamed yet: the first ones (renames go last first).
                let left = s.count() - d.committed;
                let mut seen = 0;
                if let Ok(r) = s.reader() {
                    let _ = r.forward(
                        |e| e,
                        |rec| {
                            if seen < left {
                                if let Ok((dir, f)) = decode_finished(rec, &d.out) {
                                    let at = d.dirs.get(&dir).unwrap_or(&d.root);
                                    at.discard_finished(f);
                                }
                            }
                            seen += 1;
                            Ok::<_, std::io::Error>(())
                        },
                    );
                }
            }
            d.finished = None;
            d.dirs.clear();
            d.root.remove_if_fresh_and_empty();
        }
    }
}

/// The summary lines of an export's files, in listing order, read back when they are
/// written out (the summary file, the printed list) rather than held.
#[derive(Clone)]
pub struct Listing(Source);

#[derive(Clone)]
enum Source {
    Files(Arc<Vec<SummaryFile>>),
    Spool {
        reader: Option<Reader>,
        groups: Vec<u32>,
        consumers: Arc<Vec<String>>,
        /// The output directory, for errors.
        path: PathBuf,
    },
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listing({} files)", self.len())
    }
}

impl Listing {
    /// A listing of files already in memory.
    pub fn of(files: Vec<SummaryFile>) -> Self {
        Self(Source::Files(Arc::new(files)))
    }

    /// How many files it lists.
    pub fn len(&self) -> usize {
        match &self.0 {
            Source::Files(f) => f.len(),
            Source::Spool { reader, .. } => reader.as_ref().map_or(0, Reader::count),
        }
    }

    /// Whether it lists no file.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each file, in listing order.
    pub fn each(
        &self,
        mut f: impl FnMut(SummaryFile) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        self.each_record(|_, file| f(file))
    }

    /// Every file, read into memory (for tests and small exports).
    pub fn to_vec(&self) -> Result<Vec<SummaryFile>, ExportError> {
        let mut v = Vec::new();
        self.each(|f| {
            v.push(f);
            Ok(())
        })?;
        Ok(v)
    }

    fn each_record(
        &self,
        mut f: impl FnMut(usize, SummaryFile) -> Result<(), ExportError>,
    ) -> Result<(), ExportError> {
        let (reader, groups, consumers, path) = match &self.0 {
            Source::Files(files) => {
                for (i, file) in files.iter().enumerate() {
                    f(i, file.clone())?;
                }
                return Ok(());
            }
            Source::Spool { reader: None, .. } => return Ok(()),
            Source::Spool {
                reader: Some(r),
                groups,
                consumers,
                path,
            } => (r, groups, consumers, path),
        };
        let bad = |e: std::io::Error| ExportError::Write {
            path: path.clone(),
            msg: format!("cannot read the export's list of files back: {e}"),
        };
        // One pass per group (a format uses one to three).
        for &group in groups {
            reader.forward(bad, |rec| {
                let mut r = Dec(rec);
                let seq = r.u64().map_err(bad)?;
                if r.u64().map_err(bad)? != u64::from(group) {
                    return Ok(());
                }
                let devices = r.u64().map_err(bad)? as usize;
                let bytes = r.u64().map_err(bad)? as usize;
                let sha256 = hex::encode(r.bytes().map_err(bad)?);
                let name = r.string().map_err(bad)?;
                let consumer = match r.u64().map_err(bad)? {
                    OWN_CONSUMER => r.string().map_err(bad)?,
                    i => consumers
                        .get(i as usize)
                        .cloned()
                        .ok_or_else(|| bad(std::io::ErrorKind::InvalidData.into()))?,
                };
                f(
                    seq as usize,
                    SummaryFile {
                        name,
                        devices,
                        bytes,
                        sha256,
                        consumer,
                    },
                )
            })?;
        }
        Ok(())
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
        let lines = o.listing().unwrap().to_vec().unwrap();
        o.commit().unwrap();
        assert_eq!(
            std::fs::read(out.join("rows-0001.jsonl")).unwrap(),
            b"{\"a\":1}\n"
        );
        assert_eq!(lines[0].bytes, 8);

        // A commit that fails part-way (a name taken after its file was staged) leaves the
        // files renamed so far and no temporary, scratch records included.
        let out2 = d.path().join("out-2");
        let mut o = Out::disk(&out2, false).unwrap();
        for n in ["a.txt", "b.txt", "c.txt"] {
            let id = o.open(n, "c".into()).unwrap();
            o.write(id, n.as_bytes()).unwrap();
            o.close(id, 1).unwrap();
        }
        std::fs::write(out2.join("b.txt"), b"taken").unwrap();
        let e = o.commit().unwrap_err();
        assert!(e.to_string().contains("b.txt"), "{e}");
        let mut left: Vec<String> = std::fs::read_dir(&out2)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        // Renamed last first: c.txt went in before b.txt was refused; a.txt was discarded.
        assert_eq!(left, ["b.txt", "c.txt"]);
        assert_eq!(std::fs::read(out2.join("b.txt")).unwrap(), b"taken");

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
