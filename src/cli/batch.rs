use super::Ctx;
use crate::batch::{self, Source, Summary};
use crate::error::{Error, ExitCode};
use crate::site::batch::BatchRequest;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// `certfab batch …`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BatchArgs {
    #[command(subcommand)]
    sub: Option<BatchSub>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum BatchSub {
    /// Counts by state and the rejected rows of a batch (default: the latest).
    Status {
        /// Batch id.
        batch: Option<String>,
    },
    /// Close a batch that will not be resumed (its input is gone or was wrong): it is marked
    /// finished and the reason is recorded in the audit log. What it issued stays issued.
    Close {
        /// Batch id.
        batch: String,
        /// Why it is closed (recorded in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Continue a batch from the ledger (same input, profile and output as it started with).
    Resume {
        /// Batch id.
        batch: String,
        #[command(flatten)]
        opts: WorkerArgs,
    },
}

#[derive(Debug, Args)]
struct WorkerArgs {
    /// Signing workers, one HSM session each.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Passphrase source for generated keys: env:NAME or file:PATH.
    #[arg(long)]
    key_passphrase: Option<String>,
    /// PBKDF2-SHA256 iterations for encrypted keys.
    #[arg(long, default_value_t = 2048)]
    kdf_iterations: u32,
    /// When the batch completes, build its signed manifest here (FILE and FILE.jws), as
    /// `certfab manifest build --batch ID --out FILE` would. Checked before anything is signed.
    #[arg(long)]
    manifest: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Device-class profile (path or name).
    #[arg(long)]
    profile: Option<String>,
    /// CSV with a header: device_id plus csr or pubkey (path relative to the CSV, or PEM).
    #[arg(long, conflicts_with_all = ["csr_dir", "count"])]
    input: Option<PathBuf>,
    /// A directory of CSRs (*.csr, *.pem, *.der); device id per the profile's device_id.from.
    #[arg(long, conflicts_with = "count")]
    csr_dir: Option<PathBuf>,
    /// The directory that CSV key paths (and --csr-dir files and their links) must resolve
    /// inside. Default: the CSV's directory, or the --csr-dir itself.
    #[arg(long, value_name = "DIR", conflicts_with = "count")]
    input_root: Option<PathBuf>,
    /// Issue for N devices whose keys certfab generates (needs --keygen host).
    #[arg(long, requires = "keygen")]
    count: Option<u64>,
    /// Device ids for --count: {seq} or {seq:0N} is the sequence number from 1.
    #[arg(long, default_value = "SN{seq:06}")]
    id_template: String,
    /// Where device keys are generated: only `host` (this machine's CSPRNG).
    #[arg(long, value_parser = ["host"])]
    keygen: Option<String>,
    /// Output directory: OUT/<device_id>/{cert.pem,chain.pem,device.json[,key.pem]}, or
    /// OUT/bundle-NNNNN.jsonl with --layout bundle.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Output layout: `dirs` (a directory per device) or `bundle` (JSON lines files, one line
    /// per device, a new file every --bundle-size input rows).
    #[arg(long, value_enum, default_value_t = LayoutArg::Dirs)]
    layout: LayoutArg,
    /// Input rows per bundle file with --layout bundle.
    #[arg(long, value_name = "N", requires = "layout")]
    bundle_size: Option<u64>,
    /// Write generated keys unencrypted (explicit; otherwise --key-passphrase is required).
    #[arg(long)]
    plain_keys: bool,
    /// Read the whole input and run every check, the lint and the ledger's identity rules per
    /// row; report which rows a run would refuse and why. Nothing is reserved, signed or
    /// written (no token or PIN needed).
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    workers: WorkerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LayoutArg {
    Dirs,
    Bundle,
}

pub(super) fn run(ctx: &Ctx, a: BatchArgs) -> Result<ExitCode, Error> {
    match a.sub {
        Some(BatchSub::Status { batch }) => status(ctx, batch),
        Some(BatchSub::Resume { batch, opts }) => resume(ctx, &batch, opts),
        Some(BatchSub::Close { batch, reason }) => close(ctx, &batch, &reason),
        None => {
            let r = a.run;
            let need = |flag: &str| Error::Usage(format!("certfab batch needs {flag}"));
            let profile = r.profile.ok_or_else(|| need("--profile"))?;
            let out = r.out.ok_or_else(|| need("--out"))?;
            let input_root = r.input_root.map(|p| std::path::absolute(&p).unwrap_or(p));
            let source = match (r.input, r.csr_dir, r.count) {
                (Some(p), None, None) => Source::Csv { path: std::path::absolute(&p).unwrap_or(p), input_root },
                (None, Some(p), None) => Source::CsrDir { path: std::path::absolute(&p).unwrap_or(p), input_root },
                (None, None, Some(count)) => {
                    batch::IdTemplate::parse(&r.id_template).map_err(Error::Usage)?;
                    Source::Count { count, id_template: r.id_template }
                }
                _ => return Err(Error::Usage("certfab batch needs one of --input CSV, --csr-dir DIR or --count N --keygen host".into())),
            };
            let out = std::path::absolute(&out).unwrap_or(out);
            let layout = match (r.layout, r.bundle_size) {
                (LayoutArg::Dirs, None) => batch::Layout::Dirs,
                (LayoutArg::Dirs, Some(_)) => {
                    return Err(Error::Usage(
                        "--bundle-size applies to --layout bundle only".into(),
                    ))
                }
                (LayoutArg::Bundle, Some(0)) => {
                    return Err(Error::Usage("--bundle-size must be at least 1".into()))
                }
                (LayoutArg::Bundle, n) => batch::Layout::Bundle {
                    devices_per_file: n.unwrap_or(batch::BUNDLE_DEVICES),
                },
            };
            if r.dry_run {
                let w = &r.workers;
                return super::dryrun::batch(
                    ctx,
                    &profile,
                    &batch::BatchDryRun {
                        source: &source,
                        out: &out,
                        plain_keys: r.plain_keys,
                        layout,
                        has_passphrase: w.key_passphrase.is_some(),
                        jobs: w.jobs,
                    },
                );
            }
            let w = r.workers;
            execute(
                ctx,
                BatchRequest {
                    profile,
                    source,
                    out,
                    plain_keys: r.plain_keys,
                    layout,
                    jobs: w.jobs,
                    key_passphrase: w.key_passphrase,
                    kdf_iterations: w.kdf_iterations,
                    manifest: w.manifest,
                    expect_key: None,
                },
            )
        }
    }
}

fn resume(ctx: &Ctx, id: &str, opts: WorkerArgs) -> Result<ExitCode, Error> {
    let req = crate::site::batch::resume_request(
        &ctx.site,
        id,
        opts.jobs,
        opts.key_passphrase,
        opts.kdf_iterations,
        opts.manifest,
    )?;
    execute(ctx, req)
}

/// The terminal side of a batch: the progress bar, and Ctrl-C once signing starts.
struct Ui {
    bar: indicatif::ProgressBar,
}

impl crate::site::batch::BatchUi for Ui {
    fn signing_starts(&self) {
        let _ = ctrlc::set_handler(|| {
            STOP.store(true, Ordering::SeqCst);
            eprintln!("\ncertfab: stopping after the devices in flight…");
        });
    }

    fn progress(&self, handled: u64, issued: u64) {
        self.bar.set_position(handled);
        self.bar.set_message(format!("{issued} issued"));
    }
}

fn execute(ctx: &Ctx, req: BatchRequest) -> Result<ExitCode, Error> {
    let total = match &req.source {
        Source::Count { count, .. } => Some(*count),
        _ => None,
    };
    let ui = Ui {
        bar: progress_bar(ctx.json, total),
    };
    let run = crate::site::batch::run(&ctx.site, req, &STOP, &ui)?;
    ui.bar.finish_and_clear();
    for n in &run.notices {
        eprintln!("certfab: {n}");
    }
    let summary = &run.summary;
    report(
        ctx,
        summary,
        run.manifest.as_ref().and_then(|m| m.as_ref().ok()),
    );
    if let Some(Err(e)) = run.manifest {
        return Err(e);
    }
    Ok(if summary.interrupted {
        ExitCode::Interrupted
    } else if summary.counts.get("rejected").copied().unwrap_or(0) > 0 {
        ExitCode::Partial
    } else {
        ExitCode::Ok
    })
}

fn progress_bar(json: bool, total: Option<u64>) -> indicatif::ProgressBar {
    use std::io::IsTerminal;
    if json || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n).with_style(
            indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} devices  {msg}  {per_sec}  ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        ),
        None => indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} rows  {msg}  {per_sec}  {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        ),
    };
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

