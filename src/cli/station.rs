//! `certfab station`: parses arguments, opens the site, and renders station events for the
//! operator (full screen on a terminal), for logs (one line per device) or for line control
//! software (`--json`: one JSON event per line).

use super::Ctx;
use crate::error::{Error, ExitCode};
use crate::site::station::StationRequest;
use crate::station::protocol::LogLevel;
use crate::station::{AdapterSpec, Event, LogSource, Observer, Outcome, ShiftSummary, Verdict};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

static STOP: AtomicBool = AtomicBool::new(false);

/// `certfab station`
#[derive(Debug, clap::Args)]
pub struct StationArgs {
    /// Device-class profile: a path, or a name in the site's profiles_dir.
    #[arg(long)]
    profile: String,
    /// The station adapter: exec:PROGRAM [ARGS], serial:/dev/ttyX?baud=N or tcp:HOST:PORT.
    #[arg(long)]
    adapter: String,
    /// Who runs the station (recorded with every device). Also CERTFAB_OPERATOR.
    #[arg(long, env = "CERTFAB_OPERATOR")]
    operator: Option<String>,
    /// Handle one device, then exit (0 PASS, 6 FAIL, 3 refused).
    #[arg(long)]
    once: bool,
    /// Give a device that comes back with a different key a new identity (the old
    /// certificate is marked superseded in the ledger).
    #[arg(long)]
    supersede: bool,
    /// When the shift ends, build its signed manifest here (FILE and FILE.jws), as
    /// `certfab manifest build --batch SHIFT --out FILE` would. Checked before the first device.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Also show the adapter's debug and info log lines on stderr (warnings, errors and an
    /// exec adapter's stderr are always shown); at most 256 lines per request.
    #[arg(short, long)]
    verbose: bool,
}

pub(super) fn run(ctx: &Ctx, a: StationArgs) -> Result<ExitCode, Error> {
    let spec: AdapterSpec = a.adapter.parse().map_err(Error::Usage)?;
    let mode = if ctx.json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Screen
    } else {
        Mode::Lines
    };
    let mut ui = Ui {
        mode,
        station: String::new(),
        profile: String::new(),
        operator: a.operator.clone().unwrap_or_else(|| "-".into()),
        adapter: String::new(),
        batch: String::new(),
        device: None,
        step: String::new(),
        last: None,
        failures: VecDeque::new(),
        passed: 0,
        failed: 0,
        started: Instant::now(),
        scanner: None,
        notice: String::new(),
        verbose: a.verbose,
        stderr_tty: std::io::stderr().is_terminal(),
        clock: ctx.site.clock(),
    };
    let ready = || {
        let _ = ctrlc::set_handler(|| {
            if STOP.swap(true, Ordering::SeqCst) {
                eprintln!("\ncertfab: still finishing the current device; it is bounded by the profile's timeouts");
            } else {
                eprintln!("\ncertfab: stopping after the current device…");
            }
        });
    };
    let run = crate::site::station::run(
        &ctx.site,
        StationRequest {
            profile: a.profile,
            adapter: spec,
            adapter_arg: a.adapter,
            operator: a.operator,
            once: a.once,
            supersede: a.supersede,
            manifest: a.manifest,
        },
        &STOP,
        &ready,
        &mut ui,
    )?;
    for n in &run.notices {
        eprintln!("certfab: {n}");
    }
    let summary = &run.summary;
    ui.summary(summary);
    match run.manifest {
        Some(Ok(m)) => ui.manifest(&m),
        Some(Err(e)) => return Err(e),
        None => {}
    }
    Ok(if a.once {
        match ui.last.as_ref().map(|o| o.verdict) {
            Some(Verdict::Pass) => ExitCode::Ok,
            Some(Verdict::Refused) => ExitCode::Rejected,
            Some(Verdict::Fail) => ExitCode::Station,
            None => ExitCode::Ok,
        }
    } else if summary.failed + summary.refused > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Ok
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Screen,
    Lines,
    Json,
}

struct Ui {
    mode: Mode,
    station: String,
    profile: String,
    operator: String,
    adapter: String,
    batch: String,
    device: Option<String>,
    step: String,
    last: Option<Outcome>,
    failures: VecDeque<(String, Outcome)>,
    passed: u64,
    failed: u64,
    started: Instant,
    scanner: Option<Receiver<String>>,
    notice: String,
    verbose: bool,
    stderr_tty: bool,
    clock: std::sync::Arc<dyn crate::clock::Clock>,
}

/// Device ids and adapter texts come from devices: never let them drive the terminal (the one
/// escaping rule, [`crate::text::escape`], on at most 400 characters).
fn clean(s: &str) -> String {
    crate::text::escape(&s.chars().take(400).collect::<String>())
}

