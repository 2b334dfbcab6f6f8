//! Station mode: one device after another on the line. For each: identify, check against the
//! ledger and the profile, get a key (device CSR or host keygen), issue through the core
//! pipeline, install, read back, prove, lock, and record the outcome. The protocol is in
//! `protocol` (no I/O), transports in `link`, request/retry handling in `client`, the
//! per-device flow in `device`.

pub mod client;
mod device;
pub mod link;
pub mod protocol;

pub use client::{Adapter, LogSource, StepError};
pub use link::AdapterSpec;

use crate::clock::Clock;
use crate::crypto::Signer;
use crate::issue::IssuingCa;
use crate::ledger::{BatchSpec, Ledger, LedgerError};
use crate::profile::{IdSource, Profile, Prove};
use crate::x509::SerialSource;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What a station run needs.
pub struct StationJob<'a, S: Signer> {
    pub profile: &'a Profile,
    /// The issuing CA (its chain goes into chain.pem and ca.pem).
    pub ca: &'a IssuingCa,
    /// The CA key in the HSM.
    pub signer: &'a S,
    /// Station serial prefix.
    pub serial_prefix: u8,
    /// Issuance and attempt times.
    pub clock: &'a dyn Clock,
    /// Where serials come from.
    pub serials: &'a dyn SerialSource,
    /// Who is at the station.
    pub operator: Option<String>,
    /// Replace the identity of a device that comes back with a different key.
    pub supersede: bool,
    /// Handle one device, then stop.
    pub once: bool,
    /// Set by Ctrl-C: finish the current device, then stop.
    pub stop: &'a AtomicBool,
    /// The adapter argument (for the record).
    pub adapter: String,
}

/// A step of the per-device flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Waiting for a device.
    Wait,
    /// Reading the scanned label. The station reports waiting for a label as `waiting`
    /// with `scan: true`; the step stays in the event schema's list of steps.
    #[allow(dead_code)]
    Scan,
    Identify,
    /// Security state and ledger checks.
    Check,
    /// generate_csr on the device.
    GenerateCsr,
    /// Host key generation.
    Keygen,
    /// Policy, lint, HSM signature, record.
    Issue,
    Install,
    ReadBack,
    Prove,
    Lock,
    Release,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Wait => "waiting for a device",
            Self::Scan => "scan the device label",
            Self::Identify => "identify",
            Self::Check => "check",
            Self::GenerateCsr => "key and CSR on the device",
            Self::Keygen => "host key generation",
            Self::Issue => "sign in the HSM",
            Self::Install => "install",
            Self::ReadBack => "read back",
            Self::Prove => "prove key possession",
            Self::Lock => "lock",
            Self::Release => "release",
        })
    }
}

/// How a device attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Installed and proven.
    Pass,
    /// The device or the link failed; it can be tried again.
    Fail,
    /// Policy, security state or the one-identity rules refuse this device.
    Refused,
}

/// One device attempt, as shown and recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    /// Device id, when known.
    pub device_id: Option<String>,
    /// Result.
    pub verdict: Verdict,
    /// The step it ended at.
    pub step: Step,
    pub reason: String,
    /// Certificate serial, hex.
    pub serial: Option<String>,
    /// Nothing was signed: the device got (or already had) its known certificate.
    pub reused_certificate: bool,
    /// The serial this attempt superseded.
    pub superseded: Option<String>,
    /// Adapter/device time.
    pub device_ms: u64,
    /// certfab's own time.
    pub certfab_ms: u64,
    /// Adapter/device time in microseconds (for means and benchmarks; ms truncate).
    pub device_us: u64,
    /// certfab's own time in microseconds.
    pub certfab_us: u64,
}

