//! Configuration reload of the real `pgbranch serve --config FILE` binary:
//! by SIGHUP and by the admin console's `RELOAD`. A valid configuration is
//! applied (TLS for new connections, protected branches and admin roles at
//! once, also for open sessions; restart-only settings reported and kept);
//! an invalid one is refused with its reason and nothing changes.
//!
//! The proxy is started with every inherited `PGBRANCH_*` variable removed,
//! so the configuration file alone decides (the harness's `ProxyProcess`
//! presets `PGBRANCH_LOG`, which would override `[log] level`).

mod common;
use common::*;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// Upper bound for anything that should take well under a second; only a
/// hang guard, never a timing assertion.
const HANG_GUARD: Duration = Duration::from_secs(20);

/// Admin console role used by every test, and its password.
const ADMIN: &str = "ops";
const ADMIN_PW: &str = "ops-pw-1";

/// SCRAM-SHA-256 secret for an `[admin] roles` entry.
fn secret(password: &str) -> String {
    pgbranch::admin::scram::Verifier::from_password(password).to_string()
}

/// A configuration file: `body`, then what every test has (no metrics
/// endpoint; last, so top-level keys in `body` stay top-level).
fn write_config(path: &Path, body: &str) {
    let text = format!("{body}\n\n[metrics]\nlisten = \"\"\n");
    std::fs::write(path, text).unwrap();
}

/// `[admin]` section with role `ADMIN` (password `ADMIN_PW`).
fn admin_section() -> String {
    format!(
        "[admin]\nroles = {{ {ADMIN} = \"{}\" }}\n",
        secret(ADMIN_PW)
    )
}

/// `[tls]` section with a certificate and key.
fn tls_section(cert: &Path, key: &Path) -> String {
    format!(
        "[tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nmode = \"allow\"\n",
        cert.display(),
        key.display()
    )
}

/// Starts `pgbranch serve --upstream <shared cluster> --listen
/// 127.0.0.1:<port> --config <config>`, stderr (the log) to `log`, and
/// waits until it accepts connections and handles SIGHUP.
async fn start_with_config(config: &Path, log: &Path) -> ProxyProcess {
    let port = free_port();
    let mut cmd = std::process::Command::new(PGBRANCH_BIN);
    cmd.args(["serve", "--upstream", &cluster().tcp_url(), "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--config")
        .arg(config)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (name, _) in std::env::vars() {
        if name.starts_with("PGBRANCH_") {
            cmd.env_remove(name);
        }
    }
    let child = cmd.spawn().expect("pgbranch binary starts");
    let mut proxy = ProxyProcess { child, port };
    let pid = proxy.pid();
    let mut exited = None;
    wait_for("pgbranch to accept connections", || {
        exited = exited.or(proxy.child.try_wait().unwrap());
        async move {
            exited.is_some()
                || tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
        }
    })
    .await;
    assert!(
        exited.is_none(),
        "pgbranch exited ({exited:?}): {}",
        read_log(log)
    );
    // The handlers are installed before the listener opens: a SIGHUP
    // sent as soon as the port answers reloads rather than kills.
    assert!(
        handles_sighup(pid),
        "pgbranch listens before it handles SIGHUP"
    );
    proxy
}

/// Whether process `pid` catches SIGHUP (its `SigCgt` mask).
fn handles_sighup(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (libc::SIGHUP - 1)) != 0)
}

fn sighup(proxy: &ProxyProcess) {
    // SAFETY: kill has no memory-safety preconditions.
    let rc = unsafe { libc::kill(proxy.pid() as i32, libc::SIGHUP) };
    assert_eq!(rc, 0, "kill -HUP failed");
}

/// libpq connection string to the admin console (no TLS: SCRAM without
/// channel binding).
fn admin_conn(port: u16, user: &str) -> String {
    format!("host=127.0.0.1 port={port} user={user} dbname=pgbranch sslmode=disable")
}

