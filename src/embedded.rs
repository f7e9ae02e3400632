//! A private PostgreSQL cluster: `pgbranch serve` without an upstream runs
//! one, and the integration tests run one per test binary.
//!
//! - The binaries are found in `embedded.pg_bindir`, `pg_config --bindir`,
//!   `/usr/lib/postgresql/<major>/bin` (newest first) or `PATH`; a machine
//!   without them gets an error that says what to install.
//! - PostgreSQL refuses to run as root: when pgbranch runs as root, initdb
//!   and the server run as the `postgres` system user, which owns the data
//!   and socket directories.
//! - The server runs under a tiny shell wrapper whose standard input is a
//!   pipe from this process: when the pipe closes — `stop()`, drop, or this
//!   process dying for any reason — the wrapper stops the server with a
//!   fast shutdown. No server outlives the process that started it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

/// Why the private cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) were not found{searched}.\n\
         Install them, e.g. on Debian/Ubuntu: `sudo apt-get install -y postgresql`,\n\
         or point pgbranch at them with `--pg-bindir DIR` (PGBRANCH_EMBEDDED_PG_BINDIR),\n\
         or give an upstream with `--upstream postgres://user@host:port/db`."
    )]
    NotInstalled { searched: String },
    #[error("running as root needs the `postgres` system user to run PostgreSQL (PostgreSQL refuses to run as root); install the postgresql package or run pgbranch as an ordinary user")]
    NoPostgresUser,
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}):\n{output}")]
    Command {
        command: String,
        status: String,
        output: String,
    },
    #[error("PostgreSQL did not start within {after:?}; its log ({log}) ends with:\n{tail}")]
    StartTimeout {
        after: Duration,
        log: String,
        tail: String,
    },
    #[error("PostgreSQL exited during startup ({status}); its log ({log}) ends with:\n{tail}")]
    Exited {
        status: String,
        log: String,
        tail: String,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> EmbeddedError {
    let what = what.into();
    move |source| EmbeddedError::Io { what, source }
}

/// Where the PostgreSQL server binaries are.
#[derive(Debug, Clone)]
pub struct PgInstall {
    pub bindir: PathBuf,
}

impl PgInstall {
    /// Finds the server binaries (see the module documentation).
    pub fn find(explicit: Option<&Path>) -> Result<Self, EmbeddedError> {
        let has_server =
            |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
        let mut searched = Vec::new();
        if let Some(dir) = explicit {
            if has_server(dir) {
                return Ok(Self {
                    bindir: dir.to_path_buf(),
                });
            }
            searched.push(dir.display().to_string());
            return Err(EmbeddedError::NotInstalled {
                searched: format!(" in {}", searched.join(", ")),
            });
        }
        if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if out.status.success() && has_server(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let major = e.file_name().to_string_lossy().parse::<u32>().ok()?;
                Some((major, e.path().join("bin")))
            })
            .collect();
        versioned.sort_by_key(|v| std::cmp::Reverse(v.0));
        for (_, dir) in versioned {
            if has_server(&dir) {
                return Ok(Self { bindir: dir });
            }
        }
        searched.push("/usr/lib/postgresql/*/bin".into());
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                if has_server(&dir) {
                    return Ok(Self { bindir: dir });
                }
            }
        }
        searched.push("PATH".into());
        Err(EmbeddedError::NotInstalled {
            searched: format!(" (searched pg_config --bindir, {})", searched.join(", ")),
        })
    }

    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

/// The user PostgreSQL runs as when this process is root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Result<Option<RunAs>, EmbeddedError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = std::ffi::CString::new("postgres").expect("no NUL");
    // SAFETY: getpwnam returns NULL or a pointer to a static record, read
    // immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        return Err(EmbeddedError::NoPostgresUser);
    }
    // SAFETY: pw was checked to be non-null.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(Some(RunAs { uid, gid }))
}

/// How to set up and run a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub data_dir: PathBuf,
    /// Directory of the server's Unix socket.
    pub socket_dir: PathBuf,
    /// Port: also the Unix socket's name (`.s.PGSQL.<port>`).
    pub port: u16,
    /// Listen on 127.0.0.1 as well as the Unix socket.
    pub listen_tcp: bool,
    /// Superuser created by initdb.
    pub superuser: String,
    /// Skip fsync (tests).
    pub no_sync: bool,
    /// Extra `-c name=value` settings.
    pub settings: Vec<(String, String)>,
}

/// A private PostgreSQL cluster.
pub struct Cluster {
    install: PgInstall,
    opts: ClusterOptions,
    run_as: Option<RunAs>,
    wrapper: Option<(Child, ChildStdin)>,
}

/// The wrapper: runs the server, stops it (fast shutdown) when standard
/// input closes, exits when the server exits. Background jobs of a
/// non-interactive shell get /dev/null as stdin, hence the copy on fd 3.
const WRAPPER: &str = r#"exec 3<&0
"$@" </dev/null 3<&- &
pid=$!
( read _ <&3; kill -INT $pid 2>/dev/null ) &
watcher=$!
exec 3<&-
wait $pid
status=$?
kill $watcher 2>/dev/null
exit $status"#;

impl Cluster {
    /// Prepares the directories and runs initdb when the data directory is
    /// not initialised yet.
    pub fn init(install: PgInstall, opts: ClusterOptions) -> Result<Self, EmbeddedError> {
        let run_as = run_as()?;
        let cluster = Self {
            install,
            opts,
            run_as,
            wrapper: None,
        };
        for dir in [&cluster.opts.data_dir, &cluster.opts.socket_dir] {
            std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
            cluster.give(dir)?;
        }
        if !cluster.opts.data_dir.join("PG_VERSION").exists() {
            let mut cmd = cluster.command(cluster.install.bin("initdb"));
            cmd.arg("-D").arg(&cluster.opts.data_dir).args([
                "-U",
                &cluster.opts.superuser,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
            ]);
            if cluster.opts.no_sync {
                cmd.arg("--no-sync");
            }
            cluster.run(cmd, "initdb")?;
        }
        Ok(cluster)
    }

