fn main() -> std::process::ExitCode {
    match pgbranch::cli::main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgbranch: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
