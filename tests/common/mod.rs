//! Shared integration-test harness.
//!
//! - One private PostgreSQL cluster per test binary ([`cluster`]), started
//!   with `pgbranch::embedded::Cluster` (initdb into a temp dir, random
//!   port, private socket directory; as the `postgres` user when the tests
//!   run as root). It stops when the test process exits, however it exits.
//! - One fresh database per test ([`TestCluster::fresh_db`]).
//! - The proxy runs in-process ([`start_proxy`]) or as the real binary
//!   ([`PGBRANCH_BIN`]).
//! - The cluster has roles for every authentication method and TLS on, so
//!   every test binary can use them.
//!
//! A machine without PostgreSQL fails here with the installation hint, it
//! never skips.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use pgbranch::config::Config;
use pgbranch::embedded::{Cluster, ClusterOptions, PgInstall};
use pgbranch::proxy::hooks::HookFactory;
use pgbranch::proxy::server::{Server, ServerHandle};

pub mod raw;
#[allow(unused_imports)]
pub use raw::{Msg, RawConn};

pub const PGBRANCH_BIN: &str = env!("CARGO_BIN_EXE_pgbranch");

/// Password of every password-authenticated test role.
pub const PASSWORD: &str = "s3cret-pw";

/// A running private cluster and its files.
pub struct TestCluster {
    pub cluster: Mutex<Cluster>,
    pub port: u16,
    pub socket_dir: PathBuf,
    /// CA certificate (PEM) that signed the server certificate.
    pub ca_file: PathBuf,
    /// Certificate and key for "localhost", usable by the proxy too.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    dbs: AtomicU32,
    _dir: tempfile::TempDir,
}

/// Picks a free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Test TLS material: a CA and a "localhost" certificate it signed.
pub struct Certs {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn make_certs() -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pgbranch test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Certs {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

const HBA: &str = "\
local all all trust
host all pgb_md5 127.0.0.1/32 md5
host all pgb_password 127.0.0.1/32 password
host all pgb_scram 127.0.0.1/32 scram-sha-256
host all all 127.0.0.1/32 trust
";

impl TestCluster {
    /// Starts a new private cluster (most tests share [`cluster`]; tests
    /// that stop or restart the server use their own).
    pub fn start_new() -> TestCluster {
        let install = PgInstall::find(None).unwrap_or_else(|e| panic!("{e}"));
        remove_dead_test_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("pgbranch-test-{}-", std::process::id()))
            .tempdir()
            .unwrap();
        let certs = make_certs();
        let tls_dir = dir.path().join("tls");
        std::fs::create_dir(&tls_dir).unwrap();
        let ca_file = tls_dir.join("ca.pem");
        let cert_file = tls_dir.join("server.pem");
        let key_file = tls_dir.join("server.key");
        std::fs::write(&ca_file, &certs.ca_pem).unwrap();
        std::fs::write(&cert_file, &certs.cert_pem).unwrap();
        std::fs::write(&key_file, &certs.key_pem).unwrap();
        let socket_dir = dir.path().join("sock");
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port();
            let opts = ClusterOptions {
                data_dir: dir.path().join("data"),
                socket_dir: socket_dir.clone(),
                port,
                listen_tcp: true,
                superuser: "postgres".into(),
                no_sync: true,
                settings: vec![
                    ("ssl".into(), "on".into()),
                    ("ssl_cert_file".into(), cert_file.display().to_string()),
                    ("ssl_key_file".into(), key_file.display().to_string()),
                    ("max_connections".into(), "200".into()),
                    ("fsync".into(), "off".into()),
                    ("shared_buffers".into(), "32MB".into()),
                ],
            };
            let mut cluster =
                Cluster::init(install.clone(), opts).unwrap_or_else(|e| panic!("{e}"));
            cluster.give_file(dir.path(), 0o755).unwrap();
            cluster.give_file(&tls_dir, 0o755).unwrap();
            cluster.give_file(&ca_file, 0o644).unwrap();
            cluster.give_file(&cert_file, 0o644).unwrap();
            cluster.give_file(&key_file, 0o600).unwrap();
            cluster.write_file("pg_hba.conf", HBA).unwrap();
            match cluster.start() {
                Ok(()) => {
                    let tc = TestCluster {
                        cluster: Mutex::new(cluster),
                        port,
                        socket_dir,
                        ca_file,
                        cert_file,
                        key_file,
                        dbs: AtomicU32::new(0),
                        _dir: dir,
                    };
                    tc.setup_roles();
                    return tc;
                }
                // Port taken between probe and bind: try another.
                Err(e) => last_err = Some(e),
            }
        }
        panic!("could not start the test cluster: {}", last_err.unwrap());
    }