/// What the station reports while it runs.
#[derive(Debug)]
pub enum Event<'e> {
    /// The shift started.
    Started {
        /// Shift (batch) id.
        batch: &'e str,
        /// Adapter name/version from hello.
        adapter: &'e str,
        /// This station's id (site config).
        station: &'e str,
        /// The profile's name.
        profile: &'e str,
    },
    /// Waiting for the next device (or its label when `scan`).
    Waiting {
        /// The operator must scan a label.
        scan: bool,
    },
    /// Working on a device.
    Step {
        /// Device id, once known.
        device_id: Option<&'e str>,
        step: Step,
    },
    /// An adapter log line, or a line of an exec adapter's stderr.
    Log {
        /// Where it came from, and its level.
        source: LogSource,
        /// Text, as the adapter sent it.
        text: &'e str,
    },
    /// Something the operator should know that is not a device result.
    Notice(&'e str),
    /// A device finished.
    Done(&'e Outcome),
}

/// Receives [`Event`]s (the CLI renders them).
pub trait Observer {
    /// One event.
    fn event(&mut self, e: Event<'_>);
    /// The next scanned label, or None when the station should stop. Only called for
    /// profiles with `station.device_id: scan`.
    fn scan(&mut self, stop: &AtomicBool) -> Option<String>;
}

/// Why a station stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StationError {
    /// Profile and adapter cannot work together, or bad arguments.
    #[error("{0}")]
    Usage(String),
    /// The adapter cannot be reached or greeted.
    #[error("adapter {adapter}: {err}")]
    Adapter {
        /// The --adapter argument.
        adapter: String,
        err: StepError,
    },
    /// The ledger cannot be written: nothing more is signed.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The HSM failed after recovery: the station stops.
    #[error("{0}")]
    Hsm(crate::issue::IssueError),
}

impl StationError {
    /// The exit code: 2 usage, 6 adapter, 5 ledger, and the token's own code when signing
    /// failed (4 otherwise).
    pub fn exit_code(&self) -> crate::exit::ExitCode {
        match self {
            Self::Usage(_) => crate::exit::ExitCode::Usage,
            Self::Adapter { .. } => crate::exit::ExitCode::Station,
            Self::Ledger(_) => crate::exit::ExitCode::Storage,
            Self::Hsm(crate::issue::IssueError::Sign(s)) => s.exit_code(),
            Self::Hsm(_) => crate::exit::ExitCode::Hsm,
        }
    }
}

/// The end of a shift.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ShiftSummary {
    /// Shift (batch) id.
    pub batch: String,
    /// Devices that passed.
    pub passed: u64,
    /// Of those, devices that needed no new certificate.
    pub reused_certificate: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Attempts refused.
    pub refused: u64,
    /// Seconds.
    pub elapsed_s: f64,
    /// Passed devices per hour.
    pub rate_per_hour: f64,
    /// Mean certfab time per device attempt that reached the HSM (ms).
    pub certfab_ms_mean: f64,
    /// Mean device time per such attempt (ms).
    pub device_ms_mean: f64,
    /// The adapter said no more devices will come.
    pub end_of_line: bool,
    /// Stopped by Ctrl-C/SIGTERM.
    pub interrupted: bool,
    /// Ledger file.
    pub ledger: String,
}

