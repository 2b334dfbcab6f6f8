//! The documented process exit codes (DESIGN.md "Exit codes", docs/exit-codes.md). Each error
//! type says which one it means with its own `exit_code()`; the top-level error only
//! delegates, and `main` only converts.

/// Documented process exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// Usage or configuration error.
    Usage = 2,
    /// Input rejected by policy.
    Rejected = 3,
    /// HSM unavailable or login refused.
    Hsm = 4,
    /// Ledger or output storage failure.
    Storage = 5,
    /// Device or station failure.
    Station = 6,
    /// Batch finished with some devices failed.
    Partial = 10,
    /// Stopped by Ctrl-C / SIGINT / SIGTERM after finishing the devices in flight.
    Interrupted = 130,
}
