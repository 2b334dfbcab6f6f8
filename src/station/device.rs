//! The per-device flow (docs/station-protocol.md "The flow certfab runs per device").

use super::protocol::{
    self, CsrReply, Identity, InstallFile, Locked, Presence, Proof, ReadBack, Request,
};
use super::{
    device_id_of, wants_proof, Adapter, Event, LogSource, Observer, Outcome, StationError,
    StationJob, Step, StepError, Verdict, WAIT_FAILURES, WAIT_POLL,
};
use crate::crypto::Signer;
use crate::issue::record::{self, RecordError};
use crate::issue::{self, IssueContext, IssueError, KeySource};
use crate::ledger::{Attempt, DeviceRow, DeviceState, KeyOrigin, Ledger, StateChange};
use crate::profile::{IdSource, InstallItem, KeyGen, Vars};
use base64::Engine;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::Instant;
use zeroize::Zeroizing;

/// What the next device turned out to be.
pub(super) enum Next {
    /// A device was handled.
    Done(Outcome),
    /// The adapter has no more devices.
    EndOfLine,
    /// Ctrl-C while waiting.
    Stopped,
}

/// A shift in progress.
pub(super) struct Shift<'j, 'l, S: Signer> {
    pub job: &'j StationJob<'j, S>,
    pub adapter: Adapter,
    pub ledger: &'l mut Ledger,
    pub batch: String,
    /// Host-generated keys whose install is not confirmed yet: the same key (and certificate)
    /// goes to the device when it comes back during this shift.
    pub host_keys: BTreeMap<String, Zeroizing<String>>,
    pub logs: Receiver<(LogSource, String)>,
    /// The key type `generate_csr` asks for: the profile's first that the adapter makes
    /// (None with host keygen).
    pub algorithm: Option<&'static str>,
    /// The CA part of every device's chain.pem and the ca.pem, encoded once per shift.
    pub ca_files: CaFiles,
}

/// The install files that are the same for every device of a shift.
pub(super) struct CaFiles {
    /// The issuing CA and the intermediates above it (chain.pem after the leaf).
    chain_tail: String,
    /// The root when the chain ends in one, else the issuing CA.
    ca_pem: String,
}

impl CaFiles {
    pub(super) fn new(ca: &crate::issue::IssuingCa) -> Self {
        let root = ca
            .chain
            .last()
            .filter(|c| c.is_self_signed())
            .unwrap_or(&ca.cert);
        Self {
            chain_tail: ca.cert.device_chain_pem(&ca.chain, false),
            ca_pem: root.pem(),
        }
    }
}

/// How a device attempt stops early.
enum Stop {
    /// Ends the attempt with this verdict.
    End(Verdict, Step, String),
    /// Ends the station.
    Fatal(StationError),
}

impl From<crate::ledger::LedgerError> for Stop {
    fn from(e: crate::ledger::LedgerError) -> Self {
        Self::Fatal(e.into())
    }
}

fn fail(step: Step, e: impl std::fmt::Display) -> Stop {
    Stop::End(Verdict::Fail, step, e.to_string())
}

fn refuse(step: Step, e: impl std::fmt::Display) -> Stop {
    Stop::End(Verdict::Refused, step, e.to_string())
}

/// A file for `install`, with its hash worked out once: `install` sends it and `read_back`
/// compares the device's against it.
struct FileOut {
    name: &'static str,
    kind: &'static str,
    content: Zeroizing<String>,
    sha256: String,
}

impl FileOut {
    fn new(name: &'static str, kind: &'static str, content: Zeroizing<String>) -> Self {
        let sha256 = hex::encode(crate::crypto::sha256(content.as_bytes()));
        Self {
            name,
            kind,
            content,
            sha256,
        }
    }
}

/// What the attempt has established so far.
#[derive(Default)]
struct Progress {
    device_id: Option<String>,
    serial: Option<String>,
    reused: bool,
    superseded: Option<String>,
    /// The device's state at the end of the attempt, committed in the same transaction as
    /// the attempt row, before the verdict is shown or released to the fixture.
    pending: Option<StateChange>,
}

impl<S: Signer> Shift<'_, '_, S> {
    fn rules(&self) -> &crate::profile::StationRules {
        &self.job.profile.station
    }

