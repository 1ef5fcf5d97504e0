//! The `lore` binary: parse flags, run one command, print its result.
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration.

mod cli;

fn main() -> std::process::ExitCode {
    // Before anything else: this process may be the PDF extraction helper.
    lore::ingest::sandbox::init();
    cli::run()
}
