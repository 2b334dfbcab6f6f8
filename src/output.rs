//! Every file certfab writes goes through this module (DESIGN.md: "Files are written through
//! one helper"), so the rules below hold in one place for device bundles, `certfab issue`,
//! renewals, CA ceremony outputs, CRLs, manifests, checkpoints, audit reports and exports:
//!
//! * A file is first written to a temporary created *exclusively* with a unique random name
//!   (`.certfab-<random>.tmp`, `O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC`) through a directory file
//!   descriptor, so a name planted in advance (a symlink at `key.pem.tmp`, at a guessed temp
//!   name, anywhere) is never opened, followed or truncated.
//! * It is then renamed onto its final name through the same directory descriptor. A new file
//!   uses `renameat2(RENAME_NOREPLACE)` (or `linkat`, which never replaces, where a filesystem
//!   lacks it), so an existing name, a symlink included, is never replaced by accident. A
//!   final name that is a symlink is refused in every mode: certfab never writes through or
//!   over a link in its output.
//! * Directories that certfab names itself (a device id under `--out`) are created with
//!   `mkdirat` and opened with `O_NOFOLLOW|O_DIRECTORY`: a symlinked device directory is
//!   refused. The directory a user names (`--out DIR` and its parents) is the user's: it is
//!   created if missing but may itself be reached through links, as with any tool.
//! * Modes are given at creation, whatever the umask: directories 0750, secret files (private
//!   keys) 0600, every other output 0640. The umask can only remove bits, never add them, so
//!   `umask 000` still gives these modes and a stricter umask (e.g. 077) makes them stricter.
//! * Durability is the caller's choice: [`Durability::Now`] fsyncs the file before the rename
//!   and the directory after it; [`Durability::Deferred`] leaves both to the caller, who syncs
//!   the whole filesystem once ([`OutDir::sync_fs`]) for a group of files (the batch writer:
//!   its certificates can be rewritten from the ledger, its keys are synced per group before
//!   any of their certificates is signed).

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Mode of directories certfab creates.
pub const DIR_MODE: u32 = 0o750;

/// What a file holds, which decides its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A private key or other secret: owner read-write only (0600).
    Secret,
    /// Certificates, chains, CSRs, CRLs, manifests, reports, exports: owner read-write, group
    /// read (0640); the line's group can collect them, other users cannot.
    Shared,
}

impl Access {
    /// The file mode.
    pub fn mode(self) -> u32 {
        match self {
            Self::Secret => 0o600,
            Self::Shared => 0o640,
        }
    }
}

/// Whether a file must be on stable storage when the write returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file before the rename and the directory after it.
    Now,
    /// The caller syncs (one `syncfs` for many files, [`OutDir::sync_fs`]).
    Deferred,
}

/// What to do when the final name already exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Refuse: certfab never overwrites an issued file.
    Refuse,
    /// Replace it atomically (a regular file only; a symlink or directory is refused).
    Replace,
    /// Accept it when it holds exactly these bytes (a re-run), refuse it otherwise.
    KeepIfSame,
}

/// A file or directory that could not be written, and why (with the fix when there is one).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {msg}", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    /// What went wrong.
    pub msg: String,
}

impl WriteError {
    /// Output that cannot be written is a storage failure (exit 5).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        crate::exit::ExitCode::Storage
    }
}

const EXISTS: &str =
    "it already exists; certfab never overwrites an issued file. Choose a new --out or move it away";
const LINK: &str = "it is a symbolic link; certfab never writes through or over a link in its output. Remove the link (and find out who made it), then run again";
const TEMP_PREFIX: &str = ".certfab-";
const TEMP_SUFFIX: &str = ".tmp";

fn errno_text(e: Errno) -> String {
    std::io::Error::from(e).to_string()
}

/// A single path component certfab may create in a directory.
fn check_name(dir: &Path, name: &str) -> Result<(), WriteError> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(WriteError {
            path: dir.join(name),
            msg: format!("{name:?} is not a single file name"),
        });
    }
    Ok(())
}

/// An open output directory: every file and subdirectory is created relative to its file
/// descriptor, so nothing between the checks and the writes can redirect them.
#[derive(Debug)]
pub struct OutDir {
    fd: OwnedFd,
    path: PathBuf,
    /// Created by this call, so it cannot hold anything yet (no need to look before writing).
    fresh: bool,
}

