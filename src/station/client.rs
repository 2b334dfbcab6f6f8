//! The request/reply side of a station: one request in flight, replies matched by id, every
//! request bounded by the profile's timeout and retried a bounded number of times over a fresh
//! link. Time spent waiting for the adapter is accounted as device time.

use super::link::{AdapterSpec, Incoming, Link, RecvError};
use super::protocol::{self, decode, AdapterError, Frame, Hello, LogBudget, LogLevel, Request};
use crate::profile::StationRules;
use serde::Deserialize;
use std::time::{Duration, Instant};
use zeroize::Zeroize;

/// Why a step did not get a usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StepError {
    /// No reply in time, after every retry.
    #[error("{op}: no reply within {}s ({attempts} attempts)", timeout.as_secs_f32())]
    Timeout {
        op: String,
        /// Per-attempt timeout.
        timeout: Duration,
        /// Attempts made.
        attempts: u32,
    },
    /// The link dropped, after every retry.
    #[error("{op}: {detail}")]
    Lost {
        op: String,
        /// What happened.
        detail: String,
    },
    /// The adapter broke the protocol.
    #[error("{op}: {detail}")]
    Protocol {
        op: String,
        /// What it sent.
        detail: String,
    },
    /// The device answered with an error.
    #[error("{op}: device says {} ({})", err.code, if err.message.is_empty() { "no details" } else { &err.message })]
    Device {
        op: String,
        /// The error reply.
        err: AdapterError,
    },
}

impl StepError {
    /// Whether the request may have reached the device and had an effect we did not see.
    pub fn outcome_unknown(&self) -> bool {
        !matches!(self, Self::Device { .. })
    }
}

/// Where an adapter's diagnostic line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    /// A protocol log line at this level.
    Protocol(LogLevel),
    /// A line of an `exec:` adapter's stderr.
    Stderr,
}

/// Receives adapter log lines (and an exec adapter's stderr), at most
/// [`protocol::MAX_LOG_LINES`] of each per request.
pub type LogSink = Box<dyn FnMut(LogSource, &str) + Send>;

/// A connection to an adapter, re-opened as needed.
pub struct Adapter {
    spec: AdapterSpec,
    station: String,
    link: Option<Link>,
    next_id: u64,
    hello: Option<Hello>,
    device_time: Duration,
    log: LogSink,
    /// The request line being sent, reused from one request to the next; zeroized after an
    /// `install` line, which can carry a host-generated private key (the other requests
    /// carry nothing secret, and zeroizing byte by byte after each cost 33k instructions per
    /// device).
    line: Vec<u8>,
}

