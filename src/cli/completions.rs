//! Shell completions and man pages, generated from the clap definitions so they cannot say
//! anything the binary does not accept. The copies committed under docs/completions/ and
//! docs/man/ (what the Debian package installs) are compared with these in the tests; a change
//! to the command line regenerates them with `UPDATE_GENERATED=1 cargo test --test it cli_habits::`
//! or `certfab man --out docs/man` (docs/install.md).

use super::{Cli, Ctx};
use crate::error::{Error, ExitCode};
use clap::CommandFactory;
use std::path::PathBuf;

/// The shells certfab ships completions for (docs/completions/: certfab.bash, _certfab,
/// certfab.fish; the Debian package puts each in its shell's completion directory).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion).
    Bash,
    /// zsh.
    Zsh,
    /// fish.
    Fish,
}

/// `certfab completions SHELL`
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh or fish.
    #[arg(value_enum)]
    shell: Shell,
}

/// `certfab man --out DIR`
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Directory for the pages (certfab.1, certfab-issue.1, …); created if missing. Pages of
    /// commands that no longer exist are removed from it.
    #[arg(long)]
    out: PathBuf,
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let mut buf = Vec::new();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "certfab", &mut buf)
        }
        Shell::Zsh => {
            clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "certfab", &mut buf)
        }
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "certfab", &mut buf)
        }
    }
    buf
}

/// One man page per visible command (`certfab.1`, `certfab-batch.1`, `certfab-batch-status.1`,
/// …) as (file name, roff text), sorted by name.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>, Error> {
    fn walk(cmd: clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), Error> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            walk(sub, out)?;
        }
        let man = clap_mangen::Man::new(cmd);
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|e| Error::Usage(format!("cannot render a man page: {e}")))?;
        out.push((man.get_filename(), page));
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(cmd, &mut out)?;
    out.sort();
    Ok(out)
}

pub(super) fn completions(a: CompletionsArgs) -> Result<ExitCode, Error> {
    use std::io::Write as _;
    // A closed pipe (`certfab completions bash | head`) is the reader's choice, not an error.
    let _ = std::io::stdout().write_all(&completion(a.shell));
    Ok(ExitCode::Ok)
}

pub(super) fn man(ctx: &Ctx, a: ManArgs) -> Result<ExitCode, Error> {
    use crate::output::{Access, Durability, Existing, OutDir};
    let pages = man_pages()?;
    let dir = OutDir::create(&a.out)?;
    for (name, page) in &pages {
        dir.write(
            name,
            page,
            Access::Shared,
            Existing::Replace,
            Durability::Now,
        )?;
    }
    // A page of a command that was removed or renamed would document what no longer exists.
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir(&a.out) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let ours = name.starts_with("certfab") && name.ends_with(".1");
            if ours && !pages.iter().any(|(n, _)| *n == name) {
                dir.remove(&name)?;
                removed.push(name);
            }
        }
    }
    dir.sync_dir()?;
    removed.sort();
    let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
    ctx.print(
        &serde_json::json!({"out": a.out, "pages": names, "removed": removed}),
        &format!(
            "{} man pages in {}{}",
            pages.len(),
            crate::text::escape(&a.out.display().to_string()),
            if removed.is_empty() {
                String::new()
            } else {
                format!(" ({} stale removed: {})", removed.len(), removed.join(", "))
            }
        ),
    );
    Ok(ExitCode::Ok)
}