    /// Makes `path` owned by the user PostgreSQL runs as, mode 0700.
    fn give(&self, path: &Path) -> Result<(), EmbeddedError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(RunAs { uid, gid }) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(format!(
                "giving {} to the postgres user",
                path.display()
            )))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(format!("setting permissions of {}", path.display())))
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(program);
        if let Some(RunAs { uid, gid }) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        // The server's working directory must be readable by its user.
        cmd.current_dir("/");
        cmd.env_remove("PGDATA");
        cmd
    }

    fn run(&self, mut cmd: Command, name: &str) -> Result<(), EmbeddedError> {
        let out = cmd.output().map_err(io_err(format!("running {name}")))?;
        if !out.status.success() {
            return Err(EmbeddedError::Command {
                command: name.into(),
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            });
        }
        Ok(())
    }

    pub fn data_dir(&self) -> &Path {
        &self.opts.data_dir
    }

    pub fn socket_dir(&self) -> &Path {
        &self.opts.socket_dir
    }

    pub fn port(&self) -> u16 {
        self.opts.port
    }

    pub fn superuser(&self) -> &str {
        &self.opts.superuser
    }

    pub fn log_path(&self) -> PathBuf {
        self.opts.data_dir.join("pgbranch-postgres.log")
    }

    /// A libpq connection string reaching the server over its Unix socket.
    pub fn socket_url(&self, dbname: &str) -> String {
        format!(
            "host={} port={} user={} dbname={dbname}",
            self.opts.socket_dir.display(),
            self.opts.port,
            self.opts.superuser
        )
    }

    /// Writes a file into the data directory (e.g. `pg_hba.conf`).
    pub fn write_file(&self, name: &str, contents: &str) -> Result<(), EmbeddedError> {
        let path = self.opts.data_dir.join(name);
        std::fs::write(&path, contents).map_err(io_err(format!("writing {}", path.display())))?;
        if let Some(RunAs { uid, gid }) = self.run_as {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid)).map_err(io_err(format!(
                "giving {} to the postgres user",
                path.display()
            )))?;
        }
        Ok(())
    }

    /// Gives a file or directory outside the data directory to the server's
    /// user (e.g. TLS certificates).
    pub fn give_file(&self, path: &Path, mode: u32) -> Result<(), EmbeddedError> {
        use std::os::unix::fs::PermissionsExt;
        if let Some(RunAs { uid, gid }) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(io_err(format!(
                "giving {} to the postgres user",
                path.display()
            )))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("setting permissions of {}", path.display())))
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.wrapper {
            Some((child, _)) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&mut self) -> Result<(), EmbeddedError> {
        if self.is_running() {
            return Ok(());
        }
        let log_path = self.log_path();
        // The data directory belongs to the server's user; when pgbranch
        // runs as root it must not follow a link planted there.
        use std::os::unix::fs::OpenOptionsExt;
        let log = File::options()
            .create(true)
            .append(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&log_path)
            .map_err(io_err(format!("opening {}", log_path.display())))?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let pid_file = self.opts.data_dir.join("postmaster.pid");
        let mut cmd = self.command("sh");
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg("pgbranch-postgres")
            .arg(self.install.bin("postgres"))
            .arg("-D")
            .arg(&self.opts.data_dir)
            .arg("-p")
            .arg(self.opts.port.to_string())
            .arg("-c")
            .arg(format!(
                "listen_addresses={}",
                if self.opts.listen_tcp {
                    "127.0.0.1"
                } else {
                    ""
                }
            ))
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.opts.socket_dir.display()
            ));
        for (k, v) in &self.opts.settings {
            cmd.arg("-c").arg(format!("{k}={v}"));
        }
        cmd.stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(io_err("log file"))?)
            .stderr(log);
        let mut child = cmd.spawn().map_err(io_err("starting postgres"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        self.wrapper = Some((child, stdin));

        let limit = Duration::from_secs(60);
        let started = Instant::now();
        loop {
            if let Some((child, _)) = &mut self.wrapper {
                if let Ok(Some(status)) = child.try_wait() {
                    self.wrapper = None;
                    return Err(EmbeddedError::Exited {
                        status: status.to_string(),
                        log: log_path.display().to_string(),
                        tail: log_tail(&log_path, log_start),
                    });
                }
            }
            // The postmaster writes "ready" into line 8 of postmaster.pid
            // once it accepts connections (what `pg_ctl -w` waits for).
            if std::fs::read_to_string(&pid_file)
                .map(|s| s.lines().nth(7).is_some_and(|l| l.trim() == "ready"))
                .unwrap_or(false)
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                self.stop();
                return Err(EmbeddedError::StartTimeout {
                    after: limit,
                    log: log_path.display().to_string(),
                    tail: log_tail(&log_path, log_start),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the server (fast shutdown) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some((mut child, stdin)) = self.wrapper.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The end of the log written since `from`, for error messages.
fn log_tail(path: &Path, from: u64) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = f.seek(SeekFrom::Start(from));
        let _ = f.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_install_error_says_what_to_install() {
        let err = PgInstall::find(Some(Path::new("/nonexistent/bin"))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("apt-get install -y postgresql"), "{text}");
        assert!(text.contains("/nonexistent/bin"), "{text}");
    }
}
