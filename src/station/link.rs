//! Transports: `exec:`, `serial:` and `tcp:` move lines of bytes and nothing else. A reader
//! thread splits the incoming stream into lines (bounded) and hands them over a channel, so
//! the client can wait with a deadline on any transport alike.

use super::protocol::LineBuffer;
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the adapter is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdapterSpec {
    /// Spawn a program and talk over its stdin/stdout.
    Exec {
        program: String,
        /// Arguments (split on whitespace).
        args: Vec<String>,
    },
    /// A serial port.
    Serial {
        /// Device path.
        path: String,
        /// Baud rate.
        baud: u32,
    },
    /// A TCP server.
    Tcp {
        /// host:port.
        addr: String,
    },
}

impl std::str::FromStr for AdapterSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(cmd) = s.strip_prefix("exec:") {
            let mut parts = cmd.split_whitespace().map(str::to_string);
            let program = parts
                .next()
                .ok_or("--adapter exec: needs a program, e.g. exec:station-scripts/sim-device.py serve LINE")?;
            Ok(Self::Exec {
                program,
                args: parts.collect(),
            })
        } else if let Some(rest) = s.strip_prefix("serial:") {
            let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
            if path.is_empty() {
                return Err(
                    "--adapter serial: needs a port, e.g. serial:/dev/ttyUSB0?baud=115200".into(),
                );
            }
            let mut baud = 115_200;
            for kv in query.split('&').filter(|x| !x.is_empty()) {
                match kv.split_once('=') {
                    Some(("baud", n)) => {
                        baud = n
                            .parse()
                            .map_err(|_| format!("--adapter {s}: baud '{n}' is not a number"))?
                    }
                    _ => {
                        return Err(format!(
                            "--adapter {s}: unknown option '{kv}'; only baud=N is understood"
                        ))
                    }
                }
            }
            Ok(Self::Serial {
                path: path.into(),
                baud,
            })
        } else if let Some(addr) = s.strip_prefix("tcp:") {
            if !addr.contains(':') {
                return Err(format!(
                    "--adapter {s}: write tcp:HOST:PORT, e.g. tcp:127.0.0.1:7070"
                ));
            }
            Ok(Self::Tcp { addr: addr.into() })
        } else {
            Err(format!(
                "--adapter '{s}' is not understood; use exec:PROGRAM [ARGS], serial:/dev/ttyX?baud=N or tcp:HOST:PORT"
            ))
        }
    }
}

impl std::fmt::Display for AdapterSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exec { program, args } => write!(f, "exec:{program} {}", args.join(" ")),
            Self::Serial { path, baud } => write!(f, "serial:{path}?baud={baud}"),
            Self::Tcp { addr } => write!(f, "tcp:{addr}"),
        }
    }
}

/// Lines handed from the reader threads to the client at most: a bounded queue, so an
/// adapter that writes faster than certfab reads is held back by the pipe or socket instead
/// of growing certfab's memory (at most this many lines of at most `MAX_LINE` bytes).
const QUEUE: usize = 16;
/// Longest stderr line kept; the rest of the line is dropped.
const STDERR_LINE: usize = 1000;

/// What the reader threads deliver.
#[derive(Debug)]
pub enum Incoming {
    /// A protocol line.
    Line(Vec<u8>),
    /// A line of the adapter program's stderr.
    Stderr(String),
    /// The stream ended or broke.
    Closed(String),
}

/// Why no line came.
#[derive(Debug)]
pub enum RecvError {
    /// The deadline passed.
    Timeout,
    /// The link is gone.
    Closed(String),
}

/// An open connection to an adapter.
pub struct Link {
    writer: Box<dyn Write + Send>,
    rx: Receiver<Incoming>,
    child: Option<Child>,
    stop: Arc<AtomicBool>,
}

