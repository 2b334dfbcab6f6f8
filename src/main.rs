//! The `certfab` binary: parse, run, map the error to its exit code, print it once.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = certfab::cli::Cli::parse();
    match certfab::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            // Errors quote inputs (device ids, file names, values): no control character of
            // theirs reaches the terminal.
            eprintln!(
                "certfab: error: {}",
                certfab::text::escape_keep_lines(&e.to_string())
            );
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