    fn setup_roles(&self) {
        let sql = format!(
            "SET password_encryption = 'md5';
             CREATE ROLE pgb_md5 LOGIN PASSWORD '{PASSWORD}';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE pgb_scram LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE pgb_password LOGIN PASSWORD '{PASSWORD}';
             CREATE ROLE pgb_plain LOGIN;"
        );
        self.psql_socket("postgres", &sql);
    }

    /// Runs SQL directly on the server (not through the proxy) with psql.
    pub fn psql_socket(&self, db: &str, sql: &str) -> String {
        let out = std::process::Command::new("psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .env("PGHOST", &self.socket_dir)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGDATABASE", db)
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Creates an empty database for one test and returns its name.
    pub fn fresh_db(&self) -> String {
        let n = self.dbs.fetch_add(1, Ordering::SeqCst);
        let name = format!("t{}_{n}", std::process::id());
        self.psql_socket("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// URL the proxy uses to reach this cluster over TCP.
    pub fn tcp_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Connection string for a direct connection (bypassing the proxy).
    pub fn direct(&self, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user=postgres dbname={db}",
            self.port
        )
    }

    pub fn stop(&self) {
        self.cluster.lock().unwrap().stop();
    }

    pub fn start(&self) {
        self.cluster.lock().unwrap().start().unwrap();
    }
}

/// The shared cluster lives in a static that is never dropped, so its
/// directory outlives the test process (the server itself is stopped by its
/// wrapper). Each test process removes the directories of test processes
/// that no longer exist.
fn remove_dead_test_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("pgbranch-test-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

static CLUSTER: OnceLock<TestCluster> = OnceLock::new();

/// The cluster shared by the tests of this binary.
pub fn cluster() -> &'static TestCluster {
    CLUSTER.get_or_init(TestCluster::start_new)
}

/// A proxy running inside the test process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    pub unix_socket: Option<PathBuf>,
    pub cancel_map: std::sync::Arc<pgbranch::proxy::cancel::CancelMap>,
    /// The /metrics endpoint, when `metrics.listen` was set.
    pub metrics_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl TestProxy {
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// libpq connection string through the proxy.
    pub fn conn_str(&self, user: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname={db}",
            self.port()
        )
    }

    /// Shuts down gracefully and waits until the server task ends.
    pub async fn stop(self) {
        self.handle.shutdown();
        self.task.await.unwrap();
    }
}

/// A config for an in-process test proxy on a random port.
pub fn test_config() -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    // Tests run in parallel: no fixed metrics port (tests/metrics.rs sets
    // one when it needs the endpoint).
    config.metrics.listen = String::new();
    config
}

/// Starts an in-process proxy in front of `upstream_url`.
pub async fn start_proxy_to(config: Config, upstream_url: &str) -> TestProxy {
    start_proxy_with_hooks(config, upstream_url, None).await
}

/// Starts an in-process proxy in front of the shared cluster.
pub async fn start_proxy(config: Config) -> TestProxy {
    let url = cluster().tcp_url();
    start_proxy_to(config, &url).await
}

pub async fn start_proxy_with_hooks(
    config: Config,
    upstream_url: &str,
    hooks: Option<std::sync::Arc<dyn HookFactory>>,
) -> TestProxy {
    let server = match hooks {
        Some(h) => Server::bind_with_hooks(config, upstream_url, h).await,
        None => Server::bind(config, upstream_url).await,
    }
    .expect("proxy binds");
    let addr = server.local_addr();
    let handle = server.handle();
    let unix_socket = server.unix_socket_path().cloned();
    let cancel_map = server.cancel_map();
    let metrics_addr = server.metrics_addr();
    let task = tokio::spawn(server.run());
    TestProxy {
        addr,
        handle,
        unix_socket,
        cancel_map,
        metrics_addr,
        task,
    }
}

/// Connects with tokio-postgres (no TLS) and drives the connection in the
/// background.
pub async fn connect(conn_str: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Connects with tokio-postgres and hands every asynchronous message
/// (notices, notifications) to the returned channel.
pub async fn connect_with_messages(
    conn_str: &str,
) -> (
    tokio_postgres::Client,
    tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::AsyncMessage>,
) {
    use futures_util::StreamExt;
    let (client, mut conn) = tokio_postgres::connect(conn_str, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {conn_str}: {e}"));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(msg)) = stream.next().await {
            let _ = tx.send(msg);
        }
    });
    (client, rx)
}

/// Runs psql with `args`, returning (success, stdout, stderr). Async, so
/// that an in-process proxy on the same runtime keeps running.
pub async fn psql(conn_str: &str, args: &[&str]) -> (bool, String, String) {
    psql_env(conn_str, args, &[]).await
}

