//! The `certfab` binary: parse, run, map the error to its exit code, print it once.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = certfab::cli::Cli::parse();
    match certfab::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("certfab: error: {e}");
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
