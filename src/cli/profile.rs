use super::Ctx;
use crate::error::{Error, ExitCode};
use clap::Subcommand;

/// `certfab profile …`
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// The profile as certfab resolves it, every default written out (YAML that loads as the
    /// same profile; --json for machines), and with --config the CA that signs for it now.
    /// Needs no token.
    Show {
        /// A profile file, or a name in the site's profiles_dir (needs --config).
        profile: String,
    },
}

pub(super) fn run(ctx: &Ctx, c: ProfileCommand) -> Result<ExitCode, Error> {
    match c {
        ProfileCommand::Show { profile } => show(ctx, &profile),
    }
}

fn show(ctx: &Ctx, arg: &str) -> Result<ExitCode, Error> {
    let (profile, ca) = ctx.site.profile_view(arg)?;
    let mut json = serde_json::json!({
        "file": profile.path,
        "sha256": hex::encode(profile.sha256),
        "profile": profile.resolved(),
        "derived": profile.derived(),
    });
    let mut text = profile.resolved_yaml();
    if let Some(ca) = &ca {
        json["signing_ca"] = serde_json::json!({
            "name": ca.name,
            "key": ca.key.to_string(),
            "cert": ca.cert,
            "chain": ca.chain,
            "rsa_pss": ca.rsa_pss,
            "tenant": ca.tenant,
        });
        let esc = |p: &std::path::Path| crate::text::escape(&p.display().to_string());
        text.push_str(&format!(
            "#   signs now (site config {}): CA {}, key {}, certificate {}\n",
            ctx.site.path_opt().map(esc).unwrap_or_default(),
            crate::text::escape(&ca.name),
            crate::text::escape(&ca.key.to_string()),
            esc(&ca.cert)
        ));
    }
    // The YAML's last line ends in a newline; print adds one more.
    ctx.print(&json, text.trim_end_matches('\n'));
    Ok(ExitCode::Ok)
}
