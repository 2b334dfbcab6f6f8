//! Reading the files certfab is given: a CSV's `csr`/`pubkey` paths and a `--csr-dir` are
//! confined to an *input root*, and a file named on the command line must be a regular file
//! (or, where a command reads a stream, a pipe). Nothing here blocks on a FIFO or opens a
//! device, and no message quotes a byte of what was read: a refusal names the path and the
//! kind of problem only, so the ledger never learns a file's content.

use rustix::fs::{self as rfs, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

/// Why a file was not read. The messages name the kind of problem, never the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// Over the size limit (counted while reading, so an endless stream stops at the limit).
    #[error("it is over the {0} KiB limit; refused before parsing")]
    TooLarge(usize),
    /// Not a regular file (or pipe where allowed), outside the input root, a link where none
    /// may be, missing.
    #[error("{0}")]
    Refused(String),
    /// The read itself failed.
    #[error("cannot read it: {0}")]
    Io(String),
}

fn kind_name(t: FileType) -> &'static str {
    match t {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "not a regular file",
    }
}

fn errno_text(e: Errno) -> String {
    std::io::Error::from(e).to_string()
}

/// Reads at most `max` bytes (one more is read to tell "exactly max" from "more").
fn read_bounded(f: impl Read, max: usize) -> Result<Vec<u8>, ReadError> {
    let mut data = Vec::new();
    f.take(max as u64 + 1)
        .read_to_end(&mut data)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    if data.len() > max {
        return Err(ReadError::TooLarge(max / 1024));
    }
    Ok(data)
}

/// Whether a command-line file may be a pipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pipes {
    /// `certfab issue --csr /dev/stdin`: a stream the user chose, read once.
    Allowed,
    /// A batch input, read again on resume: a regular file only.
    Refused,
}

/// Opens a file named on the command line (its path is the user's: links in it are
/// followed). A regular file is opened without blocking and checked again after the open; a
/// pipe is opened only when `pipes` allows it; a device, directory or socket is refused
/// before it is opened (opening a device can have effects of its own).
pub fn open_user_file(path: &Path, pipes: Pipes) -> Result<std::fs::File, ReadError> {
    let kind = match rfs::stat(path) {
        Ok(st) => FileType::from_raw_mode(st.st_mode),
        Err(Errno::NOENT) => return Err(ReadError::Refused("it does not exist".into())),
        Err(e) => return Err(ReadError::Io(errno_text(e))),
    };
    match kind {
        FileType::RegularFile => {}
        FileType::Fifo if pipes == Pipes::Allowed => {
            return std::fs::File::open(path).map_err(|e| ReadError::Io(e.to_string()))
        }
        other => return Err(not_regular(other, pipes)),
    }
    let fd = rfs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ReadError::Io(errno_text(e)))?;
    regular(fd, pipes)
}

fn not_regular(kind: FileType, pipes: Pipes) -> ReadError {
    ReadError::Refused(match pipes {
        Pipes::Allowed => format!(
            "it is {}, not a regular file or a pipe; give the file itself",
            kind_name(kind)
        ),
        Pipes::Refused => format!(
            "it is {}, not a regular file; give a regular file (a batch reads its input again when it resumes, so save a pipe's output to a file first)",
            kind_name(kind)
        ),
    })
}

/// The open file, if it is (still) a regular file.
fn regular(fd: OwnedFd, pipes: Pipes) -> Result<std::fs::File, ReadError> {
    let st = rfs::fstat(&fd).map_err(|e| ReadError::Io(errno_text(e)))?;
    match FileType::from_raw_mode(st.st_mode) {
        FileType::RegularFile => Ok(std::fs::File::from(fd)),
        other => Err(not_regular(other, pipes)),
    }
}

/// Reads a file named on the command line: see [`open_user_file`]; at most `max` bytes.
pub fn read_user_file(path: &Path, max: usize, pipes: Pipes) -> Result<Vec<u8>, ReadError> {
    read_bounded(open_user_file(path, pipes)?, max)
}

/// `path` with `.` removed and `..` applied to the components before it, without looking
/// at the filesystem (the open that follows is confined by the kernel either way).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() && !path.is_absolute() {
                    out.push("..");
                }
            }
            c => out.push(c.as_os_str()),
        }
    }
    out
}