/// Runs `sql` in the admin console with psql; (success, stdout, stderr).
/// Errors are printed with their SQLSTATE.
async fn admin_psql(port: u16, user: &str, password: &str, sql: &str) -> (bool, String, String) {
    tokio::time::timeout(
        HANG_GUARD,
        psql_env(
            &admin_conn(port, user),
            &["-w", "-At", "-v", "VERBOSITY=verbose", "-c", sql],
            &[("PGPASSWORD", password)],
        ),
    )
    .await
    .expect("psql finished")
}

/// RELOAD through the console fails with F0000 "configuration not
/// reloaded" naming `reason`, and SHOW CONFIG is still `before`.
async fn assert_reload_refused(
    port: u16,
    what: &str,
    reason: &str,
    before: &BTreeMap<String, (String, String)>,
) {
    let (ok, out, err) = admin_psql(port, ADMIN, ADMIN_PW, "RELOAD").await;
    assert!(!ok, "{what} should fail: {out}");
    assert!(err.contains("F0000"), "{err}");
    assert!(err.contains("configuration not reloaded"), "{err}");
    assert!(err.contains(reason), "{err}");
    assert_eq!(&show_config(port).await, before);
}

/// The admin console's SHOW CONFIG: key -> (value, changes_on).
async fn show_config(port: u16) -> BTreeMap<String, (String, String)> {
    let (ok, out, err) = admin_psql(port, ADMIN, ADMIN_PW, "SHOW CONFIG").await;
    assert!(ok, "SHOW CONFIG failed: {err}");
    out.lines()
        .map(|line| {
            let mut cols = line.splitn(3, '|');
            let key = cols.next().unwrap().to_string();
            let value = cols.next().unwrap_or_default().to_string();
            let changes_on = cols.next().unwrap_or_default().to_string();
            (key, (value, changes_on))
        })
        .collect()
}

/// The value of one setting in SHOW CONFIG.
async fn setting(port: u16, key: &str) -> String {
    show_config(port)
        .await
        .remove(key)
        .unwrap_or_else(|| panic!("SHOW CONFIG has no {key}"))
        .0
}

/// Waits until SHOW CONFIG shows `key` = `value` (a reload was applied).
async fn wait_setting(port: u16, key: &str, value: &str) {
    wait_for(
        &format!("SHOW CONFIG to show {key} = {value:?}"),
        || async { setting(port, key).await == value },
    )
    .await;
}

fn read_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Waits until the log has a line containing `text`; returns that line.
async fn wait_log_line(log: &Path, text: &str) -> String {
    wait_for(&format!("the log to contain {text:?}"), || async {
        read_log(log).contains(text)
    })
    .await;
    read_log(log)
        .lines()
        .find(|l| l.contains(text))
        .unwrap()
        .to_string()
}

/// Logs in to the admin console with tokio-postgres (SCRAM).
async fn admin_login(port: u16, user: &str, password: &str) -> Result<(), tokio_postgres::Error> {
    let conn = format!("{} password={password}", admin_conn(port, user));
    let (client, connection) = tokio::time::timeout(
        HANG_GUARD,
        tokio_postgres::connect(&conn, tokio_postgres::NoTls),
    )
    .await
    .expect("admin login answered")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client.simple_query("SHOW VERSION").await?;
    Ok(())
}

/// A CA and a "localhost" certificate it signed, written to `dir` under
/// `<name>-ca.pem`, `<name>-cert.pem`, `<name>-key.pem`.
struct CertFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn write_certs(dir: &Path, name: &str) -> CertFiles {
    let certs = make_certs();
    let files = CertFiles {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&files.ca, certs.ca_pem).unwrap();
    std::fs::write(&files.cert, certs.cert_pem).unwrap();
    std::fs::write(&files.key, certs.key_pem).unwrap();
    files
}

/// libpq connection string that requires TLS with a certificate signed by
/// `ca` for "localhost".
fn verify_full(port: u16, ca: &Path) -> String {
    format!(
        "host=localhost hostaddr=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=verify-full sslrootcert={}",
        ca.display()
    )
}

/// A new TLS connection verified against `ca`; (success, stdout, stderr).
async fn tls_select(port: u16, ca: &Path) -> (bool, String, String) {
    tokio::time::timeout(
        HANG_GUARD,
        psql(&verify_full(port, ca), &["-At", "-c", "SELECT 'tls ok'"]),
    )
    .await
    .expect("psql finished")
}