/// Runs psql with extra environment (PGPASSWORD is removed unless given).
pub async fn psql_env(
    conn_str: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new("psql");
    cmd.arg("-X")
        .arg(conn_str)
        .args(args)
        .env_remove("PGPASSWORD");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdin(std::process::Stdio::null());
    let out = cmd.output().await.expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Path of a PostgreSQL client binary (pgbench is not always on PATH).
pub fn pg_bin(name: &str) -> PathBuf {
    let install = PgInstall::find(None).unwrap_or_else(|e| panic!("{e}"));
    let p = install.bin(name);
    if p.exists() {
        p
    } else {
        Path::new(name).to_path_buf()
    }
}

/// Resident set size and its peak (VmRSS, VmHWM) of a process, in KiB.
pub fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The proxy binary as a child process, killed on drop.
pub struct ProxyProcess {
    pub child: std::process::Child,
    pub port: u16,
}

impl ProxyProcess {
    /// Starts `pgbranch serve --upstream URL --listen 127.0.0.1:<port>` and
    /// waits until it accepts TCP connections.
    pub fn start(upstream: &str, extra_args: &[&str], env: &[(&str, &str)]) -> ProxyProcess {
        Self::start_logging(upstream, extra_args, env, None)
    }

    /// As [`ProxyProcess::start`], with the proxy's log (stderr) written
    /// to `log` when given.
    pub fn start_logging(
        upstream: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> ProxyProcess {
        let port = free_port();
        let mut cmd = std::process::Command::new(PGBRANCH_BIN);
        cmd.args(["serve", "--upstream", upstream, "--listen"])
            .arg(format!("127.0.0.1:{port}"))
            .args(extra_args)
            .env("PGBRANCH_LOG", "warn")
            .env("PGBRANCH_METRICS_LISTEN", "")
            .stdout(std::process::Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(path) = log {
            cmd.stderr(std::fs::File::create(path).expect("log file"));
        }
        let child = cmd.spawn().expect("pgbranch binary starts");
        let p = ProxyProcess { child, port };
        p.wait_ready();
        p
    }

    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pgbranch did not start listening"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 20 ms for up to 20 s; panics with `what` otherwise.
/// For waiting on server-side state, never for asserting speed.
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1000 {
        if cond().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Waits until backend `pid` has left the server.
pub async fn wait_backend_gone(direct: &tokio_postgres::Client, pid: i32) {
    wait_for(&format!("backend {pid} to exit"), || async {
        direct
            .query_opt("SELECT 1 FROM pg_stat_activity WHERE pid = $1", &[&pid])
            .await
            .unwrap()
            .is_none()
    })
    .await;
}

/// Waits until backend `pid` is running a query containing `fragment`.
pub async fn wait_query_active(direct: &tokio_postgres::Client, pid: i32, fragment: &str) {
    let pattern = format!("%{fragment}%");
    wait_for(&format!("backend {pid} to run {fragment}"), || async {
        direct
            .query_opt(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE $2",
                &[&pid, &pattern],
            )
            .await
            .unwrap()
            .is_some()
    })
    .await;
}

/// Runs the `pgbranch` binary with `args` (the CLI commands).
pub fn pgbranch_cli(args: &[&str]) -> std::process::Output {
    std::process::Command::new(PGBRANCH_BIN)
        .args(args)
        .output()
        .expect("pgbranch runs")
}

/// URL of database `db` on the shared cluster, as the superuser.
pub fn db_url(db: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{}/{db}", cluster().port)
}

/// A libpq connection string straight to the server as `user`.
pub fn direct_as(user: &str, db: &str) -> String {
    format!(
        "host=127.0.0.1 port={} user={user} dbname={db}",
        cluster().port
    )
}

/// A libpq connection string through `proxy` to branch `branch` of `db`.
pub fn on_branch(proxy: &TestProxy, db: &str, branch: &str) -> String {
    format!(
        "{} options='-c branch={branch}'",
        proxy.conn_str("postgres", db)
    )
}

/// The SQLSTATE of a database error (a readable message otherwise).
pub fn code(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a database error: {e}"))
}

/// The first column of the one row `sql` returns.
pub async fn scalar<T>(c: &tokio_postgres::Client, sql: &str) -> T
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The first column of every row `sql` returns.
pub async fn column<T>(c: &tokio_postgres::Client, sql: &str) -> Vec<T>
where
    T: for<'a> tokio_postgres::types::FromSql<'a>,
{
    c.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// A simple-protocol Query's results, one per CommandComplete the client
/// receives, each with its rows as text (what a client counts as the
/// Query's statements).
pub async fn simple_results(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Vec<String>>> {
    let mut results = Vec::new();
    let mut rows = Vec::new();
    for m in client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    {
        match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => rows.push(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_string())
                    .collect(),
            ),
            tokio_postgres::SimpleQueryMessage::CommandComplete(_) => {
                results.push(std::mem::take(&mut rows))
            }
            _ => {}
        }
    }
    results
}

/// The rows of `sql` run with the simple query protocol, every value as
/// text (NULL as ""), all its statements' rows in one list.
pub async fn simple_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<String>> {
    simple_results(client, sql).await.concat()
}
