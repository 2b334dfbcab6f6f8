//! The `certfab` binary: parse, run, map the error to its exit code, print it once.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // Before anything else (and before any thread): no core dumps, SIGXFSZ caught.
    certfab::harden();
    let cli = certfab::Cli::parse();
    let result = certfab::run(cli);
    // A write cut short by `ulimit -f` is a storage failure whatever the command made of it.
    let limit = certfab::file_size_limit_hit();
    match result {
        Ok(code) if !limit => std::process::ExitCode::from(code as u8),
        Ok(_) => {
            eprintln!("certfab: error: {}", certfab::file_size_limit_message());
            std::process::ExitCode::from(certfab::ExitCode::Storage as u8)
        }
        Err(e) => {
            let text = e.to_string();
            // Errors quote inputs (device ids, file names, values): no control character of
            // theirs reaches the terminal.
            eprintln!("certfab: error: {}", certfab::escape_keep_lines(&text));
            if limit {
                if !text.contains("file size limit") {
                    eprintln!("certfab: {}", certfab::file_size_limit_message());
                }
                return std::process::ExitCode::from(certfab::ExitCode::Storage as u8);
            }
            std::process::ExitCode::from(e.exit_code() as u8)
        }
    }
}