impl Link {
    /// Opens the transport. An `exec:` adapter dies with the thread that calls this (see
    /// [`crate::process::die_with_parent`]): call it from the thread that uses the link.
    pub fn open(spec: &AdapterSpec) -> Result<Self, String> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        match spec {
            AdapterSpec::Exec { program, args } => {
                use std::os::unix::process::CommandExt;
                let mut cmd = Command::new(program);
                cmd.args(args)
                    // Its own process group: the operator's Ctrl-C reaches certfab, which
                    // finishes the device, and not the adapter in the middle of an install.
                    .process_group(0)
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped());
                // No PIN, passphrase or token config in its environment, and it does not
                // outlive certfab (docs/station-protocol.md "Environment").
                crate::process::scrub_env(&mut cmd);
                crate::process::die_with_parent(&mut cmd);
                let mut child = cmd
                    .spawn()
                    .map_err(|e| format!("cannot start adapter {program}: {e}"))?;
                let stdin = child.stdin.take().ok_or("adapter stdin unavailable")?;
                let stdout = child.stdout.take().ok_or("adapter stdout unavailable")?;
                if let Some(stderr) = child.stderr.take() {
                    let tx = tx.clone();
                    std::thread::spawn(move || forward_stderr(stderr, tx));
                }
                reader(stdout, tx, stop.clone());
                Ok(Self {
                    writer: Box::new(stdin),
                    rx,
                    child: Some(child),
                    stop,
                })
            }
            AdapterSpec::Serial { path, baud } => {
                let port = serialport::new(path, *baud)
                    .timeout(Duration::from_millis(100))
                    .open()
                    .map_err(|e| format!("cannot open serial port {path}: {e}"))?;
                let read = port
                    .try_clone()
                    .map_err(|e| format!("serial port {path}: {e}"))?;
                reader(read, tx, stop.clone());
                Ok(Self {
                    writer: Box::new(port),
                    rx,
                    child: None,
                    stop,
                })
            }
            AdapterSpec::Tcp { addr } => {
                let sock = std::net::TcpStream::connect(addr)
                    .map_err(|e| format!("cannot connect to adapter at {addr}: {e}"))?;
                let _ = sock.set_nodelay(true);
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .map_err(|e| format!("{addr}: {e}"))?;
                let read = sock.try_clone().map_err(|e| format!("{addr}: {e}"))?;
                reader(read, tx, stop.clone());
                Ok(Self {
                    writer: Box::new(sock),
                    rx,
                    child: None,
                    stop,
                })
            }
        }
    }

    /// Sends one request line.
    pub fn send(&mut self, line: &[u8]) -> Result<(), String> {
        self.writer
            .write_all(line)
            .and_then(|_| self.writer.flush())
            .map_err(|e| format!("cannot write to the adapter: {e}"))
    }

    /// The next incoming item before `deadline`.
    pub fn recv(&self, deadline: Instant) -> Result<Incoming, RecvError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(left) {
            Ok(i) => Ok(i),
            Err(RecvTimeoutError::Timeout) => Err(RecvError::Timeout),
            Err(RecvTimeoutError::Disconnected) => {
                Err(RecvError::Closed("the adapter link closed".into()))
            }
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Reads lines until EOF, an error, or `stop`; timeouts of serial/TCP reads only re-check
/// `stop`, so dropping the link ends the thread.
fn reader<R: Read + Send + 'static>(mut r: R, tx: SyncSender<Incoming>, stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let mut lines = LineBuffer::default();
        let mut buf = [0u8; 8192];
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            match r.read(&mut buf) {
                Ok(0) => {
                    let _ = tx.send(Incoming::Closed("the adapter closed the connection".into()));
                    return;
                }
                Ok(n) => {
                    lines.push(&buf[..n]);
                    loop {
                        match lines.next_line() {
                            Ok(Some(l)) => {
                                if tx.send(Incoming::Line(l)).is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                let _ = tx.send(Incoming::Closed(e));
                                return;
                            }
                        }
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    let _ = tx.send(Incoming::Closed(format!("reading from the adapter: {e}")));
                    return;
                }
            }
        }
    });
}

/// Forwards stderr line by line, keeping at most [`STDERR_LINE`] bytes of each: a line
/// without an end is never held whole.
fn forward_stderr<R: Read>(r: R, tx: SyncSender<Incoming>) {
    use std::io::BufRead;
    let mut r = std::io::BufReader::new(r);
    let mut line = Vec::new();
    loop {
        let buf = match r.fill_buf() {
            Ok([]) => return,
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        };
        let end = buf.iter().position(|&b| b == b'\n');
        let chunk = &buf[..end.unwrap_or(buf.len())];
        let room = STDERR_LINE.saturating_sub(line.len());
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = end.map_or(buf.len(), |i| i + 1);
        r.consume(used);
        if end.is_some() {
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            line.clear();
            if tx.send(Incoming::Stderr(text)).is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            "exec:station-scripts/sim-device.py serve /tmp/line".parse::<AdapterSpec>(),
            Ok(AdapterSpec::Exec {
                program: "station-scripts/sim-device.py".into(),
                args: vec!["serve".into(), "/tmp/line".into()]
            })
        );
        assert_eq!(
            "serial:/dev/ttyUSB0?baud=9600".parse::<AdapterSpec>(),
            Ok(AdapterSpec::Serial {
                path: "/dev/ttyUSB0".into(),
                baud: 9600
            })
        );
        assert_eq!(
            "serial:/dev/ttyACM0"
                .parse::<AdapterSpec>()
                .map(|s| s.to_string()),
            Ok("serial:/dev/ttyACM0?baud=115200".into())
        );
        assert!("serial:/dev/x?parity=odd".parse::<AdapterSpec>().is_err());
        assert!("tcp:localhost".parse::<AdapterSpec>().is_err());
        assert!("usb:1".parse::<AdapterSpec>().is_err());
        assert!("exec:".parse::<AdapterSpec>().is_err());
    }
}
