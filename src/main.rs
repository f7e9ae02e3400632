fn main() -> std::process::ExitCode {
    match pgbranch::cli::main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgbranch: {e:#}");
            // 2: an error; 1 is reserved for answers such as "drift found".
            std::process::ExitCode::from(2)
        }
    }
}
