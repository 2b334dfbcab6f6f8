use super::Ctx;
use crate::error::{Error, ExitCode};

use crate::manifest::{self, build, ManifestError, Trust};

use clap::Subcommand;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// `certfab manifest …`
#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Build the signed manifest of a batch or station shift from the ledger (M.jsonl and
    /// M.jsonl.jws); marks its devices exported and chains to the ledger's previous manifest.
    Build {
        /// Batch or station-shift id (certfab batch status --json); repeat for several
        /// batches of the same profile and CA.
        #[arg(long, required = true)]
        batch: Vec<String>,
        /// The manifest file to write; the signature goes to FILE.jws.
        #[arg(long)]
        out: PathBuf,
        /// NAME=VALUE for {var.NAME} in the profile's cloud: templates (repeatable).
        #[arg(long = "var")]
        vars: Vec<String>,
        /// The profile file the batch was issued under (default: by name from profiles_dir).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Root(s) the result must verify under (default: the site config's roots).
        #[arg(long)]
        trust: Option<PathBuf>,
    },
    /// Verify manifests offline: signature and signer chain, Merkle root and count, every
    /// certificate against the declared CA; with several, also that each ledger's manifests
    /// chain without gaps, forks or repeated devices. Exit 0 only when everything checks out.
    Verify {
        /// The manifest(s).
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// The detached signature (default: MANIFEST.jws); only with one manifest.
        #[arg(long)]
        signature: Option<PathBuf>,
        /// Root CA certificate(s) to trust, PEM (default: the site config's roots).
        #[arg(long)]
        trust: Option<PathBuf>,
    },
    /// Summarise a manifest (verifying it when a trust anchor is available).
    Show {
        /// The manifest.
        manifest: PathBuf,
        /// Root CA certificate(s) to trust, PEM (default: the site config's roots).
        #[arg(long)]
        trust: Option<PathBuf>,
        /// List every device (id, serial, state).
        #[arg(long)]
        devices: bool,
    },
    /// Merge verified manifests from several stations or shifts into one signed manifest,
    /// refusing duplicate device ids, serials or public keys and mixed profiles/tenants/CAs.
    Merge {
        /// Manifests to merge (two or more).
        #[arg(required = true, num_args = 2..)]
        inputs: Vec<PathBuf>,
        /// The merged manifest to write (signature at FILE.jws).
        #[arg(long)]
        out: PathBuf,
        /// Root CA certificate(s) to trust (default: the site config's roots).
        #[arg(long)]
        trust: Option<PathBuf>,
    },
}

pub(super) fn run(ctx: &Ctx, cmd: ManifestCommand) -> Result<ExitCode, Error> {
    match cmd {
        ManifestCommand::Build {
            batch,
            out,
            vars,
            profile,
            trust,
        } => {
            let var_map = crate::site::parse_vars(&vars, "")?;
            let o = crate::site::manifests::build(
                &ctx.site,
                trust.as_deref(),
                build::BuildRequest {
                    batches: batch,
                    out,
                    vars: var_map,
                    profile,
                    now: ctx.site.now(),
                },
            )?;
            print_built(ctx, &o);
            Ok(ExitCode::Ok)
        }
        ManifestCommand::Verify {
            manifests,
            signature,
            trust,
        } => {
            if signature.is_some() && manifests.len() > 1 {
                return Err(Error::Usage(
                    "--signature names the signature of one manifest; give one manifest with it"
                        .into(),
                ));
            }
            let trust = Trust::resolve(trust.as_deref(), ctx.site.path_opt())?;
            if manifests.len() > 1 {
                return verify_many(ctx, &manifests, &trust);
            }
            let path = &manifests[0];
            // The devices are checked as the file streams by, never held (a million-device
            // manifest verifies in flat memory).
            match manifest::verify::verify_file_with(path, signature.as_deref(), &trust, |_| {}) {
                Ok(v) => {
                    ctx.print(&verified_json(&v), &verified_text(&v));
                    Ok(ExitCode::Ok)
                }
                Err(ManifestError::Invalid(r)) => {
                    if ctx.json {
                        outln!(
                            "{}",
                            serde_json::to_string_pretty(&serde_json::json!({
                                "ok": false, "path": r.path, "signature": r.signature,
                                "problems": r.problems, "trusted_roots_sha256": trust.fingerprints(),
                            }))
                            .unwrap_or_default()
                        );
                    }
                    Err(ManifestError::Invalid(r).into())
                }
                Err(e) => Err(e.into()),
            }
        }
        ManifestCommand::Show {
            manifest: path,
            trust,
            devices,
        } => show(ctx, &path, trust, devices),
        ManifestCommand::Merge { inputs, out, trust } => {
            let o = crate::site::manifests::merge(&ctx.site, &inputs, &out, trust.as_deref())?;
            ctx.print(
                &serde_json::to_value(&o).unwrap_or_default(),
                &format!(
                    "wrote merged manifest {} ({} devices from {} manifests, merkle root {}) and {}",
                    o.path.display(),
                    o.count,
                    o.inputs.len(),
                    o.merkle_root,
                    o.signature.display()
                ),
            );
            Ok(ExitCode::Ok)
        }
    }
}

