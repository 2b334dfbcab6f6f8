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

    fn json(&self, v: serde_json::Value) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{v}");
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

impl Observer for Ui {
    fn event(&mut self, e: Event<'_>) {
        if let Event::Log { source, text } = e {
            self.log(source, text);
            return;
        }
        if self.mode == Mode::Json {
            let v = match &e {
                Event::Started {
                    batch,
                    adapter,
                    station,
                    profile,
                } => {
                    serde_json::json!({"event": "started", "batch": batch, "adapter": adapter, "station": station, "profile": profile})
                }
                Event::Waiting { scan } => serde_json::json!({"event": "waiting", "scan": scan}),
                Event::Step { device_id, step } => {
                    serde_json::json!({"event": "step", "device_id": device_id, "step": step})
                }
                Event::Notice(n) => serde_json::json!({"event": "notice", "message": n}),
                Event::Done(o) => serde_json::json!({"event": "device", "outcome": o}),
                Event::Log { .. } => return,
            };
            self.json(v);
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