impl OutDir {
    /// Opens the directory a user named (`--out DIR`), creating it and any missing parents
    /// with mode 0750.
    pub fn create(path: &Path) -> Result<Self, WriteError> {
        let path = if path.as_os_str().is_empty() {
            Path::new(".")
        } else {
            path
        };
        let err = |msg: String| WriteError {
            path: path.to_path_buf(),
            msg,
        };
        let fresh = matches!(std::fs::symlink_metadata(path), Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(|e| err(format!("cannot create the directory: {e}")))?;
        }
        let fd = rfs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err(format!("cannot open the directory: {}", errno_text(e))))?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
            fresh,
        })
    }

    /// The directory's path (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether this call created the directory.
    pub fn is_fresh(&self) -> bool {
        self.fresh
    }

    /// Marks the directory as one this process created in this run (the caller knows, e.g. a
    /// device directory made when its key was written): writes skip the look before writing.
    /// A name that exists after all is still never replaced.
    pub fn mark_created(&mut self) {
        self.fresh = true;
    }

    /// A subdirectory certfab names itself (a device id): created 0750 if missing; refused if
    /// it is a symlink or not a directory.
    pub fn subdir(&self, name: &str) -> Result<OutDir, WriteError> {
        check_name(&self.path, name)?;
        let path = self.path.join(name);
        let err = |msg: String| WriteError {
            path: path.clone(),
            msg,
        };
        let fresh = match rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => {
                return Err(err(format!(
                    "cannot create the directory: {}",
                    errno_text(e)
                )))
            }
        };
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::LOOP => err(LINK.into()),
            Errno::NOTDIR => match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Symlink => {
                    err(LINK.into())
                }
                _ => err("it exists and is not a directory; move it away".into()),
            },
            e => err(format!("cannot open the directory: {}", errno_text(e))),
        })?;
        Ok(OutDir { fd, path, fresh })
    }

    /// What is at `name` (not following a symlink), if anything.
    pub fn probe(&self, name: &str) -> Result<Option<FileType>, WriteError> {
        check_name(&self.path, name)?;
        match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(WriteError {
                path: self.path.join(name),
                msg: errno_text(e),
            }),
        }
    }

    /// Regular file `name` opened for reading, or `None` if there is none. A symlink or
    /// anything but a regular file is refused (a FIFO is never blocked on).
    pub fn open_existing(&self, name: &str) -> Result<Option<std::fs::File>, WriteError> {
        check_name(&self.path, name)?;
        let path = self.path.join(name);
        let err = |msg: String| WriteError {
            path: path.clone(),
            msg,
        };
        let fd = match rfs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(err(LINK.into())),
            Err(e) => return Err(err(format!("cannot read it: {}", errno_text(e)))),
        };
        let st = rfs::fstat(&fd).map_err(|e| err(errno_text(e)))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(err(
                "it is not a regular file; certfab writes only regular files here. Move it away"
                    .into(),
            ));
        }
        Ok(Some(std::fs::File::from(fd)))
    }

    /// The names in this directory (not `.` and `..`), in no particular order.
    pub fn names(&self) -> Result<Vec<String>, WriteError> {
        let err = |e: Errno| WriteError {
            path: self.path.clone(),
            msg: format!("cannot list the directory: {}", errno_text(e)),
        };
        let mut dir = rfs::Dir::read_from(&self.fd).map_err(err)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
        }
        Ok(names)
    }

    /// Starts a file too large to hold in memory (a bundle of thousands of devices): written
    /// in pieces to a new temporary, then [`StagedFile::commit`]ted under `name`. Dropped
    /// uncommitted, the temporary is removed.
    pub fn stage_file(&self, name: &str, access: Access) -> Result<StagedFile, WriteError> {
        check_name(&self.path, name)?;
        let dir = OutDir {
            fd: self.fd.try_clone().map_err(|e| WriteError {
                path: self.path.clone(),
                msg: format!("cannot open the directory: {e}"),
            })?,
            path: self.path.clone(),
            fresh: false,
        };
        let (tmp, fd) = dir.create_temp(access)?;
        Ok(StagedFile {
            file: std::io::BufWriter::with_capacity(256 * 1024, std::fs::File::from(fd)),
            dir,
            tmp,
            name: name.to_string(),
            done: false,
        })
    }

    /// The content of regular file `name`, or `None` if there is none. A symlink or anything
    /// but a regular file is refused; a file over `max` bytes is returned cut at `max + 1`
    /// bytes (so it compares unequal to anything certfab writes).
    pub fn read_existing(&self, name: &str, max: usize) -> Result<Option<Vec<u8>>, WriteError> {
        let Some(file) = self.open_existing(name)? else {
            return Ok(None);
        };
        let err = |msg: String| WriteError {
            path: self.path.join(name),
            msg,
        };
        let mut data = Vec::new();
        file.take(max as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| err(format!("cannot read it: {e}")))?;
        Ok(Some(data))
    }

    /// Writes `data` as `name` (temporary, then rename) with the mode for `access`.
    pub fn write(
        &self,
        name: &str,
        data: &[u8],
        access: Access,
        existing: Existing,
        durability: Durability,
    ) -> Result<(), WriteError> {
        if existing == Existing::KeepIfSame && !self.fresh {
            if let Some(current) = self.read_existing(name, data.len())? {
                return self.same_or_refuse(name, &current, data);
            }
        }
        self.stage(name, data, access, durability)?
            .commit_with(existing, Some(data))?;
        if durability == Durability::Now {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn same_or_refuse(&self, name: &str, current: &[u8], data: &[u8]) -> Result<(), WriteError> {
        if current == data {
            Ok(())
        } else {
            Err(WriteError {
                path: self.path.join(name),
                msg: "it exists with different content; certfab never overwrites an issued file. Use a new --out, or move it away"
                    .into(),
            })
        }
    }

    /// Writes `data` to a new temporary in this directory, to become `name` on
    /// [`Staged::commit`] (dropped uncommitted, the temporary is removed). With
    /// [`Durability::Now`] the temporary is fsynced; the directory is not (see
    /// [`OutDir::sync_dir`]).
    pub fn stage(
        &self,
        name: &str,
        data: &[u8],
        access: Access,
        durability: Durability,
    ) -> Result<Staged<'_>, WriteError> {
        check_name(&self.path, name)?;
        let (tmp, fd) = self.create_temp(access)?;
        let staged = Staged {
            dir: self,
            tmp,
            name: name.to_string(),
            done: false,
        };
        let err = |e: std::io::Error| WriteError {
            path: self.path.join(name),
            msg: format!("cannot write it: {e}"),
        };
        let mut f = std::fs::File::from(fd);
        f.write_all(data).map_err(err)?;
        if durability == Durability::Now {
            f.sync_all().map_err(err)?;
        }
        Ok(staged)
    }

    /// A new temporary: exclusive, no symlink followed, a name nobody could have guessed
    /// (a random key drawn once per process, then a counter; fresh randomness after a clash).
    fn create_temp(&self, access: Access) -> Result<(String, OwnedFd), WriteError> {
        self.unique_temp("a temporary file", |tmp| {
            rfs::openat(
                &self.fd,
                tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(access.mode()),
            )
        })
    }

    /// A new temporary directory (mode 0750), opened: the same unguessable names as files.
    fn create_temp_dir(&self) -> Result<(String, OwnedFd), WriteError> {
        self.unique_temp("a temporary directory", |tmp| {
            rfs::mkdirat(&self.fd, tmp, Mode::from_raw_mode(DIR_MODE))?;
            rfs::openat(
                &self.fd,
                tmp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })
    }

    /// Makes a temporary with `make` under a fresh unique name (`EEXIST` draws another).
    fn unique_temp(
        &self,
        what: &str,
        make: impl Fn(&str) -> Result<OwnedFd, Errno>,
    ) -> Result<(String, OwnedFd), WriteError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static KEY: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let random = || -> Result<u64, WriteError> {
            let mut r = [0u8; 8];
            getrandom::getrandom(&mut r).map_err(|e| WriteError {
                path: self.path.clone(),
                msg: format!("no randomness for a temporary name: {e}"),
            })?;
            Ok(u64::from_le_bytes(r))
        };
        let key = match KEY.get() {
            Some(k) => *k,
            None => {
                let r = random()?;
                *KEY.get_or_init(|| r)
            }
        };
        let mut last = Errno::EXIST;
        for attempt in 0..16 {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let salt = if attempt == 0 { key } else { random()? };
            let tmp = format!("{TEMP_PREFIX}{salt:016x}{n:x}{TEMP_SUFFIX}");
            match make(&tmp) {
                Ok(fd) => return Ok((tmp, fd)),
                Err(Errno::EXIST) => last = Errno::EXIST,
                Err(e) => {
                    last = e;
                    break;
                }
            }
        }
        Err(WriteError {
            path: self.path.clone(),
            msg: format!("cannot create {what}: {}", errno_text(last)),
        })
    }

    /// Creates subdirectory `name` holding `files`, whole or not at all: the files are written
    /// (exclusively, no symlink followed, their modes) into a new temporary directory, which is
    /// then renamed onto `name` without replacing anything — one rename for the directory
    /// instead of a temporary and a rename per file. Returns `false`, leaving nothing behind,
    /// when `name` exists already (the caller then writes into it file by file). Not synced:
    /// the caller syncs the filesystem ([`OutDir::sync_fs`]).
    pub fn create_dir_with(
        &self,
        name: &str,
        files: &[(&str, &[u8], Access)],
    ) -> Result<bool, WriteError> {
        check_name(&self.path, name)?;
        let (tmp, fd) = self.create_temp_dir()?;
        let staged = OutDir {
            fd,
            path: self.path.join(&tmp),
            fresh: true,
        };
        let filled = (|| {
            for (file, data, access) in files {
                check_name(&staged.path, file)?;
                let err = |msg: String| WriteError {
                    path: self.path.join(name).join(file),
                    msg,
                };
                let fd = rfs::openat(
                    &staged.fd,
                    *file,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(access.mode()),
                )
                .map_err(|e| err(format!("cannot create it: {}", errno_text(e))))?;
                std::fs::File::from(fd)
                    .write_all(data)
                    .map_err(|e| err(format!("cannot write it: {e}")))?;
            }
            // No link() fallback for a directory: where the filesystem has no RENAME_NOREPLACE
            // the caller takes the file-by-file path.
            rfs::renameat_with(
                &self.fd,
                tmp.as_str(),
                &self.fd,
                name,
                RenameFlags::NOREPLACE,
            )
            .map(|()| true)
            .or_else(|e| match e {
                Errno::EXIST | Errno::NOTEMPTY | Errno::INVAL | Errno::NOSYS | Errno::NOTSUP => {
                    Ok(false)
                }
                e => Err(WriteError {
                    path: self.path.join(name),
                    msg: format!("cannot rename into place: {}", errno_text(e)),
                }),
            })
        })();
        if !matches!(filled, Ok(true)) {
            let _ = self.remove_temp_dir(&tmp, &staged.fd);
        }
        filled
    }

    /// Removes temporary directory `tmp` (open as `fd`) and the files in it.
    fn remove_temp_dir(&self, tmp: &str, fd: &OwnedFd) -> Result<(), Errno> {
        let mut dir = rfs::Dir::read_from(fd)?;
        let mut names = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let n = entry.file_name().to_owned();
            if n.as_bytes() != b"." && n.as_bytes() != b".." {
                names.push(n);
            }
        }
        for n in &names {
            match rfs::unlinkat(fd, n.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        rfs::unlinkat(&self.fd, tmp, AtFlags::REMOVEDIR)
    }

    /// Takes this directory for one certfab writer, then removes the temporaries a killed one
    /// left here ([`OutDir::remove_stale_temps`]). The exclusive `flock` on the directory is held
    /// until this `OutDir` is dropped, so two commands writing into one directory (two batches
    /// on a central ledger, an export beside a batch) cannot remove each other's live
    /// temporaries: the second is refused, naming the directory. A filesystem that cannot lock
    /// a directory (NFS emulates `flock` with byte-range locks, which need a descriptor open for
    /// writing) is used unlocked, as before the lock existed. Returns how many were removed.
    pub fn take_for_writing(&self) -> Result<usize, WriteError> {
        match rfs::flock(&self.fd, rfs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) | Err(Errno::NOLCK | Errno::OPNOTSUPP | Errno::BADF | Errno::INVAL) => {}
            Err(Errno::WOULDBLOCK) => {
                return Err(WriteError {
                    path: self.path.clone(),
                    msg: "another certfab command is writing into this directory; wait for it to finish, or give this one another directory".into(),
                })
            }
            Err(e) => {
                return Err(WriteError {
                    path: self.path.clone(),
                    msg: format!("cannot lock the directory: {}", errno_text(e)),
                })
            }
        }
        self.remove_stale_temps()
    }

    /// Removes temporaries a killed certfab left here (`.certfab-*.tmp`; the links themselves
    /// if someone planted links by those names). Returns how many.
    pub fn remove_stale_temps(&self) -> Result<usize, WriteError> {
        let err = |e: Errno| WriteError {
            path: self.path.clone(),
            msg: format!("cannot list the directory: {}", errno_text(e)),
        };
        let mut dir = rfs::Dir::read_from(&self.fd).map_err(err)?;
        let mut stale = Vec::new();
        let mut stale_dirs = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_bytes();
            if name.starts_with(TEMP_PREFIX.as_bytes()) && name.ends_with(TEMP_SUFFIX.as_bytes()) {
                if entry.file_type() == FileType::Directory {
                    stale_dirs.push(entry.file_name().to_owned());
                } else {
                    stale.push(entry.file_name().to_owned());
                }
            }
        }
        // A temporary directory of [`OutDir::create_dir_with`] a killed run left (opened without
        // following a link: only a real directory here is emptied).
        for name in &stale_dirs {
            let fd = match rfs::openat(
                &self.fd,
                name.as_c_str(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => continue,
                Err(e) => return Err(err(e)),
            };
            self.remove_temp_dir(&name.to_string_lossy(), &fd)
                .map_err(|e| WriteError {
                    path: self.path.join(name.to_string_lossy().as_ref()),
                    msg: format!(
                        "cannot remove a stale temporary directory: {}",
                        errno_text(e)
                    ),
                })?;
        }
        for name in &stale {
            match rfs::unlinkat(&self.fd, name.as_c_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(WriteError {
                        path: self.path.join(name.to_string_lossy().as_ref()),
                        msg: format!("cannot remove a stale temporary file: {}", errno_text(e)),
                    })
                }
            }
        }
        Ok(stale.len() + stale_dirs.len())
    }

    /// Removes `name` (the entry itself: a link is removed, never what it points at).
    pub fn remove(&self, name: &str) -> Result<(), WriteError> {
        check_name(&self.path, name)?;
        match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(WriteError {
                path: self.path.join(name),
                msg: format!("cannot remove it: {}", errno_text(e)),
            }),
        }
    }

    /// A private scratch directory (mode 0700, an unguessable `.certfab-*.tmp` name) for data
    /// a command spills instead of holding it in memory (the audit's working database). It
    /// and the files in it are removed when the [`ScratchDir`] is dropped; one a killed run
    /// left is removed by [`OutDir::remove_stale_temps`].
    pub fn scratch_dir(self) -> Result<ScratchDir, WriteError> {
        let (name, fd) = self.unique_temp("a scratch directory", |tmp| {
            rfs::mkdirat(&self.fd, tmp, Mode::from_raw_mode(0o700))?;
            rfs::openat(
                &self.fd,
                tmp,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
        })?;
        Ok(ScratchDir {
            path: self.path.join(&name),
            parent: self,
            name,
            fd,
        })
    }

    /// fsyncs the directory (its entries: the renames).
    pub fn sync_dir(&self) -> Result<(), WriteError> {
        rfs::fsync(&self.fd).map_err(|e| WriteError {
            path: self.path.clone(),
            msg: format!("cannot sync the directory: {}", errno_text(e)),
        })
    }

    /// Syncs the whole filesystem holding this directory: one call for everything written
    /// with [`Durability::Deferred`].
    pub fn sync_fs(&self) -> Result<(), WriteError> {
        rfs::syncfs(&self.fd).map_err(|e| WriteError {
            path: self.path.clone(),
            msg: format!("cannot sync the filesystem: {}", errno_text(e)),
        })
    }
}