impl Adapter {
    /// Opens the link and greets the adapter.
    pub fn connect(
        spec: AdapterSpec,
        station: &str,
        rules: &StationRules,
        log: LogSink,
    ) -> Result<Self, StepError> {
        let mut a = Self {
            spec,
            station: station.into(),
            link: None,
            next_id: 1,
            hello: None,
            device_time: Duration::ZERO,
            log,
            line: Vec::new(),
        };
        // A device may still be booting, or a PTY peer not yet listening: retry the greeting
        // like any other request.
        let mut attempt = 0;
        loop {
            match a.ensure_link(rules) {
                Ok(()) => return Ok(a),
                Err(e @ (StepError::Timeout { .. } | StepError::Lost { .. }))
                    if attempt < rules.retries =>
                {
                    attempt += 1;
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// What the adapter said in `hello`.
    pub fn hello(&self) -> Option<&Hello> {
        self.hello.as_ref()
    }

    /// Whether the adapter offers an optional operation.
    pub fn has(&self, cap: &str) -> bool {
        self.hello
            .as_ref()
            .is_some_and(|h| h.capabilities.iter().any(|c| c == cap))
    }

    /// The time spent waiting for the adapter since the last [`Self::take_device_time`],
    /// without resetting it.
    pub fn device_time(&self) -> Duration {
        self.device_time
    }

    /// Time spent waiting for the adapter since the last call.
    pub fn take_device_time(&mut self) -> Duration {
        std::mem::take(&mut self.device_time)
    }

    fn ensure_link(&mut self, rules: &StationRules) -> Result<(), StepError> {
        if self.link.is_some() {
            return Ok(());
        }
        let link = Link::open(&self.spec).map_err(|detail| StepError::Lost {
            op: "connect".into(),
            detail,
        })?;
        self.link = Some(link);
        let station = self.station.clone();
        let reply = self.exchange(
            &Request::Hello { station: &station },
            rules.timeout("hello"),
            false,
        );
        let hello: Hello = match reply.and_then(|line| {
            decode("hello", &line).map_err(|detail| StepError::Protocol {
                op: "hello".into(),
                detail,
            })
        }) {
            Ok(h) => h,
            Err(e) => {
                self.link = None;
                return Err(e);
            }
        };
        if hello.protocol != protocol::VERSION {
            self.link = None;
            return Err(StepError::Protocol {
                op: "hello".into(),
                detail: format!(
                    "adapter chose protocol {}, certfab speaks {}",
                    hello.protocol,
                    protocol::VERSION
                ),
            });
        }
        self.hello = Some(hello);
        Ok(())
    }

    /// Sends `op` and returns its typed result, retrying per the profile.
    pub fn call<T: for<'de> Deserialize<'de>>(
        &mut self,
        req: &Request<'_>,
        rules: &StationRules,
    ) -> Result<T, StepError> {
        let op = req.op();
        let timeout = rules.timeout(op);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let last = attempt > rules.retries;
            let result = self
                .ensure_link(rules)
                .and_then(|_| self.exchange(req, timeout, true));
            match result {
                Ok(line) => {
                    return decode(op, &line).map_err(|detail| {
                        // Like any protocol violation: the adapter's state is unknown.
                        self.link = None;
                        StepError::Protocol {
                            op: op.into(),
                            detail,
                        }
                    });
                }
                Err(StepError::Device { err, .. })
                    if !last
                        && (err.retry || err.code == "busy" || err.code == "verify_failed") =>
                {
                    std::thread::sleep(Duration::from_millis(100 * u64::from(attempt)));
                }
                Err(StepError::Timeout { .. } | StepError::Lost { .. }) if !last => {
                    // The adapter's state is unknown: start from a fresh link.
                    self.link = None;
                }
                Err(StepError::Timeout { op, timeout, .. }) => {
                    self.link = None;
                    return Err(StepError::Timeout {
                        op,
                        timeout,
                        attempts: attempt,
                    });
                }
                Err(e) => {
                    if !matches!(e, StepError::Device { .. }) {
                        self.link = None;
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Zeroizes the request buffer after a request that can carry a private key.
    fn forget_secret(&mut self, req: &Request<'_>) {
        if matches!(req, Request::Install { .. }) {
            self.line.zeroize();
        }
    }

    /// One request and its reply line on the current link.
    fn exchange(
        &mut self,
        req: &Request<'_>,
        timeout: Duration,
        greeted: bool,
    ) -> Result<Vec<u8>, StepError> {
        let op = req.op();
        let id = self.next_id;
        self.next_id += 1;
        protocol::write_request(&mut self.line, id, req);
        let line = &self.line;
        let Some(link) = self.link.as_mut() else {
            self.forget_secret(req);
            return Err(StepError::Lost {
                op: op.into(),
                detail: "no link".into(),
            });
        };
        let started = Instant::now();
        let deadline = started + timeout;
        // Log lines are part of the protocol and bounded per request; stderr is not, so past
        // its allowance it is only counted.
        let mut logs = LogBudget::default();
        let mut stderr = LogBudget::default();
        let result = (|| {
            link.send(line).map_err(|detail| StepError::Lost {
                op: op.into(),
                detail,
            })?;
            loop {
                match link.recv(deadline) {
                    Ok(Incoming::Line(l)) => match protocol::parse_line(&l, greeted) {
                        Ok(Frame::Reply { id: rid, result }) if rid == id => {
                            return result
                                .map(|()| l)
                                .map_err(|err| StepError::Device { op: op.into(), err })
                        }
                        // A late reply to a request that already timed out.
                        Ok(Frame::Reply { .. }) | Ok(Frame::Noise) => {}
                        Ok(Frame::Log { level, text }) => {
                            if !logs.spend(l.len()) {
                                return Err(StepError::Protocol {
                                    op: op.into(),
                                    detail: LogBudget::violation(),
                                });
                            }
                            (self.log)(LogSource::Protocol(level), &text)
                        }
                        Err(detail) => {
                            return Err(StepError::Protocol {
                                op: op.into(),
                                detail,
                            })
                        }
                    },
                    Ok(Incoming::Stderr(text)) => {
                        if stderr.spend(text.len()) {
                            (self.log)(LogSource::Stderr, &text)
                        }
                    }
                    Ok(Incoming::Closed(detail)) | Err(RecvError::Closed(detail)) => {
                        return Err(StepError::Lost {
                            op: op.into(),
                            detail,
                        })
                    }
                    Err(RecvError::Timeout) => {
                        return Err(StepError::Timeout {
                            op: op.into(),
                            timeout,
                            attempts: 1,
                        })
                    }
                }
            }
        })();
        self.forget_secret(req);
        self.device_time += started.elapsed();
        if stderr.over() > 0 {
            (self.log)(
                LogSource::Stderr,
                &format!(
                    "({} more lines of the adapter's stderr during {op} not shown)",
                    stderr.over()
                ),
            );
        }
        result
    }
}
