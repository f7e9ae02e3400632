//! Opening connections to the upstream PostgreSQL: TCP or Unix socket,
//! optionally TLS with CA verification.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::stream::Stream;
use super::tls;
use crate::config::{UpstreamConfig, UpstreamTlsMode};
use crate::protocol::startup::ssl_request;

/// Where the upstream listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamAddr {
    Tcp { host: String, port: u16 },
    Unix { dir: PathBuf, port: u16 },
}

impl std::fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamAddr::Tcp { host, port } => write!(f, "{host}:{port}"),
            UpstreamAddr::Unix { dir, port } => {
                write!(f, "{}/.s.PGSQL.{port}", dir.display())
            }
        }
    }
}

/// The parsed upstream URL: address plus the user/database the proxy's own
/// probes use (client sessions always use the client's own).
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: UpstreamAddr,
    pub user: Option<String>,
    pub dbname: Option<String>,
    /// The URL's settings (user, password, options) for the proxy's own
    /// SQL probes; its Debug output hides the password.
    pub probe: tokio_postgres::Config,
}

impl UpstreamTarget {
    /// Parses a libpq-style URL or key/value string. Only the first host is
    /// used.
    pub fn from_url(url: &str) -> Result<Self, String> {
        let cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("`{}`: {e}", redact_password(url)))?;
        let port = cfg.get_ports().first().copied().unwrap_or(5432);
        let addr = match cfg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => UpstreamAddr::Tcp {
                host: h.clone(),
                port,
            },
            Some(tokio_postgres::config::Host::Unix(dir)) => UpstreamAddr::Unix {
                dir: dir.clone(),
                port,
            },
            None => return Err(format!("`{}` names no host", redact_password(url))),
        };
        Ok(Self {
            addr,
            user: cfg.get_user().map(str::to_string),
            dbname: cfg.get_dbname().map(str::to_string),
            probe: cfg,
        })
    }
}

/// `password=<value>` (any case, spaces around `=`, a quoted value) with
/// the value replaced by `****`.
fn mask_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password") {
        let key_end = at + found + "password".len();
        let rest = &text[key_end..];
        let eq = rest.len() - rest.trim_start().len();
        if !rest[eq..].starts_with('=') {
            out.push_str(&text[at..key_end]);
            at = key_end;
            continue;
        }
        let value_start = key_end + eq + 1;
        let value = &text[value_start..];
        let value = &value[value.len() - value.trim_start().len()..];
        let value_start = text.len() - value.len();
        let value_len = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote (backslash escapes skipped).
            let mut i = 0;
            let b = quoted.as_bytes();
            while i < b.len() && b[i] != b'\'' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            (i + 2).min(value.len())
        } else {
            value
                .find(|c: char| c.is_whitespace() || c == '&')
                .unwrap_or(value.len())
        };
        out.push_str(&text[at..value_start]);
        out.push_str("****");
        at = value_start + value_len;
    }
    out.push_str(&text[at..]);
    out
}

/// Hides the password of a connection URL (`postgres://u:secret@h`) or
/// key/value string (`password=secret`) for messages and logs.
pub fn redact_password(url: &str) -> String {
    // Wherever the parser finds a password (user info, `?password=`,
    // `password = '...'`), its text goes first.
    let parsed = url
        .parse::<tokio_postgres::Config>()
        .ok()
        .and_then(|c| {
            c.get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned())
        })
        .filter(|p| !p.is_empty());
    let masked;
    let url = match parsed {
        Some(p) => {
            masked = url.replace(&p, "****");
            masked.as_str()
        }
        None => url,
    };
    let url = &mask_password_params(url);
    if let Some(scheme_end) = url.find("://") {
        let rest = &url[scheme_end + 3..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                return format!(
                    "{}{}:****{}",
                    &url[..scheme_end + 3],
                    &rest[..colon],
                    &rest[at..]
                );
            }
        }
        return url.to_string();
    }
    url.split_whitespace()
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=****"),
            _ => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Why the upstream could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to {addr}: timed out after {after:?}")]
    Timeout { addr: String, after: Duration },
    #[error("{addr} refused TLS (sslmode requires it)")]
    TlsRefused { addr: String },
    #[error("TLS handshake with {addr}: {source}")]
    Tls {
        addr: String,
        source: std::io::Error,
    },
}

/// Opens connections to one upstream.
#[derive(Clone)]
pub struct Connector {
    pub target: UpstreamTarget,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
    timeout: Duration,
}

