//! Issue 11, "Habits of a finished CLI": generated completions and man pages in step with the
//! CLI, `profile show`, `issue --dry-run` and `batch --dry-run`, and docs that name only
//! commands and flags that exist.

use crate::common::*;
use clap::CommandFactory;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to 1 to rewrite docs/man and docs/completions from the CLI instead of comparing.
const UPDATE: &str = "UPDATE_GENERATED";

fn run(args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .output()
        .expect("run certfab")
}

/// The generated files as the binary makes them: (path under the repository, bytes).
fn generated(tmp: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let man = tmp.join("man");
    ok(&run(&["man", "--out", man.to_str().unwrap()]));
    for e in std::fs::read_dir(&man).unwrap() {
        let p = e.unwrap().path();
        out.insert(
            Path::new("docs/man").join(p.file_name().unwrap()),
            std::fs::read(&p).unwrap(),
        );
    }
    for (shell, name) in [
        ("bash", "certfab.bash"),
        ("zsh", "_certfab"),
        ("fish", "certfab.fish"),
    ] {
        let o = run(&["completions", shell]);
        ok(&o);
        out.insert(Path::new("docs/completions").join(name), o.stdout);
    }
    out
}

fn committed(dir: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Ok(rd) = std::fs::read_dir(repo().join(dir)) {
        for e in rd {
            let p = e.unwrap().path();
            out.insert(
                Path::new(dir).join(p.file_name().unwrap()),
                std::fs::read(&p).unwrap(),
            );
        }
    }
    out
}

/// Item 1: the completion scripts and man pages the package installs are the ones the CLI
/// generates now; each shell parses its script and groff renders every page without a warning.
#[test]
fn completions_and_man_pages_match_the_cli() {
    let tmp = tempfile::tempdir().unwrap();
    let want = generated(tmp.path());
    if std::env::var(UPDATE).as_deref() == Ok("1") {
        for dir in ["docs/man", "docs/completions"] {
            let _ = std::fs::remove_dir_all(repo().join(dir));
            std::fs::create_dir_all(repo().join(dir)).unwrap();
        }
        for (p, bytes) in &want {
            std::fs::write(repo().join(p), bytes).unwrap();
        }
    }
    let mut have = committed("docs/man");
    have.extend(committed("docs/completions"));
    let fix = format!(
        "run `{UPDATE}=1 cargo test --test it cli_habits::completions_and_man_pages` (or `certfab man --out docs/man` and `certfab completions SHELL > docs/completions/FILE`) and commit the result"
    );
    let stale: Vec<_> = have.keys().filter(|p| !want.contains_key(*p)).collect();
    let missing: Vec<_> = want.keys().filter(|p| !have.contains_key(*p)).collect();
    let changed: Vec<_> = want
        .iter()
        .filter(|(p, b)| have.get(*p).is_some_and(|h| h != *b))
        .map(|(p, _)| p)
        .collect();
    assert!(
        stale.is_empty() && missing.is_empty() && changed.is_empty(),
        "the committed completions and man pages differ from what the CLI generates: stale {stale:?}, missing {missing:?}, changed {changed:?}; {fix}"
    );
    assert!(want.len() > 30, "a page per command: {:?}", want.keys());
    for page in [
        "certfab.1",
        "certfab-issue.1",
        "certfab-batch-status.1",
        "certfab-profile-show.1",
        "certfab-completions.1",
    ] {
        assert!(
            want.contains_key(&Path::new("docs/man").join(page)),
            "{page}"
        );
    }
    // The hidden generator documents itself in docs/install.md, not in a page of its own.
    assert!(!want.contains_key(Path::new("docs/man/certfab-man.1")));

    let dir = repo().join("docs/completions");
    for (shell, args) in [
        ("bash", vec!["-n"]),
        ("zsh", vec!["-n"]),
        ("fish", vec!["--no-execute"]),
    ] {
        let file = dir.join(match shell {
            "bash" => "certfab.bash",
            "zsh" => "_certfab",
            _ => "certfab.fish",
        });
        let o = Command::new(shell)
            .args(&args)
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("{shell} (hsm-fixtures/setup-host.sh installs it): {e}"));
        assert!(o.status.success(), "{shell}: {}", text(&o));
    }
    // bash completes what a user types.
    let o = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source {}; COMP_WORDS=(certfab pro); COMP_CWORD=1; _certfab certfab pro certfab; echo \"${{COMPREPLY[@]}}\"; COMP_WORDS=(certfab issue --dry); COMP_CWORD=2; _certfab certfab --dry issue; echo \"${{COMPREPLY[@]}}\"",
            dir.join("certfab.bash").display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "profile\n--dry-run\n",
        "{}",
        text(&o)
    );
    for page in committed("docs/man").keys() {
        let o = Command::new("groff")
            .args(["-Kutf8", "-man", "-Tutf8", "-ww", "-z"])
            .arg(repo().join(page))
            .output()
            .expect("groff (hsm-fixtures/setup-host.sh installs groff-base)");
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}: {}",
            page.display(),
            text(&o)
        );
    }
}