    fn step(&mut self, obs: &mut dyn Observer, p: &Progress, step: Step) {
        self.drain_logs(obs);
        obs.event(Event::Step {
            device_id: p.device_id.as_deref(),
            step,
        });
    }

    fn drain_logs(&mut self, obs: &mut dyn Observer) {
        while let Ok((source, text)) = self.logs.try_recv() {
            obs.event(Event::Log {
                source,
                text: &text,
            });
        }
    }

    fn call<T: for<'de> serde::Deserialize<'de>>(
        &mut self,
        step: Step,
        req: Request<'_>,
    ) -> Result<T, (Step, StepError)> {
        let rules = &self.job.profile.station;
        self.adapter.call(&req, rules).map_err(|e| (step, e))
    }

    /// Waits for a device and runs one attempt.
    pub(super) fn next_device(&mut self, obs: &mut dyn Observer) -> Result<Next, StationError> {
        let scan = self.rules().device_id == IdSource::Scan;
        obs.event(Event::Waiting { scan });
        let label = if scan {
            match obs.scan(self.job.stop) {
                Some(l) => Some(l),
                None => return Ok(Next::Stopped),
            }
        } else {
            None
        };
        if self.adapter.has("wait_device") {
            let mut failures = 0;
            loop {
                if self.job.stop.load(Ordering::SeqCst) {
                    return Ok(Next::Stopped);
                }
                let timeout_ms = WAIT_POLL.as_millis() as u64;
                let presence =
                    self.call::<Presence>(Step::Wait, Request::WaitDevice { timeout_ms });
                // A line can wait for hours: show what the adapter said while waiting now.
                self.drain_logs(obs);
                match presence {
                    Ok(p) if p.present => break,
                    Ok(p) if p.end => return Ok(Next::EndOfLine),
                    Ok(_) => {}
                    Err((_, e)) => {
                        failures += 1;
                        if failures >= WAIT_FAILURES {
                            return Err(StationError::Adapter {
                                adapter: self.job.adapter.clone(),
                                err: e,
                            });
                        }
                        obs.event(Event::Notice(&format!(
                            "waiting for a device: {e}; retrying"
                        )));
                        std::thread::sleep(WAIT_POLL);
                    }
                }
            }
        }
        // Device time counts from here: waiting for an operator is not the device's time.
        self.adapter.take_device_time();
        let t0 = Instant::now();
        let started_at = crate::clock::rfc3339(self.job.clock.now());
        let mut p = Progress::default();
        let result = self.attempt(obs, &mut p, label.as_deref());
        let (verdict, step, reason) = match result {
            Ok(reason) => (Verdict::Pass, Step::Release, reason),
            Err(Stop::End(v, s, r)) => (v, s, r),
            Err(Stop::Fatal(e)) => {
                // Record what we know, tell the fixture, then stop the station.
                let _ = self.finish(
                    obs,
                    &p,
                    Verdict::Fail,
                    Step::Issue,
                    &e.to_string(),
                    &started_at,
                    t0,
                );
                return Err(e);
            }
        };
        let outcome = self.finish(obs, &p, verdict, step, &reason, &started_at, t0)?;
        Ok(Next::Done(outcome))
    }