impl Connector {
    pub fn new(
        target: UpstreamTarget,
        cfg: &UpstreamConfig,
        timeout: Duration,
    ) -> Result<Self, String> {
        let tls = match (cfg.tls, &target.addr) {
            (UpstreamTlsMode::Disable, _) => None,
            (_, UpstreamAddr::Unix { .. }) => {
                return Err("upstream TLS is not available over a Unix socket".into())
            }
            (mode, UpstreamAddr::Tcp { host, .. }) => {
                let config = tls::upstream_client_config(mode, cfg.ca_file.as_deref())?;
                let name = rustls_pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| format!("upstream host `{host}` is not a valid TLS name: {e}"))?;
                Some((config, name))
            }
        };
        Ok(Self {
            target,
            tls,
            timeout,
        })
    }

    /// Opens a raw socket (no TLS): used for sessions without TLS and for
    /// cancel requests, which PostgreSQL accepts in the clear.
    pub async fn connect_raw(&self) -> Result<Stream, ConnectError> {
        let addr = &self.target.addr;
        let fut = async {
            match addr {
                UpstreamAddr::Tcp { host, port } => {
                    let s = TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Ok(Stream::Tcp(s))
                }
                UpstreamAddr::Unix { dir, port } => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    Ok(Stream::Unix(UnixStream::connect(path).await?))
                }
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(source)) => Err(ConnectError::Io {
                addr: addr.to_string(),
                source,
            }),
            Err(_) => Err(ConnectError::Timeout {
                addr: addr.to_string(),
                after: self.timeout,
            }),
        }
    }

    /// Opens a session connection: TLS negotiated when configured.
    pub async fn connect(&self) -> Result<Stream, ConnectError> {
        let stream = self.connect_raw().await?;
        let Some((config, name)) = &self.tls else {
            return Ok(stream);
        };
        let Stream::Tcp(mut tcp) = stream else {
            unreachable!("TLS is refused for Unix sockets at configuration time")
        };
        let addr = self.target.addr.to_string();
        let io = |source| ConnectError::Io {
            addr: addr.clone(),
            source,
        };
        let negotiate = async {
            tcp.write_all(&ssl_request()).await.map_err(io)?;
            let answer = tcp.read_u8().await.map_err(io)?;
            if answer != b'S' {
                return Err(ConnectError::TlsRefused { addr: addr.clone() });
            }
            let connector = tokio_rustls::TlsConnector::from(config.clone());
            connector
                .connect(name.clone(), tcp)
                .await
                .map_err(|source| ConnectError::Tls {
                    addr: addr.clone(),
                    source,
                })
        };
        match tokio::time::timeout(self.timeout, negotiate).await {
            Ok(Ok(tls)) => Ok(Stream::UpstreamTls(Box::new(tls))),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ConnectError::Timeout {
                addr: addr.clone(),
                after: self.timeout,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_forms() {
        let t = UpstreamTarget::from_url("postgres://alice@db.example:6543/app").unwrap();
        assert_eq!(
            t.addr,
            UpstreamAddr::Tcp {
                host: "db.example".into(),
                port: 6543
            }
        );
        assert_eq!(t.user.as_deref(), Some("alice"));
        assert_eq!(t.dbname.as_deref(), Some("app"));

        let t = UpstreamTarget::from_url("host=/run/pg port=5433 user=bob").unwrap();
        assert_eq!(
            t.addr,
            UpstreamAddr::Unix {
                dir: "/run/pg".into(),
                port: 5433
            }
        );
        let t = UpstreamTarget::from_url("postgresql://%2Ftmp%2Fs/db").unwrap();
        assert_eq!(t.addr.to_string(), "/tmp/s/.s.PGSQL.5432");
        assert!(UpstreamTarget::from_url("postgres://h:x/db").is_err());
        let e = UpstreamTarget::from_url("postgres://alice:hunter2@db:notaport/app").unwrap_err();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            redact_password("host=h password=hunter2 port=1"),
            "host=h password=**** port=1"
        );
        assert_eq!(redact_password("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn every_way_of_writing_a_password_is_masked() {
        for url in [
            "postgres://u@h/db?password=hunter2",
            "postgres://u@h/db?sslmode=disable&PASSWORD=hunter2&x=1",
            "host=h password = hunter2",
            "host=h password='hunter2 with spaces' port=1",
            "host=h password='it\\'s hunter2'",
            "postgres://u:hunter2@h/db",
            "postgres://u:hun%74er2@h/db",
        ] {
            let shown = redact_password(url);
            assert!(!shown.contains("hunter2"), "{url} -> {shown}");
            assert!(!shown.contains("hun%74er2"), "{url} -> {shown}");
            assert!(shown.contains("****"), "{url} -> {shown}");
        }
        assert_eq!(
            redact_password("host=h password='a b' port=1"),
            "host=h password=**** port=1"
        );
    }
}