/// A private scratch directory, removed with its files when dropped ([`OutDir::scratch_dir`]).
#[derive(Debug)]
pub struct ScratchDir {
    parent: OutDir,
    name: String,
    fd: OwnedFd,
    path: PathBuf,
}

impl ScratchDir {
    /// Where it is (for the files a library such as SQLite creates in it itself).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a scratch directory left behind holds only a copy of what was read,
        // and the next run in this directory removes it (remove_stale_temps).
        let _ = self.parent.remove_temp_dir(&self.name, &self.fd);
    }
}

/// A temporary written in full, waiting for its rename.
#[derive(Debug)]
pub struct Staged<'a> {
    dir: &'a OutDir,
    tmp: String,
    name: String,
    done: bool,
}

impl Staged<'_> {
    /// The final path (for messages).
    pub fn path(&self) -> PathBuf {
        self.dir.path.join(&self.name)
    }

    /// Renames the temporary onto its final name. The directory is not synced.
    pub fn commit(self, existing: Existing) -> Result<(), WriteError> {
        self.commit_with(existing, None)
    }

    fn commit_with(mut self, existing: Existing, data: Option<&[u8]>) -> Result<(), WriteError> {
        let fd = &self.dir.fd;
        let err = |msg: String| WriteError {
            path: self.path(),
            msg,
        };
        match existing {
            Existing::Refuse | Existing::KeepIfSame => {
                match rename_noreplace(fd, &self.tmp, &self.name) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        if let (Existing::KeepIfSame, Some(data)) = (existing, data) {
                            // The temporary goes either way (Drop).
                            let current = self
                                .dir
                                .read_existing(&self.name, data.len())?
                                .unwrap_or_default();
                            return self.dir.same_or_refuse(&self.name, &current, data);
                        }
                        return Err(match self.dir.probe(&self.name)? {
                            Some(FileType::Symlink) => err(LINK.into()),
                            _ => err(EXISTS.into()),
                        });
                    }
                    Err(e) => {
                        return Err(err(format!("cannot rename into place: {}", errno_text(e))))
                    }
                }
            }
            Existing::Replace => {
                match self.dir.probe(&self.name)? {
                    Some(FileType::Symlink) => return Err(err(LINK.into())),
                    Some(FileType::RegularFile) | None => {}
                    Some(_) => {
                        return Err(err(
                            "it exists and is not a regular file; move it away".into()
                        ))
                    }
                }
                rfs::renameat(fd, self.tmp.as_str(), fd, self.name.as_str())
                    .map_err(|e| err(format!("cannot rename into place: {}", errno_text(e))))?;
            }
        }
        self.done = true;
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// A file being written in pieces to its temporary ([`OutDir::stage_file`]).
#[derive(Debug)]
pub struct StagedFile {
    dir: OutDir,
    tmp: String,
    name: String,
    file: std::io::BufWriter<std::fs::File>,
    done: bool,
}