/// Every `certfab …` command line in README.md and docs/*.md, inside code (fenced blocks and
/// `inline spans`), as (file:line, the words after `certfab` up to a shell operator, quoted
/// values replaced by `VALUE`).
fn documented_command_lines() -> Vec<(String, Vec<String>)> {
    let mut files = vec![repo().join("README.md")];
    for e in std::fs::read_dir(repo().join("docs")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "md") {
            files.push(p);
        }
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let body = std::fs::read_to_string(&f).unwrap();
        let name = f.strip_prefix(repo()).unwrap().display().to_string();
        let mut fenced = false;
        for (i, line) in body.lines().enumerate() {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                continue;
            }
            let spans: Vec<&str> = if fenced {
                vec![line]
            } else {
                line.split('`').skip(1).step_by(2).collect()
            };
            for span in spans {
                // A shell comment is prose; a quoted string is one value.
                let code = match span.find('#') {
                    Some(h) if h == 0 || span[..h].ends_with(' ') => &span[..h],
                    _ => span,
                };
                let mut unquoted = String::new();
                let mut quote = None;
                for c in code.chars() {
                    match (quote, c) {
                        (None, '"' | '\'') => {
                            quote = Some(c);
                            unquoted.push_str("VALUE");
                        }
                        (Some(q), c) if c == q => quote = None,
                        (Some(_), _) => {}
                        (None, c) => unquoted.push(c),
                    }
                }
                // certfab's own output (`certfab: error: …`) quotes messages, not commands.
                if unquoted.contains("certfab: ") {
                    continue;
                }
                let tokens: Vec<&str> = unquoted.split_whitespace().collect();
                for (at, t) in tokens.iter().enumerate() {
                    // `certfab` (or a path to it) where a shell runs a command: first, or after
                    // an operator, `sudo`, `$` or an environment assignment. Prose such as
                    // `another certfab process` is not a command line.
                    let is_bin = *t == "certfab" || t.ends_with("/certfab") || *t == "$(certfab";
                    let env_assignment = |t: &str| {
                        t.split_once('=').is_some_and(|(name, _)| {
                            name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
                                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                    };
                    let runs = at == 0
                        || env_assignment(tokens[at - 1])
                        || [
                            "$", "|", "&&", "||", ";", "sudo", "time", "exec", "then", "do",
                        ]
                        .contains(&tokens[at - 1]);
                    if !is_bin || !runs {
                        continue;
                    }
                    let words: Vec<String> = tokens[at + 1..]
                        .iter()
                        .take_while(|w| {
                            !["|", "&&", "||", ";", ">", ">>", "2>", "2>&1", "\\", "<"]
                                .iter()
                                .any(|op| w.starts_with(op))
                        })
                        .map(|w| w.trim_end_matches([',', ';', ')', ':']).to_string())
                        .collect();
                    if words.first().is_some_and(|w| {
                        w.starts_with("--")
                            || (w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
                                && !w.is_empty())
                    }) {
                        out.push((format!("{name}:{}", i + 1), words));
                    }
                }
            }
        }
    }
    out
}

fn is_word(w: &str) -> bool {
    w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && w.chars().all(|c| c.is_ascii_lowercase() || c == '-')
}