/// Prints a build outcome (and any pending builds it recovered first).
pub(super) fn print_built(ctx: &Ctx, o: &build::BuildOutcome) {
    for r in &o.recovered {
        eprintln!("certfab: {r}");
    }
    ctx.print(&serde_json::to_value(o).unwrap_or_default(), &built_text(o));
}

/// One paragraph for the operator or the log.
pub(super) fn built_text(o: &build::BuildOutcome) -> String {
    if o.already_built {
        format!(
            "manifest #{} {} was already built for {} ({} devices); nothing to do",
            o.sequence,
            o.path.display(),
            o.batches.join(", "),
            o.count
        )
    } else {
        format!(
            "wrote manifest #{} {} ({} devices, merkle root {}) and {}\nchained to {}; {} devices marked exported; signer kid {}",
            o.sequence,
            o.path.display(),
            o.count,
            o.merkle_root,
            o.signature.display(),
            o.prev_sha256.as_deref().map_or("nothing (first manifest of this ledger)".to_string(), |p| format!("previous manifest SHA-256 {p}")),
            o.exported,
            o.signer_kid
        )
    }
}

/// Several manifests: each verified, then the chain checks across them (streamed, devices not
/// held: [`manifest::chain::verify_all`]).
fn verify_many(ctx: &Ctx, paths: &[PathBuf], trust: &Trust) -> Result<ExitCode, Error> {
    let all = manifest::chain::verify_all(paths, trust)?;
    let mut results = Vec::new();
    let mut text = Vec::new();
    let mut failed = 0;
    for r in &all.results {
        match r {
            Ok(v) => {
                results.push(verified_json(v));
                text.push(verified_text(v));
            }
            Err(r) => {
                failed += 1;
                results
                    .push(serde_json::json!({"ok": false, "path": r.path, "problems": r.problems}));
                text.push(r.to_string());
            }
        }
    }
    let chain = &all.chain;
    let all_ok = all.ok();
    let mut human = text.join("\n");
    for (ledger, seqs) in &chain.ledgers {
        human.push_str(&format!(
            "\nledger {}: manifests {}",
            &ledger[..ledger.len().min(12)],
            seqs.iter()
                .map(|s| format!("#{s}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    for p in &chain.problems {
        human.push_str(&format!("\nchain: {p}"));
    }
    let json = serde_json::json!({
        "ok": all_ok, "manifests": results, "chain": chain,
        "trusted_roots_sha256": trust.fingerprints(),
    });
    if all_ok {
        ctx.print(&json, &human);
        return Ok(ExitCode::Ok);
    }
    if ctx.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        eprintln!("{human}");
    }
    Err(ManifestError::Refused(format!(
        "{failed} of {} manifest(s) do not verify, {} chain problem(s)",
        paths.len(),
        chain.problems.len()
    ))
    .into())
}

fn verified_json(v: &manifest::VerifiedManifest) -> serde_json::Value {
    let h = &v.header;
    serde_json::json!({
        "ok": true,
        "path": v.path,
        "sha256": v.sha256,
        "format": h.format,
        "batches": h.batches,
        "stations": h.stations,
        "profile": h.profile,
        "profile_sha256": h.profile_sha256,
        "tenant": h.tenant,
        "created": h.created,
        "sequence": h.sequence,
        "range": h.range,
        "prev_sha256": h.prev_sha256,
        "merged_from": h.merged_from,
        "count": v.trailer.count,
        "merkle_root": v.trailer.merkle_root,
        "states": v.states,
        "ca_sha256": h.ca_sha256,
        "signer": {
            "kid": v.signature.header.kid,
            "alg": v.signature.header.alg,
            "subject": v.signature.signer.subject.to_string(),
            "cert_sha256": hex::encode(crate::crypto::sha256(&v.signature.signer.der)),
            "signed_at": v.signature.header.iat,
        },
        "trusted_root_sha256": hex::encode(crate::crypto::sha256(&v.signature.root.der)),
        "ca_root_sha256": hex::encode(crate::crypto::sha256(&v.ca_root.der)),
    })
}

fn verified_text(v: &manifest::VerifiedManifest) -> String {
    let h = &v.header;
    format!(
        "OK {}: {} devices, batches {}, profile {}, merkle root {}\nsigned by {} (kid {}), chain to trusted root SHA-256 {}\ndevice CA {} chains to trusted root SHA-256 {}",
        v.path.display(),
        v.trailer.count,
        h.batches.join(", "),
        h.profile,
        v.trailer.merkle_root,
        v.signature.signer.subject,
        v.signature.header.kid,
        hex::encode(crate::crypto::sha256(&v.signature.root.der)),
        v.ca_chain[0].subject,
        hex::encode(crate::crypto::sha256(&v.ca_root.der)),
    )
}

fn show(
    ctx: &Ctx,
    path: &std::path::Path,
    trust: Option<PathBuf>,
    list: bool,
) -> Result<ExitCode, Error> {
    // Read a line at a time: only the header, the trailer and the count of each state are
    // kept; the devices are listed (--devices) from a second pass as they are printed.
    let mut st: BTreeMap<String, u64> = BTreeMap::new();
    let mut device_lines = 0usize;
    let u = manifest::read_unverified_file(path, |d| {
        device_lines += 1;
        *st.entry(d.state).or_insert(0) += 1;
        Ok(())
    })?;
    let verdict = match Trust::resolve(trust.as_deref(), ctx.site.path_opt()) {
        Ok(t) => match manifest::verify::verify_file_with(path, None, &t, |_| {}) {
            Ok(_) => "verified".to_string(),
            Err(ManifestError::Invalid(r)) => format!(
                "DOES NOT VERIFY ({} problems; run certfab manifest verify)",
                r.problems.len()
            ),
            Err(e) => format!("not verified: {e}"),
        },
        Err(_) => "not verified (no trust anchor: pass --trust ROOT.pem)".into(),
    };
    let Some(h) = &u.header else {
        return Err(ManifestError::Invalid(Box::new(manifest::Report {
            path: path.display().to_string(),
            signature: manifest::signature_path(path).display().to_string(),
            problems: vec![manifest::Problem {
                line: Some(1),
                msg: "line 1 is not a manifest header".into(),
            }],
        }))
        .into());
    };
    let json = serde_json::json!({
        "path": path,
        "verification": verdict,
        "header": {
            "format": h.format, "tool": h.tool, "ledger": h.ledger, "batches": h.batches,
            "stations": h.stations, "profile": h.profile, "profile_sha256": h.profile_sha256,
            "tenant": h.tenant, "ca_sha256": h.ca_sha256, "created": h.created,
            "sequence": h.sequence, "range": h.range, "prev_sha256": h.prev_sha256,
            "merged_from": h.merged_from, "cloud": h.cloud,
        },
        "count": u.trailer.as_ref().map(|t| t.count),
        "merkle_root": u.trailer.as_ref().map(|t| t.merkle_root.clone()),
        "device_lines": device_lines,
        "undecodable_lines": u.undecodable,
        "states": st,
        // With --devices, streamed in its place ([`ShowJson`]).
        "devices": serde_json::Value::Null,
    });
    let text = format!(
        "{}: {verdict}\n  {} · profile {} · batches {} · stations {}\n  created {} · manifest #{} · previous {}\n  {} devices ({}) · merkle root {}",
        path.display(),
        h.format,
        h.profile,
        h.batches.join(", "),
        h.stations.join(", "),
        h.created,
        h.sequence.map_or("- (merged)".into(), |s| s.to_string()),
        h.prev_sha256.as_deref().unwrap_or("none"),
        device_lines,
        st.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        u.trailer
            .as_ref()
            .map_or("(no trailer)".to_string(), |t| t.merkle_root.clone()),
    );
    if !list {
        ctx.print(&json, &text);
        return Ok(ExitCode::Ok);
    }
    use std::io::Write as _;
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    if ctx.json {
        let serde_json::Value::Object(map) = &json else {
            return Ok(ExitCode::Ok);
        };
        let r = serde_json::to_writer_pretty(
            &mut out,
            &ShowJson {
                map,
                path,
                count: device_lines,
            },
        );
        let _ = writeln!(out);
        let _ = out.flush();
        r.map_err(|e| ManifestError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
    } else {
        // As `Ctx::print` does: line feeds are the layout, anything else unsafe is escaped.
        let _ = writeln!(out, "{}", crate::text::escape_keep_lines(&text));
        manifest::read_unverified_file(path, |d| {
            let _ = writeln!(
                out,
                "  {:>5} {} serial {} {}",
                d.seq,
                crate::text::escape(&d.device_id),
                crate::text::escape(&d.serial),
                crate::text::escape(&d.state)
            );
            Ok(())
        })?;
        let _ = out.flush();
    }
    Ok(ExitCode::Ok)
}

/// `manifest show --devices --json`: the object `show` builds (keys in alphabetical order, as
/// a `serde_json::Value` prints them), with its `devices` array read from the file again and
/// written one device at a time.
struct ShowJson<'a> {
    map: &'a serde_json::Map<String, serde_json::Value>,
    path: &'a std::path::Path,
    count: usize,
}

impl serde::Serialize for ShowJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.map.len()))?;
        for (k, v) in self.map {
            if k == "devices" {
                m.serialize_entry(k, &ShowDevices(self))?;
            } else {
                m.serialize_entry(k, v)?;
            }
        }
        m.end()
    }
}

struct ShowDevices<'a, 'b>(&'a ShowJson<'b>);

impl serde::Serialize for ShowDevices<'_, '_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeSeq};
        let mut seq = s.serialize_seq(Some(self.0.count))?;
        let mut failed = None;
        let r = manifest::read_unverified_file(self.0.path, |d| {
            let v = serde_json::json!({
                "seq": d.seq, "device_id": d.device_id, "serial": d.serial, "state": d.state,
                "key_origin": d.key_origin, "batch": d.batch, "not_after": d.not_after, "cloud": d.cloud,
            });
            seq.serialize_element(&v).map_err(|e| {
                failed = Some(e);
                ManifestError::Usage(String::new())
            })
        });
        if let Some(e) = failed {
            return Err(e);
        }
        r.map_err(S::Error::custom)?;
        seq.end()
    }
}