/// Runs the station until the line ends, `--once` is done, or `stop` is set.
pub fn run<S: Signer>(
    job: &StationJob<'_, S>,
    spec: AdapterSpec,
    station_id: &str,
    ledger: &mut Ledger,
    obs: &mut dyn Observer,
) -> Result<ShiftSummary, StationError> {
    let rules = &job.profile.station;
    let device_keys = device_key_types(&job.profile.keys);
    if rules.keygen == crate::profile::KeyGen::Device && device_keys.is_empty() {
        return Err(StationError::Usage(format!(
            "profile '{}' allows no key type a device can generate (p256, p384 or rsa 2048); add one to its keys",
            job.profile.name
        )));
    }
    // Bounded per request by the client (MAX_LOG_LINES), drained at every step.
    let (log_tx, log_rx) = std::sync::mpsc::channel::<(LogSource, String)>();
    let sink: client::LogSink = Box::new(move |source: LogSource, text: &str| {
        let _ = log_tx.send((source, text.to_string()));
    });
    let adapter_name = spec.to_string();
    let adapter =
        Adapter::connect(spec, station_id, rules, sink).map_err(|err| StationError::Adapter {
            adapter: adapter_name.clone(),
            err,
        })?;
    let missing: Vec<&str> = rules
        .required_capabilities()
        .into_iter()
        .filter(|c| !adapter.has(c))
        .collect();
    let hello_name = adapter
        .hello()
        .map(|h| h.adapter.clone())
        .unwrap_or_default();
    if !missing.is_empty() {
        return Err(StationError::Usage(format!(
            "adapter {hello_name} ({adapter_name}) does not offer {} which profile '{}' needs; fix the adapter, or change the profile's station section (e.g. prove: if-supported, read_back: false)",
            missing.join(", "),
            job.profile.name
        )));
    }
    let algorithm = match (
        rules.keygen,
        adapter.hello().and_then(|h| h.key_types.as_ref()),
    ) {
        (crate::profile::KeyGen::Host, _) => None,
        (crate::profile::KeyGen::Device, None) => device_keys.first().copied(),
        (crate::profile::KeyGen::Device, Some(makes)) => {
            let chosen = device_keys
                .iter()
                .find(|k| makes.iter().any(|m| m == *k))
                .copied();
            if chosen.is_none() {
                return Err(StationError::Usage(format!(
                    "adapter {hello_name} ({adapter_name}) makes keys of type {} but profile '{}' allows {}; add one of the adapter's types to the profile's keys, or use station.keygen: host",
                    if makes.is_empty() { "(none)".to_string() } else { makes.join(", ") },
                    job.profile.name,
                    device_keys.join(", ")
                )));
            }
            chosen
        }
    };

    let started = job.clock.now();
    let mut random = [0u8; 8];
    getrandom::getrandom(&mut random).map_err(|e| StationError::Usage(e.to_string()))?;
    let source = serde_json::json!({
        "source": {"kind": "station", "adapter": job.adapter, "operator": job.operator},
        "profile_path": job.profile.path,
    });
    let key = format!(
        "station\n{}\n{}\n{}",
        hex::encode(job.profile.sha256),
        crate::clock::rfc3339(started),
        hex::encode(random)
    );
    let (batch, _) = ledger.ensure_batch(&BatchSpec {
        input_key: hex::encode(crate::crypto::sha256(key.as_bytes())),
        profile: job.profile.name.clone(),
        profile_sha256: hex::encode(job.profile.sha256),
        ca: job.ca.name.clone(),
        source: source.to_string(),
        out_dir: String::new(),
        tenant: job.profile.tenant.clone(),
    })?;
    ledger.station_event(
        &batch.id,
        "station_started",
        &serde_json::json!({"adapter": job.adapter, "adapter_hello": hello_name, "operator": job.operator, "profile": job.profile.name}),
    )?;
    obs.event(Event::Started {
        batch: &batch.id,
        adapter: &hello_name,
        station: station_id,
        profile: &job.profile.name,
    });

    let mut shift = device::Shift {
        job,
        adapter,
        ledger,
        batch: batch.id.clone(),
        host_keys: BTreeMap::new(),
        logs: log_rx,
        algorithm,
        ca_files: device::CaFiles::new(job.ca),
    };
    let t0 = Instant::now();
    let (mut passed, mut reused, mut failed, mut refused) = (0u64, 0u64, 0u64, 0u64);
    let (mut timed, mut certfab_total, mut device_total) = (0u64, 0u64, 0u64);
    let mut end_of_line = false;
    let result = loop {
        if job.stop.load(Ordering::SeqCst) {
            break Ok(());
        }
        let outcome = match shift.next_device(obs) {
            Ok(device::Next::Done(o)) => o,
            Ok(device::Next::EndOfLine) => {
                end_of_line = true;
                break Ok(());
            }
            Ok(device::Next::Stopped) => break Ok(()),
            Err(e) => break Err(e),
        };
        match outcome.verdict {
            Verdict::Pass => {
                passed += 1;
                reused += u64::from(outcome.reused_certificate);
            }
            Verdict::Fail => failed += 1,
            Verdict::Refused => refused += 1,
        }
        if outcome.step >= Step::Issue || outcome.verdict == Verdict::Pass {
            timed += 1;
            certfab_total += outcome.certfab_us;
            device_total += outcome.device_us;
        }
        obs.event(Event::Done(&outcome));
        if job.once {
            break Ok(());
        }
    };
    let elapsed = t0.elapsed().as_secs_f64();
    let summary = ShiftSummary {
        batch: batch.id.clone(),
        passed,
        reused_certificate: reused,
        failed,
        refused,
        elapsed_s: elapsed,
        rate_per_hour: if elapsed > 0.0 {
            passed as f64 * 3600.0 / elapsed
        } else {
            0.0
        },
        certfab_ms_mean: mean(certfab_total, timed) / 1000.0,
        device_ms_mean: mean(device_total, timed) / 1000.0,
        end_of_line,
        interrupted: job.stop.load(Ordering::SeqCst),
        ledger: shift.ledger.location().to_string(),
    };
    let counts: BTreeMap<String, u64> = [
        ("passed".to_string(), passed),
        ("failed".to_string(), failed),
        ("refused".to_string(), refused),
    ]
    .into();
    // Record the end even when a fatal error stops the shift (best effort then).
    let stopped = shift.ledger.station_event(
        &batch.id,
        "station_stopped",
        &serde_json::json!({"counts": counts, "end_of_line": end_of_line,
            "interrupted": summary.interrupted, "error": result.as_ref().err().map(|e| e.to_string())}),
    );
    let finished = stopped.and_then(|()| shift.ledger.finish_batch(&batch.id, &counts));
    result?;
    finished?;
    Ok(summary)
}