async fn assert_tls_works(port: u16, ca: &Path) {
    let (ok, out, err) = tls_select(port, ca).await;
    assert!(
        ok && out.trim() == "tls ok",
        "TLS connection verified against {} failed: {err}",
        ca.display()
    );
}

async fn assert_tls_refused(port: u16, ca: &Path) {
    let (ok, out, err) = tls_select(port, ca).await;
    assert!(
        !ok,
        "TLS connection verified against {} should fail (wrong CA), got {out}",
        ca.display()
    );
    assert!(
        err.contains("SSL error"),
        "expected a TLS failure (certificate not verified), got: {err}"
    );
}

/// A long-lived psql reading statements from a pipe.
struct OpenPsql {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl OpenPsql {
    fn start(conn: &str) -> OpenPsql {
        let mut child = tokio::process::Command::new("psql")
            .args(["-X", "-At", conn])
            .env_remove("PGPASSWORD")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("psql runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        OpenPsql {
            child,
            stdin,
            stdout,
        }
    }

    /// Sends one statement and returns the one line it prints.
    async fn query_line(&mut self, sql: &str) -> String {
        self.stdin
            .write_all(format!("{sql}\n").as_bytes())
            .await
            .unwrap();
        self.stdin.flush().await.unwrap();
        match tokio::time::timeout(HANG_GUARD, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) => line,
            other => {
                // psql ended or printed nothing: show why.
                let _ = self.child.start_kill();
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    use tokio::io::AsyncReadExt;
                    let _ = tokio::time::timeout(HANG_GUARD, e.read_to_string(&mut err)).await;
                }
                panic!("open psql session gave no answer to {sql}: {other:?}; stderr: {err}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_new_certificate_to_new_connections_while_an_open_session_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_certs(dir.path(), "one");
    let two = write_certs(dir.path(), "two");
    let config = dir.path().join("pgbranch.toml");
    let log = dir.path().join("pgbranch.log");
    write_config(
        &config,
        &format!("{}\n{}", tls_section(&one.cert, &one.key), admin_section()),
    );
    let proxy = start_with_config(&config, &log).await;
    let port = proxy.port;

    // A TLS session opened with the first certificate.
    let mut open = OpenPsql::start(&verify_full(port, &one.ca));
    assert_eq!(open.query_line("SELECT 1;").await, "1");
    assert_tls_refused(port, &two.ca).await;

    write_config(
        &config,
        &format!("{}\n{}", tls_section(&two.cert, &two.key), admin_section()),
    );
    sighup(&proxy);
    wait_setting(port, "tls.cert_file", &two.cert.display().to_string()).await;
    assert_eq!(
        setting(port, "tls.key_file").await,
        two.key.display().to_string()
    );

    // New connections get the second certificate...
    assert_tls_works(port, &two.ca).await;
    assert_tls_refused(port, &one.ca).await;
    // ...while the session opened before the reload goes on.
    assert_eq!(open.query_line("SELECT 2;").await, "2");
    let reloaded = wait_log_line(&log, "configuration reloaded").await;
    assert!(reloaded.contains("tls.cert_file"), "{reloaded}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_certificate_files_again_under_the_same_names() {
    let dir = tempfile::tempdir().unwrap();
    let one = write_certs(dir.path(), "one");
    let config = dir.path().join("pgbranch.toml");
    let log = dir.path().join("pgbranch.log");
    write_config(
        &config,
        &format!("{}\n{}", tls_section(&one.cert, &one.key), admin_section()),
    );
    let proxy = start_with_config(&config, &log).await;
    let port = proxy.port;
    assert_tls_works(port, &one.ca).await;

    // A renewed certificate under the same file names; the file itself
    // does not change.
    let renewed = write_certs(dir.path(), "renewed");
    std::fs::copy(&renewed.cert, &one.cert).unwrap();
    std::fs::copy(&renewed.key, &one.key).unwrap();
    let (ok, _, err) = admin_psql(port, ADMIN, ADMIN_PW, "RELOAD").await;
    assert!(ok, "RELOAD failed: {err}");

    assert_tls_works(port, &renewed.ca).await;
    assert_tls_refused(port, &one.ca).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_reload_is_rejected_and_the_old_configuration_stays() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgbranch.toml");
    let log = dir.path().join("pgbranch.log");
    let valid = format!(
        "[log]\nlevel = \"info\"\n\n[branches]\nprotected = []\n\n{}\n{}",
        tls_section(&c.cert_file, &c.key_file),
        admin_section()
    );
    write_config(&config, &valid);
    let proxy = start_with_config(&config, &log).await;
    let port = proxy.port;
    let before = show_config(port).await;
    assert_eq!(before["branches.protected"].0, "");
    assert_eq!(before["tls.key_file"].0, c.key_file.display().to_string());

    // (a) A key file that holds no key, with other changes next to it:
    // none of them may be applied.
    let garbage_key = dir.path().join("garbage.key");
    std::fs::write(&garbage_key, "this is not a PEM private key\n").unwrap();
    write_config(
        &config,
        &format!(
            "[log]\nlevel = \"debug\"\n\n[branches]\nprotected = [\"main\"]\n\n{}\n{}",
            tls_section(&c.cert_file, &garbage_key),
            admin_section()
        ),
    );
    sighup(&proxy);
    let refused = wait_log_line(&log, "configuration not reloaded").await;
    assert!(refused.contains("ERROR"), "{refused}");
    assert!(
        refused.contains("tls.key_file") && refused.contains("garbage.key"),
        "the log line should name the key file: {refused}"
    );
    assert!(
        !read_log(&log).contains("configuration reloaded"),
        "{}",
        read_log(&log)
    );
    assert_eq!(show_config(port).await, before);
    // Nothing changed: TLS with the old certificate, plain connections,
    // and DDL on main (which the refused file would have protected).
    assert_tls_works(port, &c.ca_file).await;
    let db = c.fresh_db();
    let plain = format!("host=127.0.0.1 port={port} user=postgres dbname={db} sslmode=disable");
    let client = connect(&plain).await;
    client
        .batch_execute("CREATE TABLE after_refused_sighup (id int)")
        .await
        .expect("main is not protected: the refused configuration was not applied");

    // (b) RELOAD through the admin console: an unknown key, then a syntax
    // error. Both are refused with F0000 and their reason.
    write_config(
        &config,
        &format!(
            "[branches]\nprotected = [\"main\"]\nprotect_everything = true\n\n{}\n{}",
            tls_section(&c.cert_file, &c.key_file),
            admin_section()
        ),
    );
    assert_reload_refused(
        port,
        "RELOAD of an unknown key",
        "protect_everything",
        &before,
    )
    .await;

    write_config(
        &config,
        &format!(
            "[branches]\nprotected = [\"main\"\n\n{}\n{}",
            tls_section(&c.cert_file, &c.key_file),
            admin_section()
        ),
    );
    assert_reload_refused(
        port,
        "RELOAD of a syntax error",
        &config.display().to_string(),
        &before,
    )
    .await;
    client
        .batch_execute("CREATE TABLE after_refused_reload (id int)")
        .await
        .expect("main is not protected: the refused configuration was not applied");
    // New plain connections are still served.
    let again = connect(&plain).await;
    assert_eq!(scalar::<i32>(&again, "SELECT 1").await, 1);

    // Reloading still works once the file is valid again.
    write_config(
        &config,
        &valid.replace("protected = []", "protected = [\"main\"]"),
    );
    let (ok, _, err) = admin_psql(port, ADMIN, ADMIN_PW, "RELOAD").await;
    assert!(ok, "RELOAD of a valid file failed: {err}");
    assert_eq!(setting(port, "branches.protected").await, "main");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_protected_branches_for_open_sessions() {
    let c = cluster();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgbranch.toml");
    let log = dir.path().join("pgbranch.log");
    let with_protected =
        |list: &str| format!("[branches]\nprotected = {list}\n\n{}", admin_section());
    write_config(&config, &with_protected("[]"));
    let proxy = start_with_config(&config, &log).await;
    let port = proxy.port;

    let db = c.fresh_db();
    let session = connect(&format!(
        "host=127.0.0.1 port={port} user=postgres dbname={db}"
    ))
    .await;
    session
        .batch_execute("CREATE TABLE t1 (id int)")
        .await
        .expect("DDL on unprotected main");

    write_config(&config, &with_protected("[\"main\"]"));
    sighup(&proxy);
    wait_setting(port, "branches.protected", "main").await;

    let err = session
        .batch_execute("CREATE TABLE t2 (id int)")
        .await
        .expect_err("DDL on main, now protected, should be refused");
    assert_eq!(code(&err), "42501", "{err}");
    assert_eq!(scalar::<i32>(&session, "SELECT 1").await, 1);
    let direct = connect(&c.direct(&db)).await;
    assert!(
        scalar::<Option<String>>(&direct, "SELECT to_regclass('public.t2')::text")
            .await
            .is_none(),
        "t2 must not exist"
    );

    write_config(&config, &with_protected("[]"));
    sighup(&proxy);
    wait_setting(port, "branches.protected", "").await;
    session
        .batch_execute("CREATE TABLE t2 (id int)")
        .await
        .expect("DDL on main, unprotected again");
    assert_eq!(
        scalar::<Option<String>>(&direct, "SELECT to_regclass('public.t2')::text").await,
        Some("t2".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_changes_admin_roles_and_log_level_and_reports_restart_only_settings() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgbranch.toml");
    let log = dir.path().join("pgbranch.log");
    let pw2 = "ops-pw-2";
    let audit_pw = "audit-pw";
    write_config(
        &config,
        &format!(
            "workers = 1\n\n[log]\nlevel = \"warn\"\n\n{}",
            admin_section()
        ),
    );
    let proxy = start_with_config(&config, &log).await;
    let port = proxy.port;

    admin_login(port, ADMIN, ADMIN_PW)
        .await
        .expect("ops logs in with the first password");
    let err = admin_login(port, "audit", audit_pw)
        .await
        .expect_err("audit is not a role yet");
    assert_eq!(code(&err), "28P01", "{err}");
    // INFO is off: an admin session (it has answered, so its start was
    // logged if it ever will be) leaves no INFO line.
    assert!(
        !read_log(&log).contains("admin console session started"),
        "{}",
        read_log(&log)
    );

    write_config(
        &config,
        &format!(
            "workers = 2\n\n[log]\nlevel = \"info\"\n\n[admin]\nroles = {{ {ADMIN} = \"{}\", audit = \"{}\" }}\n",
            secret(pw2),
            secret(audit_pw)
        ),
    );
    sighup(&proxy);
    let reloaded = wait_log_line(&log, "configuration reloaded").await;
    assert!(reloaded.contains("INFO"), "{reloaded}");
    assert!(
        reloaded.contains("admin.roles") && reloaded.contains("log.level"),
        "{reloaded}"
    );
    assert!(!reloaded.contains("workers"), "{reloaded}");
    let restart = wait_log_line(&log, "take effect only after a restart").await;
    assert!(restart.contains("WARN"), "{restart}");
    assert!(restart.contains("workers"), "{restart}");

    let err = admin_login(port, ADMIN, ADMIN_PW)
        .await
        .expect_err("the old password of ops no longer works");
    assert_eq!(code(&err), "28P01", "{err}");
    admin_login(port, ADMIN, pw2)
        .await
        .expect("ops logs in with the new password");
    admin_login(port, "audit", audit_pw)
        .await
        .expect("audit logs in");

    let (ok, out, err) = admin_psql(port, "audit", audit_pw, "SHOW CONFIG").await;
    assert!(ok, "{err}");
    let shown: BTreeMap<&str, Vec<&str>> = out
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split('|').collect();
            (cols[0], cols[1..].to_vec())
        })
        .collect();
    assert_eq!(shown["workers"], ["1", "restart"], "running value kept");
    assert_eq!(shown["log.level"], ["info", "reload"]);
    assert_eq!(shown["admin.roles"][0], "audit, ops");

    // INFO is on now.
    wait_log_line(&log, "admin console session started").await;
}