impl StagedFile {
    /// Appends `data` to the temporary.
    pub fn write_all(&mut self, data: &[u8]) -> Result<(), WriteError> {
        self.file.write_all(data).map_err(|e| WriteError {
            path: self.dir.path.join(&self.name),
            msg: format!("cannot write it: {e}"),
        })
    }

    /// The temporary as written so far, opened anew for reading from its start (a second pass
    /// over a file too large to hold, e.g. the self-check of a manifest before it is renamed
    /// into place).
    pub fn read_back(&mut self) -> Result<std::fs::File, WriteError> {
        let path = self.dir.path.join(&self.name);
        self.file.flush().map_err(|e| WriteError {
            path: path.clone(),
            msg: format!("cannot write it: {e}"),
        })?;
        rfs::openat(
            &self.dir.fd,
            self.tmp.as_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map(std::fs::File::from)
        .map_err(|e| WriteError {
            path,
            msg: format!("cannot read its temporary back: {}", errno_text(e)),
        })
    }

    /// Flushes the temporary, fsyncs it with [`Durability::Now`], renames it onto its name
    /// (never over an existing one with [`Existing::Refuse`]) and then fsyncs the directory
    /// with [`Durability::Now`].
    pub fn commit(mut self, existing: Existing, durability: Durability) -> Result<(), WriteError> {
        let err = |e: std::io::Error| WriteError {
            path: self.dir.path.join(&self.name),
            msg: format!("cannot write it: {e}"),
        };
        self.file.flush().map_err(err)?;
        if durability == Durability::Now {
            self.file.get_ref().sync_all().map_err(err)?;
        }
        let staged = Staged {
            dir: &self.dir,
            tmp: std::mem::take(&mut self.tmp),
            name: self.name.clone(),
            done: false,
        };
        // The temporary is the Staged's now: it is removed if the rename fails.
        self.done = true;
        staged.commit_with(existing, None)?;
        if durability == Durability::Now {
            self.dir.sync_dir()?;
        }
        Ok(())
    }
}

impl StagedFile {
    /// Flushes and fsyncs the temporary and closes it, without renaming it yet: one of many
    /// files that are renamed into place together only when all of them are written (an
    /// export streamed to disk), so a failure leaves nothing partial. The result holds no file
    /// descriptor; [`OutDir::commit_finished`] renames it, [`OutDir::discard_finished`]
    /// removes it.
    pub fn finish(mut self) -> Result<Finished, WriteError> {
        let err = |e: std::io::Error| WriteError {
            path: self.dir.path.join(&self.name),
            msg: format!("cannot write it: {e}"),
        };
        self.file.flush().map_err(err)?;
        self.file.get_ref().sync_all().map_err(err)?;
        self.done = true;
        Ok(Finished {
            tmp: std::mem::take(&mut self.tmp),
            name: std::mem::take(&mut self.name),
        })
    }
}

/// A temporary written in full and fsynced ([`StagedFile::finish`]), waiting for its rename
/// in the directory it was staged in. Dropped, it stays on disk: whoever holds it must commit
/// or discard it through that directory.
#[derive(Debug)]
#[must_use]
pub struct Finished {
    tmp: String,
    name: String,
}

impl Finished {
    /// The temporary's name and the final name: an export of many files keeps them on disk
    /// (a scratch spool) instead of in memory, and rebuilds them with [`Finished::from_parts`].
    pub fn into_parts(self) -> (String, String) {
        (self.tmp, self.name)
    }