fn mean(total: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        total as f64 / n as f64
    }
}

/// The key types a device may be asked to make for this profile, in certfab's order of
/// preference (docs/station-protocol.md `generate_csr`): P-256, P-384, then RSA 2048 when the
/// profile's RSA range includes 2048 bits.
fn device_key_types(keys: &crate::profile::KeyRules) -> Vec<&'static str> {
    let mut v = Vec::new();
    if keys.p256 {
        v.push("p256");
    }
    if keys.p384 {
        v.push("p384");
    }
    if keys
        .rsa
        .is_some_and(|(min, max)| min <= 2048 && 2048 <= max)
    {
        v.push("rsa2048");
    }
    v
}

/// Whether a proof is asked for, given the adapter's capabilities.
fn wants_proof(rules: &crate::profile::StationRules, adapter: &Adapter) -> bool {
    match rules.prove {
        Prove::Required => true,
        Prove::IfSupported => adapter.has("prove"),
        Prove::Skip => false,
    }
}

/// Reads the device id per the profile.
fn device_id_of(
    source: IdSource,
    identity: &protocol::Identity,
    scanned: Option<&str>,
) -> Result<String, String> {
    match (source.field(), scanned) {
        (None, Some(label)) => {
            if let Some(own) = identity.device_id.as_deref() {
                if own != label {
                    return Err(format!(
                        "wrong label: scanned {label:?} but the device says it is {own:?}"
                    ));
                }
            }
            Ok(label.to_string())
        }
        (Some(field), _) => identity
            .field(field)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
            .ok_or_else(|| {
                format!("the device did not report {field}, which the profile takes the device id from (station.device_id)")
            }),
        (None, None) => Err("no label was scanned".into()),
    }
}

/// How long one `wait_device` asks the adapter to wait.
const WAIT_POLL: Duration = Duration::from_secs(2);
/// Consecutive failed `wait_device` calls (each already retried) before the station gives up
/// on the adapter: a fixture that cannot even report presence needs a person.
const WAIT_FAILURES: u32 = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_key_types_follow_the_profile_in_certfabs_order() {
        let keys = |p256, p384, rsa| crate::profile::KeyRules {
            p256,
            p384,
            ed25519: true,
            rsa,
        };
        assert_eq!(
            device_key_types(&keys(true, true, Some((2048, 8192)))),
            ["p256", "p384", "rsa2048"]
        );
        assert_eq!(device_key_types(&keys(false, true, None)), ["p384"]);
        // RSA only when 2048 bits are allowed; Ed25519 is not a type devices are asked for.
        assert!(device_key_types(&keys(false, false, Some((3072, 4096)))).is_empty());
    }

    #[test]
    fn device_ids() {
        let id = protocol::Identity {
            device_id: Some("SIM-1".into()),
            hw_serial: Some("AB".into()),
            ..Default::default()
        };
        assert_eq!(device_id_of(IdSource::HwSerial, &id, None).unwrap(), "AB");
        assert_eq!(
            device_id_of(IdSource::Scan, &id, Some("SIM-1")).unwrap(),
            "SIM-1"
        );
        assert!(device_id_of(IdSource::Scan, &id, Some("SIM-2"))
            .unwrap_err()
            .contains("wrong label"));
        assert!(device_id_of(IdSource::Mac, &id, None).is_err());
    }
}