fn report(ctx: &Ctx, s: &Summary, manifest: Option<&crate::manifest::build::BuildOutcome>) {
    let mut h = format!(
        "batch {}{}: {} issued, {} already done, {} rejected, {} duplicate rows in {:.1}s ({:.0} certificates/s)\n  ledger {}  output {}\n  batch totals: {}",
        s.batch,
        if s.resumed { " (resumed)" } else { "" },
        s.issued,
        s.already,
        s.rejected,
        s.duplicates,
        s.elapsed_s,
        s.rate_per_s,
        s.ledger,
        s.out,
        counts_text(&s.counts)
    );
    for p in s.problems.iter().take(20) {
        h.push_str(&problem_line(p));
    }
    if s.problems.len() > 20 {
        h.push_str(&format!(
            "\n  … {} more: certfab batch status {} --json",
            s.problems.len() - 20,
            s.batch
        ));
    }
    if s.interrupted {
        h.push_str(&format!(
            "\ninterrupted: resume with `certfab batch resume {}` (or re-run the same command)",
            s.batch
        ));
    }
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(m) = manifest {
        v["manifest"] = serde_json::to_value(m).unwrap_or_default();
        h.push('\n');
        h.push_str(&super::manifest::built_text(m));
    }
    ctx.print(&v, &h);
}