    /// Releases the device and records the attempt.
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &mut self,
        obs: &mut dyn Observer,
        p: &Progress,
        verdict: Verdict,
        step: Step,
        reason: &str,
        started_at: &str,
        t0: Instant,
    ) -> Result<Outcome, StationError> {
        let step_name = serde_json::to_value(step)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let outcome_name = match verdict {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Refused => "refused",
        };
        // The attempt row and the device's final state are one durable commit, made before
        // the verdict reaches the fixture (`release`) or the screen: a PASS is never shown for
        // a device whose `installed` state could still be lost. Its times therefore end here;
        // the `device` event's times also count this commit and `release`.
        self.drain_logs(obs);
        let device_so_far = self.adapter.device_time();
        let so_far = t0.elapsed();
        self.ledger.record_attempt_with(
            &Attempt {
                batch_id: self.batch.clone(),
                operator: self.job.operator.clone(),
                profile: self.job.profile.name.clone(),
                device_id: p.device_id.clone(),
                started_at: started_at.to_string(),
                finished_at: crate::clock::rfc3339(self.job.clock.now()),
                outcome: outcome_name.into(),
                step: step_name,
                reason: reason.to_string(),
                serial: p.serial.clone(),
                device_ms: device_so_far.as_millis() as u64,
                certfab_ms: so_far.saturating_sub(device_so_far).as_millis() as u64,
            },
            p.pending.as_ref(),
        )?;
        if self.adapter.has("release") {
            self.step(obs, p, Step::Release);
            let result = if verdict == Verdict::Pass {
                "pass"
            } else {
                "fail"
            };
            if let Err((_, e)) = self.call::<serde::de::IgnoredAny>(
                Step::Release,
                Request::Release {
                    result,
                    message: reason,
                },
            ) {
                obs.event(Event::Notice(&format!("release: {e}")));
            }
        }
        self.drain_logs(obs);
        let device = self.adapter.take_device_time();
        let total = t0.elapsed();
        Ok(Outcome {
            device_id: p.device_id.clone(),
            verdict,
            step,
            reason: reason.to_string(),
            serial: p.serial.clone(),
            reused_certificate: p.reused,
            superseded: p.superseded.clone(),
            device_ms: device.as_millis() as u64,
            certfab_ms: total.saturating_sub(device).as_millis() as u64,
            device_us: device.as_micros() as u64,
            certfab_us: total.saturating_sub(device).as_micros() as u64,
        })
    }

    /// One device, from identify to a verdict. `Ok` carries the PASS reason.
    fn attempt(
        &mut self,
        obs: &mut dyn Observer,
        p: &mut Progress,
        label: Option<&str>,
    ) -> Result<String, Stop> {
        self.step(obs, p, Step::Identify);
        let identity: Identity = self
            .call(Step::Identify, Request::Identify)
            .map_err(|(s, e)| fail(s, e))?;
        let device_id = device_id_of(self.rules().device_id, &identity, label)
            .map_err(|e| refuse(Step::Identify, e))?;
        p.device_id = Some(device_id.clone());
        self.step(obs, p, Step::Check);
        let bad = identity.security_violations(&self.rules().require_security);
        if !bad.is_empty() {
            let words: Vec<String> = bad
                .iter()
                .map(|(k, want, got)| match got {
                    Some(g) => format!("{k} is {g}, the profile requires {want}"),
                    None => format!("{k} is not reported, the profile requires {want}"),
                })
                .collect();
            return Err(refuse(
                Step::Check,
                format!("security state refused: {}", words.join("; ")),
            ));
        }
        let row = self.ledger.device(&self.job.profile.name, &device_id)?;
        match row {
            Some(row) if row.state == DeviceState::Revoked => Err(refuse(
                Step::Check,
                format!("device {device_id} is revoked; it gets no new identity at a station"),
            )),
            Some(row)
                if row.der.is_some()
                    && !matches!(row.state, DeviceState::SignFailed | DeviceState::Superseded) =>
            {
                self.known_device(obs, p, &device_id, &identity, row)
            }
            _ => self.new_identity(obs, p, &device_id, &identity),
        }
    }

    /// A device the ledger already has a certificate for.
    fn known_device(
        &mut self,
        obs: &mut dyn Observer,
        p: &mut Progress,
        device_id: &str,
        identity: &Identity,
        row: DeviceRow,
    ) -> Result<String, Stop> {
        let der = row.der.clone().unwrap_or_default();
        p.serial = row.serial.clone();
        let files = self
            .files(&der, device_id, identity, None)
            .map_err(|e| refuse(Step::Check, e))?;
        // 1. Does the device already hold exactly this certificate (and its key)? `held`: it
        // stores exactly these files, but the proof or the lock after the read-back failed.
        let mut held = None;
        if self.rules().read_back && self.read_back(obs, p, &files, false).is_ok() {
            match self.prove_and_lock(obs, p, &der) {
                Ok(()) => {
                    p.reused = true;
                    if row.state.is_proven() {
                        return Ok(
                            "already installed: nothing signed, the device holds its certificate"
                                .into(),
                        );
                    }
                    p.pending = Some(StateChange {
                        to: DeviceState::Installed,
                        kind: "installed",
                        detail: json!({"serial": p.serial, "operator": self.job.operator, "confirmed_later": true}),
                    });
                    return Ok(
                        "install confirmed: the device holds the certificate issued earlier".into(),
                    );
                }
                Err(stop) => held = Some(stop),
            }
        }
        // 2. Which key does the device hold now?
        let host_key = self.host_keys.get(device_id).cloned();
        let current = match &host_key {
            Some(k) => Some(spki_of_pkcs8(k).map_err(|e| fail(Step::Check, e))?),
            None => self.current_key(obs, p, identity)?,
        };
        let same = current
            .as_ref()
            .is_some_and(|spki| hex::encode(crate::crypto::sha256(spki)) == row.spki_sha256);
        if same {
            if let (Some(stop), None) = (held, &host_key) {
                // It stores exactly the files certfab would send, so sending them again cannot
                // make the proof or the lock succeed.
                return Err(match stop {
                    Stop::End(v, Step::Prove, r) => Stop::End(
                        v,
                        Step::Prove,
                        format!(
                            "{r}; the device stores certificate serial {} and reports its key but cannot sign with it (a damaged key slot, or a device posing as {device_id}); the ledger record is unchanged",
                            row.serial.as_deref().unwrap_or("?")
                        ),
                    ),
                    other => other,
                });
            }
            p.reused = true;
            let files = self
                .files(&der, device_id, identity, host_key.as_ref())
                .map_err(|e| refuse(Step::Check, e))?;
            self.install(obs, p, device_id, &der, &files, false)?;
            self.host_keys.remove(device_id);
            return Ok(
                "installed the certificate issued earlier (same key, nothing signed)".into(),
            );
        }
        let what = match current {
            Some(_) => "a different key",
            None if self.rules().keygen == KeyGen::Host => {
                "no key certfab can confirm (host keys are kept only in memory until installed)"
            }
            None => "no key",
        };
        if !self.job.supersede {
            return Err(refuse(
                Step::Check,
                format!(
                    "device {device_id} already has certificate serial {} ({}) but now holds {what}; run with --supersede to replace its identity",
                    row.serial.as_deref().unwrap_or("?"),
                    row.state
                ),
            ));
        }
        let old = self.ledger.supersede(
            &self.batch,
            &self.job.profile.name,
            device_id,
            &format!("station --supersede: device holds {what}"),
            self.job.operator.as_deref(),
        )?;
        p.superseded = old;
        p.reused = false;
        self.new_identity(obs, p, device_id, identity).map(|r| {
            format!(
                "{r}; superseded serial {}",
                p.superseded.as_deref().unwrap_or("?")
            )
        })
    }

    /// The public key the device holds now (identify.key, else a CSR for the existing key).
    fn current_key(
        &mut self,
        obs: &mut dyn Observer,
        p: &Progress,
        identity: &Identity,
    ) -> Result<Option<Vec<u8>>, Stop> {
        if let Some(spki) = identity.spki().map_err(|e| fail(Step::Identify, e))? {
            return Ok(Some(spki));
        }
        if self.rules().keygen == KeyGen::Host || !self.adapter.has("generate_csr") {
            return Ok(None);
        }
        self.step(obs, p, Step::GenerateCsr);
        let reply: Result<CsrReply, _> = self.call(
            Step::GenerateCsr,
            Request::GenerateCsr {
                new_key: false,
                algorithm: self.algorithm,
                cn: p.device_id.as_deref(),
            },
        );
        match reply {
            Ok(r) => {
                let bytes = r.bytes().map_err(|e| fail(Step::GenerateCsr, e))?;
                // Proof of possession: the device signed this CSR with the key it holds.
                let csr = crate::csr::parse_csr(&bytes).map_err(|e| fail(Step::GenerateCsr, e))?;
                Ok(Some(csr.public_key.spki_der().to_vec()))
            }
            Err((_, StepError::Device { err, .. })) if err.code == "no_key" => Ok(None),
            Err((s, e)) => Err(fail(s, e)),
        }
    }

    /// Key, issuance, install for a device without a live identity.
    fn new_identity(
        &mut self,
        obs: &mut dyn Observer,
        p: &mut Progress,
        device_id: &str,
        identity: &Identity,
    ) -> Result<String, Stop> {
        let (key, host_key) = match self.rules().keygen {
            KeyGen::Device => {
                self.step(obs, p, Step::GenerateCsr);
                let r: CsrReply = self
                    .call(
                        Step::GenerateCsr,
                        Request::GenerateCsr {
                            new_key: true,
                            algorithm: self.algorithm,
                            cn: Some(device_id),
                        },
                    )
                    .map_err(|(s, e)| fail(s, e))?;
                (
                    KeySource::Csr(r.bytes().map_err(|e| fail(Step::GenerateCsr, e))?),
                    None,
                )
            }
            KeyGen::Host => {
                self.step(obs, p, Step::Keygen);
                let (spki, pem) = host_keygen().map_err(|e| fail(Step::Keygen, e))?;
                (KeySource::PublicKey(spki), Some(pem))
            }
        };
        self.step(obs, p, Step::Issue);
        let ictx = IssueContext {
            profile: self.job.profile,
            ca: &self.job.ca.cert,
            signature: self.job.signer.algorithm(),
            serial_prefix: self.job.serial_prefix,
            now: crate::clock::whole_seconds(self.job.clock.now()),
            serials: self.job.serials,
        };
        let req = issue::Request {
            device_id: Some(device_id.to_string()),
            key,
            vars: identity.template_values(),
        };
        let mut prepared = issue::prepare(&ictx, &req).map_err(|e| match e {
            IssueError::Policy(_) | IssueError::Lint(_) | IssueError::Build(_) => {
                refuse(Step::Issue, format!("refused by policy: {e}"))
            }
            other => Stop::Fatal(StationError::Hsm(other)),
        })?;
        prepared.key_origin = if host_key.is_some() {
            KeyOrigin::Host
        } else {
            KeyOrigin::Device
        };
        // The new certificate and `installing` are one commit: nothing happens between them
        // but building the files, and the certificate leaves the process only in `install`.
        let installing = self.installing(&hex::encode(&prepared.serial));
        let recorded = record::issue_one_then(
            self.ledger,
            &self.batch,
            0,
            self.job.profile,
            &self.job.ca.cert,
            prepared,
            self.job.signer,
            Some(&installing),
        )
        .map_err(|e| match e {
            RecordError::Refused(r) => refuse(Step::Issue, r),
            RecordError::Ledger(l) => Stop::Fatal(l.into()),
            RecordError::Sign(s) => Stop::Fatal(StationError::Hsm(s)),
        })?;
        let (der, already) = (recorded.der, recorded.already);
        p.serial = serial_of(&der);
        p.reused = already;
        if let Some(k) = &host_key {
            self.host_keys.insert(device_id.to_string(), k.clone());
        }
        let files = match self.files(&der, device_id, identity, host_key.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                if !already {
                    // Committed as `installing` with the certificate, but nothing was sent.
                    p.pending = Some(StateChange {
                        to: DeviceState::Signed,
                        kind: "install_failed",
                        detail: json!({"serial": p.serial, "reason": e, "operator": self.job.operator}),
                    });
                }
                return Err(refuse(Step::Check, e));
            }
        };
        self.install(obs, p, device_id, &der, &files, !already)?;
        self.host_keys.remove(device_id);
        Ok("installed and proven".into())
    }

    /// The files the profile installs, rendered for this device.
    fn files(
        &self,
        der: &[u8],
        device_id: &str,
        identity: &Identity,
        key: Option<&Zeroizing<String>>,
    ) -> Result<Vec<FileOut>, String> {
        let leaf = crate::x509::pem(der);
        let mut out = Vec::new();
        for item in &self.rules().install {
            let (name, kind, content) = match item {
                InstallItem::Cert => ("cert.pem", "certificate", leaf.clone()),
                InstallItem::Chain => (
                    "chain.pem",
                    "chain",
                    format!("{leaf}{}", self.ca_files.chain_tail),
                ),
                InstallItem::Ca => ("ca.pem", "ca", self.ca_files.ca_pem.clone()),
                InstallItem::Config => {
                    let vars = Vars {
                        device_id: Some(device_id.to_string()),
                        values: identity.template_values(),
                    };
                    let mut obj = serde_json::Map::new();
                    for (k, t) in &self.rules().config {
                        obj.insert(
                            k.clone(),
                            t.render(&vars)
                                .map_err(|e| format!("station.config.{k}: {e}"))?
                                .into(),
                        );
                    }
                    let mut text = serde_json::to_string_pretty(&obj).map_err(|e| e.to_string())?;
                    text.push('\n');
                    ("config.json", "config", text)
                }
            };
            out.push(FileOut::new(name, kind, Zeroizing::new(content)));
        }
        if let Some(k) = key {
            out.push(FileOut::new("key.pem", "private_key", k.clone()));
        }
        Ok(out)
    }

    /// The `installing` transition, committed before `install` is sent.
    fn installing(&self, serial: &str) -> StateChange {
        StateChange {
            to: DeviceState::Installing,
            kind: "install_started",
            detail: json!({"serial": serial, "operator": self.job.operator}),
        }
    }

    /// install → read_back → prove → lock → installed. `installing` is durable before the
    /// device is touched (`committed`: already, with the new certificate); the end state
    /// (`installed`, or `install_unconfirmed`/`signed` after a failure) is committed with the
    /// attempt row in [`Shift::finish`], before the verdict is shown.
    fn install(
        &mut self,
        obs: &mut dyn Observer,
        p: &mut Progress,
        device_id: &str,
        der: &[u8],
        files: &[FileOut],
        committed: bool,
    ) -> Result<(), Stop> {
        if !committed {
            let serial = p.serial.clone().unwrap_or_default();
            let change = self.installing(&serial);
            let profile = self.job.profile.name.clone();
            self.ledger
                .set_device_state(&self.batch, &profile, device_id, &change)?;
        }
        self.step(obs, p, Step::Install);
        let payload: Vec<InstallFile<'_>> = files
            .iter()
            .map(|f| InstallFile {
                content: &f.content,
                kind: f.kind,
                name: f.name,
                sha256: &f.sha256,
            })
            .collect();
        let sent =
            self.call::<serde::de::IgnoredAny>(Step::Install, Request::Install { files: &payload });
        drop(payload);
        if let Err((step, e)) = sent {
            // A device that said no holds nothing new; a lost or missing reply may hold it.
            let (state, kind) = if e.outcome_unknown() {
                (DeviceState::InstallUnconfirmed, "install_unconfirmed")
            } else {
                (DeviceState::Signed, "install_failed")
            };
            p.pending = Some(StateChange {
                to: state,
                kind,
                detail: json!({"serial": p.serial, "reason": e.to_string(), "operator": self.job.operator}),
            });
            return Err(fail(step, e));
        }
        if let Err(stop) = self.verify_installed(obs, p, der, files) {
            let reason = match &stop {
                Stop::End(_, _, r) => r.clone(),
                Stop::Fatal(e) => e.to_string(),
            };
            p.pending = Some(StateChange {
                to: DeviceState::InstallUnconfirmed,
                kind: "install_unconfirmed",
                detail: json!({"serial": p.serial, "reason": reason, "operator": self.job.operator}),
            });
            return Err(stop);
        }
        p.pending = Some(StateChange {
            to: DeviceState::Installed,
            kind: "installed",
            detail: json!({"serial": p.serial, "operator": self.job.operator}),
        });
        Ok(())
    }

    /// read_back, prove, lock, per the profile.
    fn verify_installed(
        &mut self,
        obs: &mut dyn Observer,
        p: &Progress,
        der: &[u8],
        files: &[FileOut],
    ) -> Result<(), Stop> {
        self.read_back(obs, p, files, true)?;
        self.prove_and_lock(obs, p, der)
    }

    /// read_back of every file, or every file but the key when `with_key` is false (the
    /// check for a device that may already hold its certificate, which fails when the
    /// profile turns read-back off).
    fn read_back(
        &mut self,
        obs: &mut dyn Observer,
        p: &Progress,
        files: &[FileOut],
        with_key: bool,
    ) -> Result<(), Stop> {
        if self.rules().read_back {
            self.step(obs, p, Step::ReadBack);
            let check: Vec<&FileOut> = files
                .iter()
                .filter(|f| with_key || f.kind != "private_key")
                .collect();
            let names: Vec<&str> = check.iter().map(|f| f.name).collect();
            let rb: ReadBack = self
                .call(Step::ReadBack, Request::ReadBack { names: &names })
                .map_err(|(s, e)| fail(s, e))?;
            for f in check {
                let want = &f.sha256;
                match rb.files.get(f.name) {
                    Some(got) if got.eq_ignore_ascii_case(want) => {}
                    Some(got) => {
                        return Err(fail(
                            Step::ReadBack,
                            format!("the device holds a different {} than certfab sent (SHA-256 {got}, expected {want})", f.name),
                        ))
                    }
                    None => {
                        return Err(fail(
                            Step::ReadBack,
                            format!("the device does not hold {}", f.name),
                        ))
                    }
                }
            }
        } else if !with_key {
            // Nothing to compare: the caller must not take this as "already installed".
            return Err(fail(Step::ReadBack, "read_back is off for this profile"));
        }
        Ok(())
    }

    /// prove and lock, per the profile, after the read-back passed.
    fn prove_and_lock(
        &mut self,
        obs: &mut dyn Observer,
        p: &Progress,
        der: &[u8],
    ) -> Result<(), Stop> {
        if wants_proof(self.rules(), &self.adapter) {
            self.step(obs, p, Step::Prove);
            self.prove(der)?;
        }
        if self.rules().lock {
            self.step(obs, p, Step::Lock);
            match self.call::<Locked>(Step::Lock, Request::Lock) {
                Ok(l) if l.locked => {}
                Ok(_) => return Err(fail(Step::Lock, "the device did not confirm the lock")),
                // Already locked: the read-back and the proof have just shown that it holds
                // this identity, which is what the lock is for.
                Err((_, StepError::Device { err, .. })) if err.code == "locked" => {}
                Err((s, e)) => return Err(fail(s, e)),
            }
        }
        Ok(())
    }

    /// The device signs a fresh nonce; the signature must verify with the certificate's key.
    fn prove(&mut self, der: &[u8]) -> Result<(), Stop> {
        let mut nonce = [0u8; 32];
        getrandom::getrandom(&mut nonce).map_err(|e| fail(Step::Prove, e))?;
        let b64 = base64::engine::general_purpose::STANDARD;
        let proof: Proof = self
            .call(
                Step::Prove,
                Request::Prove {
                    nonce: &b64.encode(nonce),
                },
            )
            .map_err(|(s, e)| fail(s, e))?;
        let sig = b64
            .decode(proof.signature.trim())
            .map_err(|_| fail(Step::Prove, "prove: signature is not base64"))?;
        let key = cert_public_key(der).map_err(|e| fail(Step::Prove, e))?;
        let mut msg = protocol::PROVE_CONTEXT.to_vec();
        msg.extend_from_slice(&nonce);
        key.verify(key.default_signature(), &msg, &sig).map_err(|_| {
            fail(
                Step::Prove,
                "proof of possession failed: the device's signature does not verify with the key in its certificate",
            )
        })
    }
}