/// `path` made absolute (against the working directory) and [`normalize`]d.
pub fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    normalize(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// The directory the files named by an input must stay inside: the CSV's directory or the
/// `--csr-dir`, unless `--input-root` names a wider one.
#[derive(Debug)]
pub struct InputRoot {
    fd: OwnedFd,
    path: PathBuf,
}

impl InputRoot {
    /// Opens the root (`path` absolute).
    pub fn open(path: &Path) -> Result<Self, ReadError> {
        let path = absolute(path);
        let fd = rfs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::NOENT => ReadError::Refused("the input root does not exist".into()),
            Errno::NOTDIR => ReadError::Refused("the input root is not a directory".into()),
            e => ReadError::Io(errno_text(e)),
        })?;
        Ok(Self { fd, path })
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `value` (as an input names it: relative to `base`, or absolute) as a path relative to
    /// the root, or a refusal if it is outside.
    pub fn relative(&self, base: &Path, value: &str) -> Result<PathBuf, ReadError> {
        let full = absolute(&base.join(value));
        let rel = full
            .strip_prefix(&self.path)
            .map_err(|_| self.outside())?
            .to_path_buf();
        if rel.as_os_str().is_empty() {
            return Err(ReadError::Refused(
                "it names the input root itself, not a file".into(),
            ));
        }
        Ok(rel)
    }

    fn outside(&self) -> ReadError {
        ReadError::Refused(format!(
            "it is outside the input root {}; key files must be in the CSV's directory (or the --csr-dir) or below it, or pass --input-root DIR to allow a wider directory",
            self.path.display()
        ))
    }

    /// Reads `rel` (from [`InputRoot::relative`]) if it resolves inside the root (a symlink
    /// may point anywhere inside, never out) and is a regular file: at most `max` bytes.
    pub fn read(&self, rel: &Path, max: usize) -> Result<Vec<u8>, ReadError> {
        // Looked at first without opening it (O_PATH: no device side effects, no blocking),
        // then opened without blocking and checked again.
        let probe = self.open_beneath(rel, OFlags::PATH | OFlags::CLOEXEC)?;
        let st = rfs::fstat(&probe).map_err(|e| ReadError::Io(errno_text(e)))?;
        let kind = FileType::from_raw_mode(st.st_mode);
        if kind != FileType::RegularFile {
            return Err(not_regular(kind, Pipes::Refused));
        }
        let fd = self.open_beneath(
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        )?;
        read_bounded(regular(fd, Pipes::Refused)?, max)
    }

    fn open_beneath(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, ReadError> {
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &self.fd,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
            ) {
                Ok(fd) => return Ok(fd),
                // A rename elsewhere raced the lookup: the kernel asks for a retry.
                Err(Errno::AGAIN) if tries < 8 => tries += 1,
                Err(Errno::NOSYS | Errno::PERM) if tries == 0 => return self.walk(rel, flags),
                Err(e) => return Err(self.open_error(e)),
            }
        }
    }

    /// Without openat2 (old kernels, some sandboxes): one component at a time, refusing every
    /// symlink, so nothing can lead out.
    fn walk(&self, rel: &Path, flags: OFlags) -> Result<OwnedFd, ReadError> {
        let parts: Vec<&std::ffi::OsStr> = rel
            .components()
            .map(|c| match c {
                Component::Normal(n) => Ok(n),
                _ => Err(self.outside()),
            })
            .collect::<Result<_, _>>()?;
        let Some((last, dirs)) = parts.split_last() else {
            return Err(self.outside());
        };
        let mut dir: Option<OwnedFd> = None;
        for d in dirs {
            let at = dir.as_ref().unwrap_or(&self.fd);
            let next = rfs::openat(
                at,
                *d,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| self.open_error(e))?;
            dir = Some(next);
        }
        let at = dir.as_ref().unwrap_or(&self.fd);
        rfs::openat(at, *last, flags | OFlags::NOFOLLOW, Mode::empty())
            .map_err(|e| self.open_error(e))
    }

    fn open_error(&self, e: Errno) -> ReadError {
        match e {
            Errno::XDEV => self.outside(),
            Errno::NOENT => ReadError::Refused("it does not exist".into()),
            Errno::LOOP | Errno::NOTDIR => ReadError::Refused(format!(
                "it goes through a symbolic link that cannot be followed inside the input root {}",
                self.path.display()
            )),
            e => ReadError::Io(errno_text(e)),
        }
    }
}

/// A reader that turns CRLF into LF, so the CSV reader counts a CRLF file's lines like an LF
/// file's (it reports lines one too low otherwise). A lone CR is kept.
pub struct CrlfToLf<R> {
    inner: std::io::BufReader<R>,
    pending_cr: bool,
}