fn status(ctx: &Ctx, id: Option<String>) -> Result<ExitCode, Error> {
    let st = crate::site::batch::status(&ctx.site, id.as_deref())?;
    let mut h = format!(
        "batch {} ({}, profile {}, CA {})\n  started {}{}\n  {}",
        crate::text::escape(&st.batch.id),
        crate::text::escape(&st.batch.station),
        crate::text::escape(&st.batch.profile),
        crate::text::escape(&st.batch.ca),
        st.batch.created_at,
        st.batch
            .finished_at
            .as_deref()
            .map(|f| format!(", finished {f}"))
            .unwrap_or_else(|| ", not finished (resume it)".into()),
        counts_text(&st.counts)
    );
    for p in &st.problems {
        h.push_str(&problem_line(p));
    }
    ctx.print(&serde_json::to_value(&st).unwrap_or_default(), &h);
    Ok(ExitCode::Ok)
}

fn close(ctx: &Ctx, id: &str, reason: &str) -> Result<ExitCode, Error> {
    let st = crate::site::batch::close(&ctx.site, id, reason)?;
    let h = format!(
        "batch {id} closed: {}
  {}",
        crate::text::escape(reason),
        counts_text(&st.counts)
    );
    ctx.print(
        &serde_json::json!({"batch": id, "closed": true, "reason": reason, "counts": st.counts}),
        &h,
    );
    Ok(ExitCode::Ok)
}

fn problem_line(p: &crate::ledger::Rejection) -> String {
    // Device ids and reasons quote the input: escaped, so a value cannot start a line of its
    // own or move the cursor.
    let esc = crate::text::escape;
    let device = p
        .device_id
        .as_deref()
        .map(|d| format!(" ({})", esc(d)))
        .unwrap_or_default();
    let text = crate::text::neutralize;
    format!(
        "\n  line {}{device}: {}: {}",
        p.line,
        text(&p.kind),
        text(&p.reason)
    )
}

fn counts_text(counts: &std::collections::BTreeMap<String, u64>) -> String {
    counts
        .iter()
        .map(|(k, v)| format!("{} {v}", crate::text::escape(k)))
        .collect::<Vec<_>>()
        .join(", ")
}
