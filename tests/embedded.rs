//! `pgbranch serve` without an upstream: creates a private PostgreSQL on
//! first run, serves it, stops it on exit, and reuses it on the next run.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Starts the binary on the embedded default and waits for its
/// "Connect with" line.
fn start_embedded(data_dir: &std::path::Path, port: u16) -> (Child, String) {
    let mut child = Command::new(PGBRANCH_BIN)
        .args(["serve", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("PGBRANCH_UPSTREAM_URL")
        .env("PGBRANCH_METRICS_LISTEN", "")
        .env("PGBRANCH_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    // Reading blocks until the proxy prints; it exits (EOF) on failure.
    while let Some(Ok(line)) = lines.next() {
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("psql \"host=") {
            break;
        }
    }
    // Keep draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, printed)
}

fn wait_exit(child: &mut Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "pgbranch did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn psql_sync(port: u16, sql: &str) -> String {
    let out = Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={port} user=postgres dbname=postgres"
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn embedded_default_creates_serves_stops_and_reuses_its_cluster() {
    let dir = tempfile::tempdir().unwrap();
    // The server may run as the postgres user: it must reach the directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data_dir = dir.path().join("embedded");
    let port = free_port();

    let (mut child, printed) = start_embedded(&data_dir, port);
    assert!(
        printed.contains(&format!(
            "psql \"host=127.0.0.1 port={port} user=postgres dbname=postgres\""
        )),
        "connection string printed: {printed}"
    );
    assert!(data_dir.join("pgdata/PG_VERSION").exists());
    psql_sync(
        port,
        "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('first run')",
    );
    let pid_file = data_dir.join("pgdata/postmaster.pid");
    assert!(pid_file.exists());

    // SIGTERM: the proxy exits cleanly and stops its PostgreSQL.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(wait_exit(&mut child).success());
    assert!(!pid_file.exists(), "embedded PostgreSQL stopped");

    // Second run: same cluster, data kept, no new initdb.
    let (mut child, _) = start_embedded(&data_dir, port);
    assert_eq!(psql_sync(port, "SELECT v FROM kept"), "first run");
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(wait_exit(&mut child).success());
    assert!(!pid_file.exists());
}

#[test]
fn missing_postgresql_installation_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = serve_fails(
        &["--listen", "127.0.0.1:0", "--pg-bindir", "/nonexistent/bin"],
        dir.path(),
    );
    assert!(stderr.contains("apt-get install -y postgresql"), "{stderr}");
    assert!(stderr.contains("/nonexistent/bin"), "{stderr}");
}

#[test]
fn embedded_default_refuses_a_non_loopback_listen_address() {
    let dir = tempfile::tempdir().unwrap();
    let stderr = serve_fails(&["--listen", "0.0.0.0:0"], dir.path());
    assert!(stderr.contains("only on a loopback address"), "{stderr}");
    // Nothing was created: the check comes before initdb.
    assert!(!dir.path().join("pgdata").exists());
}

/// Runs `pgbranch serve ARGS --data-dir DIR` on the embedded default,
/// asserts that it fails, and returns its standard error.
fn serve_fails(args: &[&str], data_dir: &std::path::Path) -> String {
    let out = Command::new(PGBRANCH_BIN)
        .arg("serve")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("PGBRANCH_UPSTREAM_URL")
        .env("PGBRANCH_METRICS_LISTEN", "")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}