fn now_hms(clock: &dyn crate::clock::Clock) -> String {
    let t = clock.now();
    format!("{:02}:{:02}:{:02}Z", t.hour(), t.minute(), t.second())
}

impl Ui {
    fn manifest(&self, m: &crate::manifest::build::BuildOutcome) {
        match self.mode {
            Mode::Json => self.json(serde_json::json!({"event": "manifest", "manifest": m})),
            _ => outln!("{}", super::manifest::built_text(m)),
        }
    }

    /// One line, serialized into memory first: serde_json writes a line in many small pieces,
    /// and each piece written to stdout's line buffer costs a lock and a scan for newlines.
    fn json(&self, v: impl serde::Serialize) {
        let mut line = serde_json::to_vec(&v).unwrap_or_default();
        line.push(b'\n');
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&line);
        let _ = out.flush();
    }

    fn rate(&self) -> f64 {
        let h = self.started.elapsed().as_secs_f64() / 3600.0;
        if h > 0.0 {
            self.passed as f64 / h
        } else {
            0.0
        }
    }

    fn draw(&self) {
        let mut s = String::from("\x1b[H\x1b[2J");
        s.push_str(&format!(
            "\x1b[1m certfab station\x1b[0m  {} · profile {} · operator {} · {}\n",
            clean(&self.station),
            clean(&self.profile),
            clean(&self.operator),
            clean(&self.adapter)
        ));
        s.push_str(&format!(
            " passed \x1b[32m{}\x1b[0m   failed \x1b[31m{}\x1b[0m   rate {:.0}/h   shift {}\n\n",
            self.passed,
            self.failed,
            self.rate(),
            self.batch
        ));
        match &self.device {
            Some(d) => s.push_str(&format!(
                " Device \x1b[1m{}\x1b[0m   {}\n\n",
                clean(d),
                self.step
            )),
            None => s.push_str(&format!(" {}\n\n", self.step)),
        }
        if let Some(o) = &self.last {
            let (word, color) = match o.verdict {
                Verdict::Pass => ("PASS", "\x1b[1;32m"),
                _ => ("FAIL", "\x1b[1;31m"),
            };
            for row in banner(word) {
                s.push_str(&format!(" {color}{row}\x1b[0m\n"));
            }
            s.push_str(&format!(
                "\n {} {}\n\n",
                clean(o.device_id.as_deref().unwrap_or("(no id)")),
                clean(&outcome_words(o))
            ));
        }
        if !self.failures.is_empty() {
            s.push_str(" Last failures:\n");
            for (at, o) in &self.failures {
                s.push_str(&format!(
                    "  {at} {} {}\n",
                    clean(o.device_id.as_deref().unwrap_or("(no id)")),
                    clean(&outcome_words(o))
                ));
            }
        }
        if !self.notice.is_empty() {
            s.push_str(&format!("\n \x1b[33m{}\x1b[0m\n", clean(&self.notice)));
        }
        s.push_str("\n Ctrl-C ends the shift after the current device.\n");
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    fn summary(&self, s: &ShiftSummary) {
        match self.mode {
            Mode::Json => self.json(serde_json::json!({"event": "summary", "summary": s})),
            _ => outln!(
                "shift {}: {} passed ({} without a new certificate), {} failed, {} refused in {:.1}s ({:.0}/h); certfab {:.1} ms/device, device {:.1} ms/device{}\n  ledger {}",
                s.batch,
                s.passed,
                s.reused_certificate,
                s.failed,
                s.refused,
                s.elapsed_s,
                s.rate_per_hour,
                s.certfab_ms_mean,
                s.device_ms_mean,
                if s.end_of_line {
                    "; end of line"
                } else if s.interrupted {
                    "; stopped"
                } else {
                    ""
                },
                s.ledger
            ),
        }
    }
}

fn outcome_words(o: &Outcome) -> String {
    let mut w = match o.verdict {
        Verdict::Pass => o.reason.clone(),
        Verdict::Fail => format!("failed at {}: {}", o.step, o.reason),
        Verdict::Refused => format!("refused at {}: {}", o.step, o.reason),
    };
    if let Some(s) = &o.serial {
        w.push_str(&format!(" (serial {s})"));
    }
    w
}

impl Ui {
    /// Adapter log lines: warnings, errors and an exec adapter's stderr always, debug and info
    /// with `-v`. On the full screen only the latest warning or error is shown, unless stderr
    /// goes elsewhere (`2>file`).
    fn log(&mut self, source: LogSource, text: &str) {
        let (label, important) = match source {
            LogSource::Protocol(level) => (level.as_str(), level >= LogLevel::Warn),
            LogSource::Stderr => ("stderr", true),
        };
        let wanted = important || self.verbose;
        if self.mode == Mode::Screen && self.stderr_tty {
            if matches!(source, LogSource::Protocol(l) if l >= LogLevel::Warn) {
                self.notice = format!("adapter {label}: {text}");
                self.draw();
            }
        } else if wanted {
            eprintln!("adapter {label}: {}", clean(text));
        }
    }
}