/// A fresh P-256 key: (SPKI DER, PKCS#8 PEM).
fn host_keygen() -> Result<(Vec<u8>, Zeroizing<String>), String> {
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let sk = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    let spki = sk
        .public_key()
        .to_public_key_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec();
    let pem = sk.to_pkcs8_pem(LineEnding::LF).map_err(|e| e.to_string())?;
    Ok((spki, Zeroizing::new(pem.to_string())))
}

fn spki_of_pkcs8(pem: &str) -> Result<Vec<u8>, String> {
    use p256::pkcs8::{DecodePrivateKey, EncodePublicKey};
    let sk = p256::SecretKey::from_pkcs8_pem(pem).map_err(|e| e.to_string())?;
    Ok(sk
        .public_key()
        .to_public_key_der()
        .map_err(|e| e.to_string())?
        .as_bytes()
        .to_vec())
}

/// The key in a certificate, taken from its DER without decoding the rest of it.
fn cert_public_key(der: &[u8]) -> Result<crate::crypto::PublicKey, String> {
    let spki = crate::x509::cert_spki(der).map_err(|e| e.to_string())?;
    crate::crypto::PublicKey::from_spki_der(spki).map_err(|e| e.to_string())
}

/// The certificate's serial as hex of its INTEGER's content octets (a leading 0x00 included,
/// as a full parse's `serial_number.as_bytes()` gives it), read without decoding the rest of
/// the certificate.
fn serial_of(der: &[u8]) -> Option<String> {
    crate::x509::cert_serial(der).ok().map(hex::encode)
}