/// Item 5: every command, subcommand and flag that README.md and docs/*.md show after
/// `certfab` exists in the CLI, so the docs cannot drift from it again.
#[test]
fn docs_name_only_commands_and_flags_that_exist() {
    let mut root = certfab::Cli::command();
    root.build();
    let lines = documented_command_lines();
    assert!(
        lines.len() > 100,
        "found only {} command lines",
        lines.len()
    );
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for (at, words) in &lines {
        let mut cmd = &root;
        let mut path = vec!["certfab".to_string()];
        let mut expect_sub = true;
        let mut skip_value = false;
        for w in words {
            if let Some(flag) = w.strip_prefix("--") {
                let (flag, inline_value) = match flag.split_once('=') {
                    Some((f, _)) => (f, true),
                    None => (flag, false),
                };
                // `--…` and `--x`-style placeholders are not flags.
                if !is_word(flag) {
                    continue;
                }
                match cmd.get_arguments().find(|a| a.get_long() == Some(flag)) {
                    Some(arg) => skip_value = !inline_value && arg.get_action().takes_values(),
                    None if matches!(flag, "help" | "version") => {}
                    None => {
                        wrong.push(format!("{at}: `{} --{flag}`: no such flag", path.join(" ")))
                    }
                }
                continue;
            }
            if std::mem::take(&mut skip_value) {
                continue;
            }
            if expect_sub && cmd.get_subcommands().next().is_some() {
                if let Some(sub) = cmd.find_subcommand(w) {
                    cmd = sub;
                    path.push(w.clone());
                    seen.insert(path.join(" "));
                    continue;
                }
                if is_word(w) {
                    wrong.push(format!(
                        "{at}: `{} {w}`: no such command (there are: {})",
                        path.join(" "),
                        cmd.get_subcommands()
                            .filter(|s| !s.is_hide_set())
                            .map(|s| s.get_name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
            expect_sub = false;
        }
    }
    assert!(
        wrong.is_empty(),
        "the docs name what the CLI does not have:\n{}",
        wrong.join("\n")
    );
    for c in [
        "certfab issue",
        "certfab batch status",
        "certfab profile show",
    ] {
        assert!(seen.contains(c), "{c} is documented somewhere: {seen:?}");
    }
}

/// The text without its first line (which names the file and its hash).
fn body(yaml: &str) -> &str {
    yaml.split_once('\n').map(|(_, b)| b).unwrap_or("")
}

/// Item 2: `certfab profile show` writes out every default a profile leaves implicit, as YAML
/// that loads back as the same profile (the same text again), and as JSON; no token, no site.
#[test]
fn profile_show_writes_every_default_and_loads_back() {
    let tmp = tempfile::tempdir().unwrap();
    let mut shipped: Vec<_> = std::fs::read_dir(repo().join("profiles"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    shipped.sort();
    assert!(shipped.len() >= 6);
    for p in &shipped {
        let shown = ok(&run(&["profile", "show", p.to_str().unwrap()]));
        let again_path = tmp.path().join(p.file_name().unwrap());
        std::fs::write(&again_path, &shown).unwrap();
        let again = ok(&run(&["profile", "show", again_path.to_str().unwrap()]));
        assert_eq!(
            body(&shown),
            body(&again),
            "{} does not load back",
            p.display()
        );
        let json = ok_json(&run(&["--json", "profile", "show", p.to_str().unwrap()]));
        assert_eq!(
            json["sha256"].as_str().unwrap(),
            openssl(&["dgst", "-sha256", "-r", p.to_str().unwrap()])
                .stdout
                .split(|b| *b == b' ')
                .next()
                .map(|h| String::from_utf8_lossy(h).into_owned())
                .unwrap()
        );
        let y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&shown).unwrap();
        let j = &json["profile"];
        // Every section is present, defaults included, and YAML and JSON agree.
        for key in [
            "name",
            "description",
            "preset",
            "issuer",
            "tenant",
            "keys",
            "device_id",
            "subject",
            "san",
            "validity",
            "key_usage",
            "extended_key_usage",
            "extensions",
            "csr",
            "names",
            "station",
            "cloud",
            "rollover",
        ] {
            assert!(y.get(key).is_some(), "{}: no {key}", p.display());
            assert!(j.get(key).is_some(), "{}: JSON has no {key}", p.display());
        }
        assert_eq!(
            y["station"]["timeouts"].as_mapping().unwrap().len(),
            10,
            "default and each protocol operation"
        );
    }
    // generic-iot leaves names:, csr:, validity.clamp_to_issuer and most station settings
    // implicit; the resolved view shows what they are.
    let shown = ok(&run(&["profile", "show", "profiles/generic-iot.yaml"]));
    for line in [
        "  max_length: 64",
        "  extra_chars: ' -_.:@/'",
        "  allow_unicode: false",
        "  clamp_to_issuer: false",
        "  backdate: 1h",
        "  duration: 10y",
        "  allowed_extensions: []",
        "    min_bits: 2048",
        "    max_bits: 8192",
        "  from: input",
        "  retries: 2",
        "    wait_device: 10s",
        "    generate_csr: 30s",
        "tenant: null",
        "rollover: null",
        "#     basicConstraints: critical, CA:FALSE",
        "#   station generate_csr key: p256",
    ] {
        assert!(
            shown.lines().any(|l| l == line),
            "no line {line:?} in:\n{shown}"
        );
    }
    // A changed default is a visible change: a security review diffs two resolved views.
    let edited = derived_profile(
        tmp.path(),
        "edited.yaml",
        "generic-iot.yaml",
        &[("  backdate: 1h ", "  backdate: 2h ")],
    );
    let after = ok(&run(&["profile", "show", edited.to_str().unwrap()]));
    let changed: Vec<_> = body(&shown)
        .lines()
        .zip(body(&after).lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(changed, vec![("  backdate: 1h", "  backdate: 2h")]);
    // A profile that does not load is the same file:line error as everywhere.
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(&bad, "name: x\nkeys: [p256]\nbogus: 1\n").unwrap();
    let o = run(&["profile", "show", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("bad.yaml:3"),
        "{}",
        text(&o)
    );
}

/// The line's site config with no way to reach the token: a module that does not exist and a
/// PIN variable that is not set. A dry run must work with it; a run must not.
fn offline_config(line: &Line) -> PathBuf {
    let text = std::fs::read_to_string(line.config()).unwrap();
    let mut y: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    y["pkcs11"]["module"] = "/nonexistent/libno-such-pkcs11.so".into();
    y["pkcs11"]["pin"] = "env:CERTFAB_TEST_PIN_NOT_SET".into();
    let p = line.file("offline.yaml");
    std::fs::write(&p, serde_yaml_ng::to_string(&y).unwrap()).unwrap();
    p
}

fn certfab_with(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CERTFAB_CONFIG")
        .env_remove("CERTFAB_TEST_PIN_NOT_SET")
        .output()
        .expect("run certfab")
}

/// What a dry run must leave exactly as it was: the ledger's files (SHA-256 of each). SQLite
/// may create an empty write-ahead log when it opens the ledger read-only (as for `batch
/// status`): an absent and an empty log hold the same, no record.
fn ledger_state(line: &Line) -> Vec<(String, String)> {
    use sha2::Digest;
    [
        "ledger.sqlite",
        "ledger.sqlite-wal",
        "ledger.sqlite.created",
    ]
    .iter()
    .map(|n| {
        let b = std::fs::read(line.file(n)).unwrap_or_default();
        (n.to_string(), hex::encode(sha2::Sha256::digest(b)))
    })
    .collect()
}

/// `openssl x509 -text`'s `Data:` part, without the lines a second preparation draws afresh
/// (serial, validity).
fn comparable(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip_serial = false;
    for l in text.lines() {
        if l.trim_start().starts_with("Signature Algorithm:") && l.starts_with("    Sig") {
            break; // the outer signature: not in a TBS
        }
        if std::mem::take(&mut skip_serial) {
            continue;
        }
        if l.trim_start().starts_with("Serial Number:") {
            skip_serial = true;
            continue;
        }
        if l.trim_start().starts_with("Not Before:") || l.trim_start().starts_with("Not After") {
            continue;
        }
        out.push(l.trim_end().to_string());
    }
    out
}

/// Item 3 (`issue --dry-run`): every check and the lint run and the would-be certificate is
/// shown as `openssl x509 -text` shows the certificate a run then issues; nothing is reserved,
/// signed or written, without the token or a PIN; refusals are the run's, with its exit code.
#[test]
fn issue_dry_run_checks_everything_and_changes_nothing() {
    let line = Line::new();
    let dir = line.path();
    let offline = offline_config(&line);
    // A run cannot even start with that config: the dry run below really did without a token.
    let csr = openssl_csr(dir, "p256", "ec:prime256v1", "/CN=SN-1", &[]);
    let o = certfab_with(
        &offline,
        &issue_args("generic-iot", &csr, "SN-1", &dir.join("nowhere")),
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    // Four shipped profiles and key types; after each dry run, the real issue of the same
    // request prints (openssl) what the dry run showed, serial and times aside.
    let rsa = openssl_csr(dir, "rsa", "rsa:2048", "/CN=R-1", &[]);
    let p384 = openssl_csr(dir, "p384", "ec:secp384r1", "/CN=ID-1", &[]);
    let matter = openssl_csr(dir, "matter", "ec:prime256v1", "/CN=M-1", &[]);
    let cases: [(&str, &Path, &str, &[&str]); 4] = [
        ("generic-iot", &csr, "SN-1", &[]),
        ("generic-iot", &rsa, "R-1", &[]),
        ("ieee-802.1ar-idevid", &p384, "ID-1", &[]),
        ("matter-dac", &matter, "M-1", &["--var", "pid=8000"]),
    ];
    for (profile, csr, id, extra) in cases {
        let before = ledger_state(&line);
        let out = dir.join(format!("out-{id}"));
        let mut args = vec![
            "--json",
            "issue",
            "--dry-run",
            "--profile",
            profile,
            "--csr",
            csr.to_str().unwrap(),
            "--device-id",
            id,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let dry = ok_json(&certfab_with(&offline, &args));
        assert_eq!(dry["dry_run"], true);
        assert_eq!(dry["outcome"], "would-issue", "{dry}");
        assert_eq!(dry["device_id"], id);
        assert_eq!(
            dry["checks"],
            serde_json::json!([
                "parse",
                "proof-of-possession",
                "key-policy",
                "name-policy",
                "validity",
                "lint",
                "ledger-identity-rules"
            ])
        );
        assert_eq!(
            ledger_state(&line),
            before,
            "{profile}: the dry run changed the ledger"
        );
        assert!(!out.exists(), "the dry run created {}", out.display());

        let mut args: Vec<&str> = issue_args(profile, csr, id, &out).to_vec();
        args.extend_from_slice(extra);
        ok(&line.certfab(&args));
        let real = openssl_x509(&out.join("cert.pem"), &["-text"]);
        let shown = dry["certificate_text"].as_str().unwrap();
        let (want, have) = (comparable(&real), comparable(shown));
        if profile == "ieee-802.1ar-idevid" {
            // OpenSSL cannot show a hardwareModuleName; certfab does.
            let i = want.iter().position(|l| l.contains("othername:")).unwrap();
            assert_eq!(
                want[i].trim(),
                "othername: 1.3.6.1.5.5.7.8.4::<unsupported>"
            );
            assert_eq!(
                have[i].trim(),
                "othername: hardwareModuleName::hwType=1.3.6.1.4.1.99999.1.1, hwSerialNum=ID-1"
            );
            let strip = |v: &[String]| -> Vec<String> {
                v.iter()
                    .filter(|l| !l.contains("othername:"))
                    .cloned()
                    .collect()
            };
            assert_eq!(strip(&want), strip(&have), "{profile}");
        } else {
            assert_eq!(want, have, "{profile}: dry run\n{shown}\nopenssl\n{real}");
        }
    }

    // The same request again: the dry run says a run returns the certificate already issued.
    let serial = openssl_x509(&dir.join("out-SN-1/cert.pem"), &["-serial"]);
    let again = ok_json(&certfab_with(
        &offline,
        &[
            "--json",
            "issue",
            "--dry-run",
            "--profile",
            "generic-iot",
            "--csr",
            csr.to_str().unwrap(),
            "--device-id",
            "SN-1",
        ],
    ));
    assert_eq!(again["outcome"], "already-issued");
    assert_eq!(
        again["serial"].as_str().unwrap().to_uppercase(),
        serial.trim().trim_start_matches("serial=")
    );

    // Refusals are the run's: same message, same exit code, and still nothing changed.
    let ed = openssl_csr(dir, "ed", "ED25519", "/CN=E-1", &[]);
    let refusals: [(&[&str], i32); 3] = [
        // Policy: generic-iot takes no Ed25519 key.
        (
            &[
                "--profile",
                "generic-iot",
                "--csr",
                ed.to_str().unwrap(),
                "--device-id",
                "E-1",
            ],
            3,
        ),
        // Ledger: one device id per key (SN-1's key for another id).
        (
            &[
                "--profile",
                "generic-iot",
                "--csr",
                csr.to_str().unwrap(),
                "--device-id",
                "SN-2",
            ],
            3,
        ),
        // Ledger: a new key for a device that has a live certificate.
        (
            &[
                "--profile",
                "generic-iot",
                "--csr",
                rsa.to_str().unwrap(),
                "--device-id",
                "SN-1",
            ],
            3,
        ),
    ];
    for (args, code) in refusals {
        let before = ledger_state(&line);
        let mut dry_args = vec!["issue", "--dry-run"];
        dry_args.extend_from_slice(args);
        let dry = certfab_with(&offline, &dry_args);
        assert_eq!(ledger_state(&line), before, "{args:?}");
        let out = dir.join("refused");
        let mut run_args = vec!["issue"];
        run_args.extend_from_slice(args);
        run_args.extend(["--out", out.to_str().unwrap()]);
        let real = line.certfab(&run_args);
        assert_eq!(dry.status.code(), Some(code), "{}", text(&dry));
        assert_eq!(real.status.code(), Some(code), "{}", text(&real));
        assert_eq!(
            String::from_utf8_lossy(&dry.stderr),
            String::from_utf8_lossy(&real.stderr),
            "{args:?}"
        );
    }
}

/// Item 3 (`batch --dry-run`): the per-row report says exactly which rows the run then refuses
/// or issues once, and why; the dry run reserves, signs and writes nothing.
#[test]
fn batch_dry_run_predicts_the_run_row_by_row() {
    let line = Line::new();
    let dir = line.path();
    let offline = offline_config(&line);
    // One device already issued singly, then a CSV of every kind of row.
    let known = openssl_csr(dir, "known", "ec:prime256v1", "/CN=K-1", &[]);
    ok(&line.certfab(&issue_args("generic-iot", &known, "K-1", &dir.join("k1"))));
    let keys: Vec<PathBuf> = (1..=3)
        .map(|i| {
            openssl_csr(
                dir,
                &format!("b{i}"),
                "ec:prime256v1",
                &format!("/CN=B-{i}"),
                &[],
            )
        })
        .collect();
    let ed = openssl_csr(dir, "ed", "ED25519", "/CN=E-1", &[]);
    let name = |p: &Path| p.file_name().unwrap().to_str().unwrap().to_string();
    let rows = [
        ("B-1", name(&keys[0])),       // line 2: issued
        ("B-2", name(&keys[1])),       // 3: issued
        ("B-1", name(&keys[2])),       // 4: same id, another key: refused
        ("B-2", name(&keys[1])),       // 5: duplicate of line 3
        ("E-1", name(&ed)),            // 6: policy (Ed25519)
        ("K-1", name(&known)),         // 7: already issued (singly)
        ("X-9", name(&known)),         // 8: K-1's key for another id: refused
        ("b-1", name(&keys[0])),       // 9: another spelling of B-1: refused
        ("B-3", "missing.csr".into()), // 10: unreadable input: refused
        ("B/4", name(&keys[2])),       // 11: not a usable directory name: refused
    ];
    let mut csv = String::from("device_id,csr\n");
    for (id, k) in &rows {
        csv.push_str(&format!("{id},{k}\n"));
    }
    let input = dir.join("devices.csv");
    std::fs::write(&input, csv).unwrap();
    let out = dir.join("batch-out");
    let args = |dry: bool| {
        let mut a = vec![
            "--json",
            "batch",
            "--profile",
            "generic-iot",
            "--input",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if dry {
            a.push("--dry-run");
        }
        a
    };
    let before = ledger_state(&line);
    let dry = certfab_with(&offline, &args(true));
    assert_eq!(
        dry.status.code(),
        Some(10),
        "a run would refuse rows: {}",
        text(&dry)
    );
    let dry = stdout_json(&dry);
    assert_eq!(
        ledger_state(&line),
        before,
        "the dry run changed the ledger"
    );
    assert!(!out.exists(), "the dry run created the output directory");
    assert_eq!(dry["rows_read"], 10);
    assert_eq!(dry["resumes"], serde_json::Value::Null);
    assert_eq!(
        dry["counts"],
        serde_json::json!({"would-issue": 2, "already-issued": 1, "duplicate": 1, "rejected": 6})
    );
    let sample = dry["sample_certificate"].as_str().unwrap();
    assert!(
        sample.contains("Subject: CN = B-1, O = certfab development"),
        "{sample}"
    );

    let real = line.certfab(&args(false));
    assert_eq!(real.status.code(), Some(10), "{}", text(&real));
    let real = stdout_json(&real);
    // The run's problems are the dry run's non-issuing rows, line for line and word for word.
    let predicted: BTreeMap<u64, (String, String)> = dry["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| matches!(r["outcome"].as_str(), Some("rejected" | "duplicate")))
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                (
                    r["outcome"].as_str().unwrap().to_string(),
                    r["reason"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    let happened: BTreeMap<u64, (String, String)> = real["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["line"].as_u64().unwrap(),
                (
                    p["kind"].as_str().unwrap().to_string(),
                    p["reason"].as_str().unwrap().to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(predicted, happened);
    assert_eq!(real["issued"], dry["counts"]["would-issue"]);
    assert_eq!(real["already"], dry["counts"]["already-issued"]);

    // Run again as a dry run: it would resume that batch and sign nothing new.
    let again = stdout_json(&certfab_with(&offline, &args(true)));
    assert_eq!(again["resumes"], real["batch"]);
    assert_eq!(again["counts"].get("would-issue"), None, "{again}");
    assert_eq!(again["counts"]["already-issued"], 3);

    // Host-generated keys: the passphrase rule of a run, then a clean preview.
    let count = [
        "batch",
        "--dry-run",
        "--profile",
        "generic-iot",
        "--count",
        "3",
        "--keygen",
        "host",
        "--out",
    ];
    let mut a = count.to_vec();
    let cnt_out = dir.join("cnt");
    a.push(cnt_out.to_str().unwrap());
    let o = certfab_with(&offline, &a);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--key-passphrase"));
    a.push("--plain-keys");
    let mut with_json = vec!["--json"];
    with_json.extend(a);
    let o = stdout_json(&certfab_with(&offline, &with_json));
    assert_eq!(o["counts"], serde_json::json!({"would-issue": 3}));
    assert!(!cnt_out.exists());
}

/// Item 4: every file the Debian package lists (`[package.metadata.deb]` assets) exists, so a
/// renamed doc, profile or completion script fails here, before `.ci/deb-check` packages it.
/// The binary is the one asset made by the build.
#[test]
fn debian_package_assets_exist() {
    let manifest = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let section = manifest
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("Cargo.toml has [package.metadata.deb]");
    let assets = section
        .split("assets = [")
        .nth(1)
        .and_then(|a| a.split("\n]").next())
        .expect("assets = [ … ]");
    let mut dests = BTreeSet::new();
    let mut n = 0;
    for line in assets.lines().map(str::trim).filter(|l| l.starts_with('[')) {
        let fields: Vec<&str> = line.split('"').skip(1).step_by(2).collect();
        let [src, dest, mode] = fields[..] else {
            panic!("asset line {line:?} is not [src, dest, mode]");
        };
        assert!(
            mode == "644" || (mode == "755" && dest == "usr/bin/"),
            "{line}"
        );
        dests.insert(dest.to_string());
        n += 1;
        if src == "target/release/certfab" {
            continue;
        }
        let (dir, pattern) = src.rsplit_once('/').unwrap_or((".", src));
        let matches = std::fs::read_dir(repo().join(dir))
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .filter_map(|e| e.ok())
            .filter(|e| match pattern.split_once('*') {
                Some((pre, suf)) => {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.starts_with(pre) && name.ends_with(suf)
                }
                None => e.file_name() == pattern,
            })
            .count();
        assert!(
            matches > 0,
            "the package lists {src}, which matches no file"
        );
    }
    assert!(n >= 8, "{n} assets");
    for d in [
        "usr/bin/",
        "usr/share/man/man1/",
        "usr/share/bash-completion/completions/certfab",
        "usr/share/zsh/vendor-completions/_certfab",
        "usr/share/fish/vendor_completions.d/certfab.fish",
        "usr/share/certfab/profiles/",
    ] {
        assert!(dests.contains(d), "nothing installed to {d}");
    }
}