/// A `--json` station event, serialized straight from the borrowed values (a device's events
/// were a serde_json map each, about half the instructions of the JSON stage). serde_json
/// sorts the keys of a map (no `preserve_order`), so the events always had their keys in
/// alphabetical order: every struct here declares its fields in that order, which keeps the
/// output byte for byte what it was (pinned by the tests below;
/// docs/station-events.schema.json).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum JsonEvent<'e> {
    Started {
        adapter: &'e str,
        batch: &'e str,
        event: &'static str,
        profile: &'e str,
        station: &'e str,
    },
    Waiting {
        event: &'static str,
        scan: bool,
    },
    Step {
        device_id: Option<&'e str>,
        event: &'static str,
        step: crate::station::Step,
    },
    Notice {
        event: &'static str,
        message: &'e str,
    },
    Device {
        event: &'static str,
        outcome: JsonOutcome<'e>,
    },
}

impl<'e> JsonEvent<'e> {
    /// The line for `e`; None for adapter log lines (stderr only).
    fn of(e: &Event<'e>) -> Option<Self> {
        Some(match *e {
            Event::Started {
                batch,
                adapter,
                station,
                profile,
            } => Self::Started {
                adapter,
                batch,
                event: "started",
                profile,
                station,
            },
            Event::Waiting { scan } => Self::Waiting {
                event: "waiting",
                scan,
            },
            Event::Step { device_id, step } => Self::Step {
                device_id,
                event: "step",
                step,
            },
            Event::Notice(message) => Self::Notice {
                event: "notice",
                message,
            },
            Event::Done(o) => Self::Device {
                event: "device",
                outcome: JsonOutcome::of(o),
            },
            Event::Log { .. } => return None,
        })
    }
}

/// [`Outcome`] with its members in alphabetical order (see [`JsonEvent`]). Built field by
/// field, so a member added to `Outcome` fails to compile here until it is placed.
#[derive(serde::Serialize)]
struct JsonOutcome<'e> {
    certfab_ms: u64,
    certfab_us: u64,
    device_id: Option<&'e str>,
    device_ms: u64,
    device_us: u64,
    reason: &'e str,
    reused_certificate: bool,
    serial: Option<&'e str>,
    step: crate::station::Step,
    superseded: Option<&'e str>,
    verdict: Verdict,
}

impl<'e> JsonOutcome<'e> {
    fn of(o: &'e Outcome) -> Self {
        let Outcome {
            device_id,
            verdict,
            step,
            reason,
            serial,
            reused_certificate,
            superseded,
            device_ms,
            certfab_ms,
            device_us,
            certfab_us,
        } = o;
        Self {
            certfab_ms: *certfab_ms,
            certfab_us: *certfab_us,
            device_id: device_id.as_deref(),
            device_ms: *device_ms,
            device_us: *device_us,
            reason,
            reused_certificate: *reused_certificate,
            serial: serial.as_deref(),
            step: *step,
            superseded: superseded.as_deref(),
            verdict: *verdict,
        }
    }
}

impl Observer for Ui {
    fn event(&mut self, e: Event<'_>) {
        if let Event::Log { source, text } = e {
            self.log(source, text);
            return;
        }
        if self.mode == Mode::Json {
            if let Some(line) = JsonEvent::of(&e) {
                self.json(line);
            }
        }
        match e {
            Event::Started {
                batch,
                adapter,
                station,
                profile,
            } => {
                self.batch = batch.to_string();
                self.adapter = adapter.to_string();
                self.station = station.to_string();
                self.profile = profile.to_string();
                if self.mode == Mode::Lines {
                    outln!(
                        "station {} started: shift {batch}, adapter {}, profile {}",
                        clean(&self.station),
                        clean(adapter),
                        clean(&self.profile)
                    );
                }
            }
            Event::Waiting { scan } => {
                self.device = None;
                self.step = if scan {
                    "Scan the device label…".into()
                } else {
                    "Waiting for a device…".into()
                };
            }
            Event::Step { device_id, step } => {
                self.device = device_id.map(str::to_string);
                self.step = step.to_string();
            }
            Event::Notice(n) => {
                self.notice = n.to_string();
                if self.mode == Mode::Lines {
                    eprintln!("certfab: {}", clean(n));
                }
            }
            Event::Done(o) => {
                if o.verdict == Verdict::Pass {
                    self.passed += 1;
                } else {
                    self.failed += 1;
                    self.failures.push_front((now_hms(&*self.clock), o.clone()));
                    self.failures.truncate(5);
                }
                if self.mode == Mode::Lines {
                    outln!(
                        "{} {} {} [{} ms certfab, {} ms device]",
                        match o.verdict {
                            Verdict::Pass => "PASS",
                            Verdict::Fail => "FAIL",
                            Verdict::Refused => "REFUSED",
                        },
                        clean(o.device_id.as_deref().unwrap_or("(no id)")),
                        clean(&outcome_words(o)),
                        o.certfab_ms,
                        o.device_ms
                    );
                }
                self.last = Some(o.clone());
                self.notice.clear();
            }
            Event::Log { .. } => {}
        }
        if self.mode == Mode::Screen {
            self.draw();
        }
    }