    /// A [`Finished`] again from [`Finished::into_parts`]; both must be single file names, the
    /// temporary one of certfab's own.
    pub fn from_parts(dir: &Path, tmp: String, name: String) -> Result<Self, WriteError> {
        check_name(dir, &name)?;
        check_name(dir, &tmp)?;
        if !(tmp.starts_with(TEMP_PREFIX) && tmp.ends_with(TEMP_SUFFIX)) {
            return Err(WriteError {
                path: dir.join(&tmp),
                msg: "not a certfab temporary".into(),
            });
        }
        Ok(Self { tmp, name })
    }
}

impl OutDir {
    /// Renames a [`Finished`] temporary of this directory onto its name (never over an
    /// existing name with [`Existing::Refuse`]). The directory is not synced.
    pub fn commit_finished(&self, f: Finished, existing: Existing) -> Result<(), WriteError> {
        Staged {
            dir: self,
            tmp: f.tmp,
            name: f.name,
            done: false,
        }
        .commit(existing)
    }

    /// Removes a [`Finished`] temporary that will not be committed.
    pub fn discard_finished(&self, f: Finished) {
        let _ = rfs::unlinkat(&self.fd, f.tmp.as_str(), AtFlags::empty());
    }

    /// Removes this directory if it is empty and was created by this run ([`OutDir::create`]
    /// made it): what a failed export leaves is what was there before.
    pub fn remove_if_fresh_and_empty(&self) {
        if self.fresh {
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(&self.dir.fd, self.tmp.as_str(), AtFlags::empty());
        }
    }
}

/// Renames without ever replacing an existing name. `linkat` is the fallback for
/// filesystems without `RENAME_NOREPLACE` (it fails on an existing name, a link included).
fn rename_noreplace(dir: &OwnedFd, tmp: &str, name: &str) -> Result<(), Errno> {
    match rfs::renameat_with(dir, tmp, dir, name, RenameFlags::NOREPLACE) {
        Err(Errno::INVAL | Errno::NOSYS | Errno::NOTSUP) => {
            rfs::linkat(dir, tmp, dir, name, AtFlags::empty())?;
            let _ = rfs::unlinkat(dir, tmp, AtFlags::empty());
            Ok(())
        }
        r => r,
    }
}

/// The directory and file name of `path`.
pub fn split(path: &Path) -> Result<(&Path, &str), WriteError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| WriteError {
            path: path.to_path_buf(),
            msg: "not a file name (or not UTF-8)".into(),
        })?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    Ok((dir, name))
}

