//! Records an export keeps per file, off the heap: appended to a scratch temporary in the
//! output directory (never renamed, removed when dropped) or, for an export held in memory
//! anyway, to a buffer; read back forward (the summary, in listing order) or backward (the
//! renames, last finished first). An export of a million devices into bulk bodies of ten
//! writes 100,000 files; what it keeps of each is no longer in memory (issue 14).

use crate::output::{Access, OutDir, StagedFile, WriteError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Each record is framed `[len u32][payload][len u32]`, so it can be read from either end.
pub(super) struct Spool {
    store: Store,
    len: u64,
    count: usize,
}

enum Store {
    Memory(Vec<u8>),
    Scratch(StagedFile),
}

impl Spool {
    /// Records held in memory.
    pub fn memory() -> Self {
        Self {
            store: Store::Memory(Vec::new()),
            len: 0,
            count: 0,
        }
    }

    /// Records written to a scratch temporary in `dir` (owner-only; `what` names it in errors).
    pub fn scratch(dir: &OutDir, what: &str) -> Result<Self, WriteError> {
        Ok(Self {
            store: Store::Scratch(dir.stage_file(what, Access::Secret)?),
            len: 0,
            count: 0,
        })
    }

    /// Appends one record.
    pub fn push(&mut self, payload: &[u8]) -> Result<(), WriteError> {
        let n = u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes();
        for piece in [&n[..], payload, &n[..]] {
            match &mut self.store {
                Store::Memory(v) => v.extend_from_slice(piece),
                Store::Scratch(f) => f.write_all(piece)?,
            }
        }
        self.len += 8 + payload.len() as u64;
        self.count += 1;
        Ok(())
    }

    /// Records appended so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// A reader of the records appended so far (later ones are not seen by it).
    pub fn reader(&mut self) -> Result<Reader, WriteError> {
        let src = match &mut self.store {
            Store::Memory(v) => Src::Memory(Arc::new(v.clone())),
            Store::Scratch(f) => Src::File(Arc::new(f.read_back()?)),
        };
        Ok(Reader {
            src,
            len: self.len,
            count: self.count,
        })
    }
}

/// A snapshot of a [`Spool`]'s records; it stays readable after the spool is dropped (the
/// scratch file is unlinked but still open).
#[derive(Clone)]
pub(super) struct Reader {
    src: Src,
    len: u64,
    count: usize,
}

#[derive(Clone)]
enum Src {
    Memory(Arc<Vec<u8>>),
    File(Arc<std::fs::File>),
}

impl Src {
    fn read_at(&self, buf: &mut [u8], at: u64) -> std::io::Result<()> {
        match self {
            Src::Memory(v) => {
                let start = usize::try_from(at).unwrap_or(usize::MAX);
                let s = v
                    .get(start..start.saturating_add(buf.len()))
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
                buf.copy_from_slice(s);
                Ok(())
            }
            Src::File(f) => f.read_exact_at(buf, at),
        }
    }
}

/// `Read` over a [`Src`] from a position up to an end.
struct At<'a> {
    src: &'a Src,
    pos: u64,
    end: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.end - self.pos).min(buf.len() as u64) as usize;
        self.src.read_at(&mut buf[..n], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Reader {
    /// How many records it holds.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Calls `f` with each record, first to last.
    pub fn forward<E>(
        &self,
        io: impl Fn(std::io::Error) -> E,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut r = std::io::BufReader::with_capacity(
            64 * 1024,
            At {
                src: &self.src,
                pos: 0,
                end: self.len,
            },
        );
        let mut payload = Vec::new();
        for _ in 0..self.count {
            let mut n = [0u8; 4];
            r.read_exact(&mut n).map_err(&io)?;
            payload.resize(u32::from_le_bytes(n) as usize, 0);
            r.read_exact(&mut payload).map_err(&io)?;
            r.read_exact(&mut n).map_err(&io)?;
            f(&payload)?;
        }
        Ok(())
    }

    /// Calls `f` with each record, last to first.
    pub fn backward<E>(
        &self,
        io: impl Fn(std::io::Error) -> E,
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut end = self.len;
        let mut payload = Vec::new();
        for _ in 0..self.count {
            let mut n = [0u8; 4];
            let at = end.checked_sub(4).ok_or_else(corrupt).map_err(&io)?;
            self.src.read_at(&mut n, at).map_err(&io)?;
            let len = u32::from_le_bytes(n) as u64;
            let start = at.checked_sub(len).ok_or_else(corrupt).map_err(&io)?;
            payload.resize(len as usize, 0);
            self.src.read_at(&mut payload, start).map_err(&io)?;
            end = start.checked_sub(4).ok_or_else(corrupt).map_err(&io)?;
            f(&payload)?;
        }
        Ok(())
    }
}

fn corrupt() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, "scratch records cut short")
}

/// Builds a record.
#[derive(Default)]
pub(super) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn bytes(mut self, b: &[u8]) -> Self {
        self = self.u64(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
}

/// Reads a record built with [`Enc`], field by field in the same order.
pub(super) struct Dec<'a>(pub &'a [u8]);

impl Dec<'_> {
    fn take(&mut self, n: usize) -> std::io::Result<&[u8]> {
        if self.0.len() < n {
            return Err(corrupt());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }

    pub fn u64(&mut self) -> std::io::Result<u64> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(b))
    }

    pub fn bytes(&mut self) -> std::io::Result<Vec<u8>> {
        let n = usize::try_from(self.u64()?).map_err(|_| corrupt())?;
        Ok(self.take(n)?.to_vec())
    }

    pub fn string(&mut self) -> std::io::Result<String> {
        String::from_utf8(self.bytes()?).map_err(|_| corrupt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records come back whole in both directions, from memory and from the scratch file,
    /// and the scratch file is gone once the spool is dropped (a reader keeps it open).
    #[test]
    fn records_read_forward_and_backward() {
        let d = tempfile::tempdir().unwrap();
        let dir = OutDir::create(d.path()).unwrap();
        for scratch in [false, true] {
            let mut s = if scratch {
                Spool::scratch(&dir, "x.list").unwrap()
            } else {
                Spool::memory()
            };
            let recs: Vec<Vec<u8>> = (0..3000u64)
                .map(|i| {
                    Enc::default()
                        .u64(i)
                        .bytes(&vec![b'a'; (i % 70) as usize])
                        .0
                })
                .collect();
            for r in &recs {
                s.push(r).unwrap();
            }
            let reader = s.reader().unwrap();
            s.push(b"later").unwrap();
            drop(s);
            assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 0);
            let mut fwd = Vec::new();
            reader
                .forward(
                    |e| e,
                    |p| {
                        fwd.push(p.to_vec());
                        Ok::<_, std::io::Error>(())
                    },
                )
                .unwrap();
            assert_eq!(fwd, recs);
            let mut back = Vec::new();
            reader
                .backward(
                    |e| e,
                    |p| {
                        back.push(p.to_vec());
                        Ok::<_, std::io::Error>(())
                    },
                )
                .unwrap();
            back.reverse();
            assert_eq!(back, recs);
            let mut dec = Dec(&fwd[69]);
            assert_eq!(dec.u64().unwrap(), 69);
            assert_eq!(dec.string().unwrap(), "a".repeat(69));
            assert!(dec.u64().is_err());
        }
    }
}