    fn scan(&mut self, stop: &AtomicBool) -> Option<String> {
        let rx = self.scanner.get_or_insert_with(|| {
            // A barcode scanner types the label and Enter; read stdin on a thread so Ctrl-C
            // is noticed while nobody scans.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lines() {
                    let Ok(line) = line else { return };
                    if tx.send(line).is_err() {
                        return;
                    }
                }
            });
            rx
        });
        loop {
            if stop.load(Ordering::SeqCst) {
                return None;
            }
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(l) if l.trim().is_empty() => continue,
                Ok(l) => return Some(l.trim().to_string()),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

/// Five-row block letters, readable across a production hall.
fn banner(word: &str) -> Vec<String> {
    let glyph = |c: char| -> [&'static str; 5] {
        match c {
            'P' => ["████ ", "█   █", "████ ", "█    ", "█    "],
            'A' => [" ███ ", "█   █", "█████", "█   █", "█   █"],
            'S' => [" ████", "█    ", " ███ ", "    █", "████ "],
            'F' => ["█████", "█    ", "████ ", "█    ", "█    "],
            'I' => ["█████", "  █  ", "  █  ", "  █  ", "█████"],
            'L' => ["█    ", "█    ", "█    ", "█    ", "█████"],
            _ => ["     "; 5],
        }
    };
    (0..5)
        .map(|r| {
            word.chars()
                .map(|c| glyph(c)[r])
                .collect::<Vec<_>>()
                .join("  ")
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::station::Step;

    /// The bytes of one line as `Ui::json` writes it.
    fn line(v: impl serde::Serialize) -> String {
        let mut out = serde_json::to_string(&v).unwrap();
        out.push('\n');
        out
    }

    /// Each event kind, byte for byte as the serde_json maps that built them before wrote it.
    #[test]
    fn json_events_keep_their_bytes() {
        let outcome = |serial: Option<&str>, superseded: Option<&str>| Outcome {
            device_id: Some("SIM-0001 \"ü\"\n".into()),
            verdict: Verdict::Refused,
            step: Step::ReadBack,
            reason: "the device holds a different cert.pem\t\u{1b}[2J".into(),
            serial: serial.map(str::to_string),
            reused_certificate: true,
            superseded: superseded.map(str::to_string),
            device_ms: 12,
            certfab_ms: 3,
            device_us: 12_345,
            certfab_us: u64::MAX,
        };
        let full = outcome(Some("01ab"), Some("01cd"));
        let empty = outcome(None, None);
        let cases: Vec<(Event<'_>, serde_json::Value)> = vec![
            (
                Event::Started {
                    batch: "b-1",
                    adapter: "sim/1.0",
                    station: "st\u{0}",
                    profile: "generic-iot",
                },
                serde_json::json!({"event": "started", "batch": "b-1", "adapter": "sim/1.0", "station": "st\u{0}", "profile": "generic-iot"}),
            ),
            (
                Event::Waiting { scan: true },
                serde_json::json!({"event": "waiting", "scan": true}),
            ),
            (
                Event::Waiting { scan: false },
                serde_json::json!({"event": "waiting", "scan": false}),
            ),
            (
                Event::Step {
                    device_id: Some("SIM-0001"),
                    step: Step::GenerateCsr,
                },
                serde_json::json!({"event": "step", "device_id": Some("SIM-0001"), "step": Step::GenerateCsr}),
            ),
            (
                Event::Step {
                    device_id: None,
                    step: Step::Identify,
                },
                serde_json::json!({"event": "step", "device_id": None::<&str>, "step": Step::Identify}),
            ),
            (
                Event::Notice("release: \"x\""),
                serde_json::json!({"event": "notice", "message": "release: \"x\""}),
            ),
            (
                Event::Done(&full),
                serde_json::json!({"event": "device", "outcome": &full}),
            ),
            (
                Event::Done(&empty),
                serde_json::json!({"event": "device", "outcome": &empty}),
            ),
        ];
        for (event, old) in &cases {
            let new = line(JsonEvent::of(event).unwrap());
            assert_eq!(new, format!("{old}\n"), "{event:?}");
        }
        assert!(JsonEvent::of(&Event::Log {
            source: LogSource::Stderr,
            text: "x"
        })
        .is_none());
    }
}