/// Writes `data` to `path`, which must not exist yet: mode 0640, durable when it returns.
pub fn write_new(path: &Path, data: &[u8]) -> Result<(), WriteError> {
    let (dir, name) = split(path)?;
    OutDir::create(dir)?.write(
        name,
        data,
        Access::Shared,
        Existing::Refuse,
        Durability::Now,
    )?;
    Ok(())
}

/// Refuses early when any of `paths` exists (a symlink, even a dangling one, included), so
/// nothing is signed for output that cannot land.
pub fn check_free(paths: &[&Path]) -> Result<(), WriteError> {
    for p in paths {
        match std::fs::symlink_metadata(p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(WriteError {
                    path: p.to_path_buf(),
                    msg: LINK.into(),
                })
            }
            _ => {
                return Err(WriteError {
                    path: p.to_path_buf(),
                    msg: EXISTS.into(),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn writes_with_modes_and_refuses_existing() {
        let d = tempfile::tempdir().unwrap();
        let out = OutDir::create(&d.path().join("a/b")).unwrap();
        assert!(out.is_fresh());
        assert!(mode(&d.path().join("a")) & 0o027 == 0);
        let dev = out.subdir("SN1").unwrap();
        assert!(mode(&d.path().join("a/b/SN1")) & 0o027 == 0);
        dev.write(
            "k.pem",
            b"k",
            Access::Secret,
            Existing::Refuse,
            Durability::Now,
        )
        .unwrap();
        dev.write(
            "c.pem",
            b"c",
            Access::Shared,
            Existing::KeepIfSame,
            Durability::Deferred,
        )
        .unwrap();
        assert_eq!(mode(&d.path().join("a/b/SN1/k.pem")) & 0o077, 0);
        assert_eq!(mode(&d.path().join("a/b/SN1/c.pem")) & 0o037, 0);
        let again = out.subdir("SN1").unwrap();
        assert!(!again.is_fresh());
        again
            .write(
                "c.pem",
                b"c",
                Access::Shared,
                Existing::KeepIfSame,
                Durability::Now,
            )
            .unwrap();
        assert!(again
            .write(
                "c.pem",
                b"x",
                Access::Shared,
                Existing::KeepIfSame,
                Durability::Now
            )
            .is_err());
        assert!(again
            .write(
                "k.pem",
                b"x",
                Access::Secret,
                Existing::Refuse,
                Durability::Now
            )
            .is_err());
        again
            .write(
                "k.pem",
                b"y",
                Access::Secret,
                Existing::Replace,
                Durability::Now,
            )
            .unwrap();
        assert_eq!(std::fs::read(d.path().join("a/b/SN1/k.pem")).unwrap(), b"y");
        let names: Vec<_> = std::fs::read_dir(d.path().join("a/b/SN1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
    }

    #[test]
    fn symlinks_are_never_followed() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let out = OutDir::create(&d.path().join("out")).unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("out/cert.pem")).unwrap();
        std::os::unix::fs::symlink(d.path(), d.path().join("out/dev")).unwrap();
        for existing in [Existing::Refuse, Existing::Replace, Existing::KeepIfSame] {
            let e = out
                .write(
                    "cert.pem",
                    b"new",
                    Access::Shared,
                    existing,
                    Durability::Now,
                )
                .unwrap_err();
            assert!(e.msg.contains("symbolic link"), "{e}");
        }
        let e = out.subdir("dev").unwrap_err();
        assert!(e.msg.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        assert!(check_free(&[&d.path().join("out/cert.pem")])
            .unwrap_err()
            .to_string()
            .contains("symbolic link"));
    }

    #[test]
    fn staged_files_appear_whole_or_not_at_all() {
        let d = tempfile::tempdir().unwrap();
        let out = OutDir::create(d.path()).unwrap();
        let mut f = out.stage_file("b.jsonl", Access::Secret).unwrap();
        f.write_all(b"one\n").unwrap();
        f.write_all(b"two\n").unwrap();
        // Nothing under the final name until the commit.
        assert!(!d.path().join("b.jsonl").exists());
        f.commit(Existing::Refuse, Durability::Now).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("b.jsonl")).unwrap(),
            b"one\ntwo\n"
        );
        assert_eq!(mode(&d.path().join("b.jsonl")) & 0o077, 0);
        // Never over an existing file; the temporary goes either way, as does a dropped one.
        let mut again = out.stage_file("b.jsonl", Access::Shared).unwrap();
        again.write_all(b"other\n").unwrap();
        assert!(again.commit(Existing::Refuse, Durability::Now).is_err());
        drop(out.stage_file("c.jsonl", Access::Shared).unwrap());
        let mut names = out.names().unwrap();
        names.sort();
        assert_eq!(names, ["b.jsonl"]);
        assert_eq!(
            std::fs::read(d.path().join("b.jsonl")).unwrap(),
            b"one\ntwo\n"
        );
    }

    /// Issue 14, fewer syscalls in the dirs layout: a new device directory arrives whole
    /// (one rename), an existing one is left alone for the file-by-file path, a symlink there
    /// is never followed, and a temporary directory a killed run left is cleaned up.
    #[test]
    fn item14_device_dir_created_whole_or_left_to_the_caller() {
        let d = tempfile::tempdir().unwrap();
        let out = OutDir::create(d.path()).unwrap();
        let files: [(&str, &[u8], Access); 2] = [
            ("cert.pem", b"c", Access::Shared),
            ("key.pem", b"k", Access::Secret),
        ];
        assert!(out.create_dir_with("SN1", &files).unwrap());
        assert_eq!(std::fs::read(d.path().join("SN1/cert.pem")).unwrap(), b"c");
        assert_eq!(mode(&d.path().join("SN1/key.pem")), 0o600);
        assert_eq!(mode(&d.path().join("SN1")) & 0o027, 0);
        // It exists: nothing is touched, no temporary left.
        let other: [(&str, &[u8], Access); 1] = [("cert.pem", b"x", Access::Shared)];
        assert!(!out.create_dir_with("SN1", &other).unwrap());
        assert_eq!(std::fs::read(d.path().join("SN1/cert.pem")).unwrap(), b"c");
        let outside = d.path().join("elsewhere");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join("SN2")).unwrap();
        assert!(!out.create_dir_with("SN2", &other).unwrap());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A killed run's half-made directory goes with the other temporaries.
        std::fs::create_dir(d.path().join(".certfab-00ab.tmp")).unwrap();
        std::fs::write(d.path().join(".certfab-00ab.tmp/cert.pem"), "half").unwrap();
        assert_eq!(out.remove_stale_temps().unwrap(), 1);
        let mut names = out.names().unwrap();
        names.sort();
        assert_eq!(names, ["SN1", "SN2", "elsewhere"]);
    }

    #[test]
    fn stale_temps_are_removed_and_uncommitted_stages_leave_nothing() {
        let d = tempfile::tempdir().unwrap();
        let out = OutDir::create(d.path()).unwrap();
        let outside = d.path().join("target");
        std::fs::write(&outside, "keep").unwrap();
        std::fs::write(d.path().join(".certfab-0011.tmp"), "old").unwrap();
        std::os::unix::fs::symlink(&outside, d.path().join(".certfab-0022.tmp")).unwrap();
        drop(
            out.stage("x", b"x", Access::Shared, Durability::Deferred)
                .unwrap(),
        );
        assert_eq!(out.remove_stale_temps().unwrap(), 2);
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["target"]);
    }

    /// Only one writer takes a directory; another (even in this process) is refused and
    /// removes nothing, until the first is dropped.
    #[test]
    fn a_directory_taken_for_writing_is_refused_to_a_second_writer() {
        let d = tempfile::tempdir().unwrap();
        let first = OutDir::create(d.path()).unwrap();
        assert_eq!(first.take_for_writing().unwrap(), 0);
        std::fs::write(d.path().join(".certfab-0033.tmp"), "live").unwrap();
        let second = OutDir::create(d.path()).unwrap();
        let e = second.take_for_writing().unwrap_err();
        assert!(e.msg.contains("another certfab command"), "{e}");
        assert!(d.path().join(".certfab-0033.tmp").exists());
        drop(first);
        assert_eq!(second.take_for_writing().unwrap(), 1);
    }
}
