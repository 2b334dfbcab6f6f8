//! What the certfab process does to itself and to the programs it starts, so that a secret it
//! holds does not leak through them ([pin-policy.md](../docs/pin-policy.md) "Process").
//!
//! - A PIN read from `env:NAME` sits in the process environment from the first instruction, and
//!   the PKCS#11 module keeps login state in memory: core dumps are disabled for the whole run
//!   ([`protect_memory`]), not only after the PIN is read.
//! - A child (today only the station's `exec:` adapter) starts from an empty environment plus a
//!   short allow-list ([`scrub_env`]): the PIN variable, a key passphrase variable and the
//!   token's config (`SOFTHSM2_CONF` and everything in `pkcs11.env`) never reach it.
//! - A child dies with certfab ([`die_with_parent`]), even when certfab is SIGKILLed.
//! - `ulimit -f` does not kill certfab silently: SIGXFSZ is caught, the write fails with EFBIG
//!   and is reported, and [`file_size_limit_hit`] lets the error say why.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once};

/// Variables a child may inherit: what a program needs to find its interpreter and tools
/// (`PATH`), its per-user files (`HOME`, `USER`, `LOGNAME`), temporary files (`TMPDIR`), and
/// how to print text and times (`LANG`, `LANGUAGE`, `LC_*`, `TZ`, `TERM`). Nothing else: an
/// adapter that needs more sets it in a wrapper script.
const CHILD_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "TERM",
];

/// Variable name prefixes a child may inherit (locale categories).
const CHILD_ENV_PREFIXES: &[&str] = &["LC_"];

/// Names of variables that hold a secret or configure the token: never passed to a child, even
/// when the allow-list would (a PIN in `LC_PIN` is still a PIN).
static WITHHELD: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Set by the SIGXFSZ handler.
static FILE_SIZE_LIMIT: AtomicBool = AtomicBool::new(false);

/// Hardens the process at start-up: no core dumps ([`protect_memory`]) and SIGXFSZ caught
/// ([`file_size_limit_hit`]). Call first thing in `main`, before any thread starts.
pub fn harden() {
    protect_memory();
    static CATCH: Once = Once::new();
    CATCH.call_once(|| {
        // Only fails for the signals that cannot be caught (SIGKILL, SIGSTOP, SIGSEGV…).
        let _ = signal_hook::flag::register(signal_hook::consts::SIGXFSZ, &FILE_SIZE_LIMIT);
    });
}

/// Disables core dumps for the rest of the run: `PR_SET_DUMPABLE 0` (no core file, no ptrace
/// attach by other processes of the same user, /proc/PID/mem and environ readable only by
/// root) and `RLIMIT_CORE` 0 (soft and hard, inherited by children). Idempotent; called at
/// start-up and again before any secret is read, for library callers.
pub fn protect_memory() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Neither call can fail for these arguments (lowering a limit is always allowed).
        #[cfg(target_os = "linux")]
        let _ =
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable);
        let _ = rustix::process::setrlimit(
            rustix::process::Resource::Core,
            rustix::process::Rlimit {
                current: Some(0),
                maximum: Some(0),
            },
        );
    });
}

/// Whether a write hit the process file size limit (`ulimit -f`, RLIMIT_FSIZE) during this run.
pub fn file_size_limit_hit() -> bool {
    FILE_SIZE_LIMIT.load(Ordering::SeqCst)
}

/// What to tell the user after [`file_size_limit_hit`]: the limit and the fix.
pub fn file_size_limit_message() -> String {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Fsize).current;
    let shown = match limit {
        Some(bytes) => format!("{bytes} bytes"),
        None => "now unlimited".into(),
    };
    format!(
        "a file reached the process file size limit (ulimit -f, RLIMIT_FSIZE: {shown}) and could not be written; nothing more was signed. Raise the limit (ulimit -f unlimited) and run the same command again (a batch resumes where it stopped)"
    )
}

/// Never passes the variable `name` to a child: called for every `env:NAME` secret source and
/// every `pkcs11.env` variable.
pub fn withhold_env(name: &str) {
    WITHHELD
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.to_string());
}

fn child_may_inherit(name: &OsStr, withheld: &BTreeSet<String>) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    (CHILD_ENV.contains(&name) || CHILD_ENV_PREFIXES.iter().any(|p| name.starts_with(p)))
        && !withheld.contains(name)
}

/// Gives `cmd` an empty environment plus the allow-listed variables of this process that are
/// not withheld ([`withhold_env`]).
pub fn scrub_env(cmd: &mut Command) {
    let withheld = WITHHELD.lock().unwrap_or_else(|p| p.into_inner()).clone();
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if child_may_inherit(&k, &withheld) {
            cmd.env(k, v);
        }
    }
}

/// Makes the child started by `cmd` receive SIGKILL when certfab dies, however it dies
/// (`PR_SET_PDEATHSIG`), so no adapter is left holding a fixture, a serial port or a device
/// half-written.
///
/// The kernel sends the signal when the *thread* that spawned the child exits, not the process:
/// spawn from a thread that lives as long as the child (the station runs its links on the
/// thread that runs the shift). If certfab died between the fork and the prctl, the child sees
/// a different parent and does not start.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // work is allowed. It makes two raw system calls through rustix (prctl, getppid), captures
    // one `Pid` by copy, allocates nothing (rustix's `Errno` converts to `io::Error` as a raw
    // OS error), takes no lock and touches no memory shared with other threads.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(parent) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// Other systems: no parent-death signal; the station still kills its adapter on every path
/// that runs destructors.
#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cmd: &Command) -> BTreeSet<String> {
        cmd.get_envs()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn allow_list_and_withheld_names() {
        let withheld: BTreeSet<String> = ["LC_PIN".to_string(), "PATH".to_string()].into();
        let ok = |n: &str| child_may_inherit(OsStr::new(n), &withheld);
        assert!(ok("HOME") && ok("LANG") && ok("LC_ALL") && ok("TZ"));
        assert!(
            !ok("LC_PIN"),
            "a withheld name is dropped even if allow-listed"
        );
        assert!(!ok("PATH"));
        for n in [
            "CF_PIN",
            "SOFTHSM2_CONF",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "CERTFAB_CONFIG",
        ] {
            assert!(!ok(n), "{n}");
        }
    }

    #[test]
    fn scrubbed_command_carries_only_allowed_variables() {
        let mut cmd = Command::new("true");
        scrub_env(&mut cmd);
        let got = names(&cmd);
        assert!(
            got.iter()
                .all(|n| CHILD_ENV.contains(&n.as_str()) || n.starts_with("LC_")),
            "{got:?}"
        );
    }

    #[test]
    fn core_dumps_off_after_protect_memory() {
        protect_memory();
        let core = rustix::process::getrlimit(rustix::process::Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
        #[cfg(target_os = "linux")]
        assert_eq!(
            rustix::process::dumpable_behavior().unwrap(),
            rustix::process::DumpableBehavior::NotDumpable
        );
    }
}