impl<R: Read> CrlfToLf<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner: std::io::BufReader::new(inner),
            pending_cr: false,
        }
    }
}

impl<R: Read> Read for CrlfToLf<R> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        use std::io::BufRead;
        let mut n = 0;
        while n < out.len() {
            let buf = self.inner.fill_buf()?;
            if self.pending_cr {
                // The CR is dropped before an LF and kept otherwise (also at the end).
                if buf.first() != Some(&b'\n') {
                    out[n] = b'\r';
                    n += 1;
                }
                self.pending_cr = false;
                continue;
            }
            if buf.is_empty() {
                break;
            }
            let mut used = 0;
            while used < buf.len() && n < out.len() {
                let b = buf[used];
                used += 1;
                if b == b'\r' {
                    self.pending_cr = true;
                    break;
                }
                out[n] = b;
                n += 1;
            }
            self.inner.consume(used);
            // Return what is there rather than wait for more input, unless a CR needs the
            // next byte to decide.
            if !self.pending_cr {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_in_any_chunking() {
        let src = b"a,b\r\n1,\"x\r\ny\"\r\nlone\rcr\r\n\r";
        for size in 1..8 {
            let mut r = CrlfToLf::new(std::io::Cursor::new(&src[..]));
            let mut got = Vec::new();
            let mut buf = vec![0u8; size];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"a,b\n1,\"x\ny\"\nlone\rcr\n\r", "chunk {size}");
        }
    }

    #[test]
    fn confined_reads() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.csr"), "A").unwrap();
        std::fs::write(d.path().join("secret"), "S").unwrap();
        std::os::unix::fs::symlink("sub/a.csr", root.join("in-link")).unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), root.join("out-abs")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out-rel")).unwrap();
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            root.join("fifo"),
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let r = InputRoot::open(&root).unwrap();
        let read = |v: &str| r.relative(&root, v).and_then(|rel| r.read(&rel, 10));
        assert_eq!(read("sub/a.csr").unwrap(), b"A");
        assert_eq!(read("sub/../sub/./a.csr").unwrap(), b"A");
        assert_eq!(
            read(&root.join("sub/a.csr").display().to_string()).unwrap(),
            b"A"
        );
        assert_eq!(read("in-link").unwrap(), b"A");
        for bad in [
            "../secret",
            "/etc/passwd",
            "out-abs",
            "out-rel",
            "sub/../../secret",
        ] {
            let e = read(bad).unwrap_err().to_string();
            assert!(e.contains("outside the input root"), "{bad}: {e}");
        }
        let e = read("fifo").unwrap_err().to_string();
        assert!(e.contains("FIFO"), "{e}");
        assert!(read("sub").unwrap_err().to_string().contains("directory"));
        assert!(read("nope")
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
        // A wider root allows what the narrow one refused.
        let wide = InputRoot::open(d.path()).unwrap();
        let rel = wide.relative(&root, "../secret").unwrap();
        assert_eq!(wide.read(&rel, 10).unwrap(), b"S");
        assert!(matches!(
            wide.read(&wide.relative(&root, "sub/a.csr").unwrap(), 0),
            Err(ReadError::TooLarge(_))
        ));
    }

    #[test]
    fn without_openat2_every_symlink_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/a.csr"), "A").unwrap();
        std::os::unix::fs::symlink("sub/a.csr", d.path().join("link")).unwrap();
        std::os::unix::fs::symlink("sub", d.path().join("dirlink")).unwrap();
        let r = InputRoot::open(d.path()).unwrap();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        assert!(r.walk(Path::new("sub/a.csr"), flags).is_ok());
        for bad in ["link", "dirlink/a.csr"] {
            let e = r.walk(Path::new(bad), flags).unwrap_err().to_string();
            assert!(e.contains("symbolic link"), "{bad}: {e}");
        }
    }

    #[test]
    fn user_files_refuse_devices_and_fifos_where_asked() {
        let e = read_user_file(Path::new("/dev/zero"), 10, Pipes::Allowed).unwrap_err();
        assert!(e.to_string().contains("character device"), "{e}");
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("f");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o600)).unwrap();
        let e = read_user_file(&fifo, 10, Pipes::Refused).unwrap_err();
        assert!(e.to_string().contains("FIFO"), "{e}");
        assert!(read_user_file(d.path(), 10, Pipes::Refused)
            .unwrap_err()
            .to_string()
            .contains("directory"));
    }
}
