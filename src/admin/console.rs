//! The admin console session: SCRAM-SHA-256 authentication by the proxy
//! itself, then simple-protocol commands answered as ordinary result sets
//! (`SHOW HELP` lists them; docs/operations.md describes each).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::scram::{ScramError, ServerExchange, Verifier};
use crate::protocol::backend::{auth, PgError};
use crate::protocol::{backend_tag as bt, frontend_tag as ft, put_message, take_cstr};
use crate::proxy::stream::Stream;
use crate::proxy::ProxyContext;

/// The virtual database that reaches the console.
pub const DATABASE: &str = "pgbranch";

/// Largest message the console reads (authentication and commands).
const MAX_MESSAGE: usize = 64 * 1024;

/// Why authentication did not succeed. The error for the client has
/// been sent already when there is one.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Refused(PgError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one tagged message of at most `MAX_MESSAGE` bytes.
async fn read_message(client: &mut Stream) -> std::io::Result<Result<(u8, Vec<u8>), PgError>> {
    crate::proxy::stream::read_tagged(client, MAX_MESSAGE).await
}

fn auth_message(code: u32, data: &[u8]) -> Vec<u8> {
    let mut body = code.to_be_bytes().to_vec();
    body.extend_from_slice(data);
    let mut out = Vec::new();
    put_message(&mut out, bt::AUTHENTICATION, &body);
    out
}

/// Sends `err` and returns it as the outcome.
async fn refuse(client: &mut Stream, err: PgError) -> AuthError {
    let _ = client.write_all(&err.to_bytes()).await;
    let _ = client.flush().await;
    AuthError::Refused(err)
}

/// Reads the client's next SASL message ('p').
async fn read_sasl(client: &mut Stream) -> Result<Vec<u8>, AuthError> {
    match read_message(client).await? {
        Ok((ft::PASSWORD, body)) => Ok(body),
        Ok((tag, _)) => Err(refuse(
            client,
            PgError::fatal(
                "08P01",
                format!(
                    "expected a SASL response, got message type {:?}",
                    tag as char
                ),
            ),
        )
        .await),
        Err(e) => Err(refuse(client, e).await),
    }
}

/// Authenticates `user` with SCRAM-SHA-256 against the configured admin
/// roles. An unknown role goes through the same exchange with a secret no
/// password matches, and gets the same error as a wrong password.
pub async fn authenticate(
    ctx: &ProxyContext,
    client: &mut Stream,
    user: &str,
) -> Result<(), AuthError> {
    let roles = ctx.admin_roles();
    let verifier = roles
        .roles
        .get(user)
        .cloned()
        .unwrap_or_else(|| Verifier::mock(user, &roles.mock_key));
    client
        .write_all(&auth_message(auth::SASL, b"SCRAM-SHA-256\0\0"))
        .await?;
    client.flush().await?;
    let initial = read_sasl(client).await?;
    let data = match take_cstr(&initial) {
        Some((b"SCRAM-SHA-256", rest)) if rest.len() >= 4 => &rest[4..],
        _ => {
            let e = PgError::fatal(
                "28000",
                "the admin console accepts only the SASL mechanism SCRAM-SHA-256",
            )
            .with_hint("connect with channel_binding=disable or prefer");
            return Err(refuse(client, e).await);
        }
    };
    let failed = |e: ScramError| match e {
        ScramError::Protocol(m) => PgError::fatal("08P01", m),
        ScramError::Failed => PgError::fatal(
            "28P01",
            format!("password authentication failed for user \"{user}\""),
        ),
    };
    let (exchange, server_first) = match ServerExchange::start(&verifier, data) {
        Ok(x) => x,
        Err(e) => return Err(refuse(client, failed(e)).await),
    };
    client
        .write_all(&auth_message(auth::SASL_CONTINUE, &server_first))
        .await?;
    client.flush().await?;
    let response = read_sasl(client).await?;
    let server_final = match exchange.finish(&response) {
        Ok(f) => f,
        Err(e) => {
            warn!(user, "admin console: authentication failed");
            return Err(refuse(client, failed(e)).await);
        }
    };
    let mut out = auth_message(auth::SASL_FINAL, &server_final);
    out.extend_from_slice(&auth_message(auth::OK, &[]));
    for (name, value) in [
        (
            "server_version",
            concat!(env!("CARGO_PKG_VERSION"), " (pgbranch admin console)"),
        ),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        let mut body = Vec::new();
        for s in [name, value] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
        put_message(&mut out, bt::PARAMETER_STATUS, &body);
    }
    put_message(&mut out, bt::READY_FOR_QUERY, b"I");
    client.write_all(&out).await?;
    client.flush().await?;
    Ok(())
}

/// A command's answer, before it is encoded.
#[derive(Debug, Default)]
struct Answer {
    /// Notices (severity, text) sent before the result.
    notices: Vec<(&'static str, String)>,
    columns: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    tag: String,
}

impl Answer {
    fn tag(tag: impl Into<String>) -> Self {
        Self {
            tag: tag.into(),
            ..Self::default()
        }
    }

    fn table(columns: Vec<&'static str>, rows: Vec<Vec<String>>) -> Self {
        let tag = format!("SHOW {}", rows.len());
        Self {
            columns,
            rows,
            tag,
            ..Self::default()
        }
    }

    fn notice(mut self, severity: &'static str, text: impl Into<String>) -> Self {
        self.notices.push((severity, text.into()));
        self
    }

    fn encode(&self, out: &mut Vec<u8>) {
        for (severity, text) in &self.notices {
            let mut body = Vec::new();
            let code = if *severity == "WARNING" {
                "01000"
            } else {
                "00000"
            };
            for (field, value) in [
                (b'S', *severity),
                (b'V', *severity),
                (b'C', code),
                (b'M', text),
            ] {
                body.push(field);
                body.extend_from_slice(value.as_bytes());
                body.push(0);
            }
            body.push(0);
            put_message(out, bt::NOTICE_RESPONSE, &body);
        }
        if !self.columns.is_empty() {
            let mut body = (self.columns.len() as u16).to_be_bytes().to_vec();
            for name in &self.columns {
                body.extend_from_slice(name.as_bytes());
                body.push(0);
                body.extend_from_slice(&0u32.to_be_bytes()); // table
                body.extend_from_slice(&0u16.to_be_bytes()); // column
                body.extend_from_slice(&25u32.to_be_bytes()); // text
                body.extend_from_slice(&(-1i16).to_be_bytes());
                body.extend_from_slice(&(-1i32).to_be_bytes());
                body.extend_from_slice(&0u16.to_be_bytes()); // text format
            }
            put_message(out, bt::ROW_DESCRIPTION, &body);
            for row in &self.rows {
                let mut body = (row.len() as u16).to_be_bytes().to_vec();
                for v in row {
                    body.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                put_message(out, bt::DATA_ROW, &body);
            }
        }
        let mut tag = self.tag.as_bytes().to_vec();
        tag.push(0);
        put_message(out, bt::COMMAND_COMPLETE, &tag);
    }
}

/// What the session does after a command.
enum After {
    Continue,
    Close,
}

/// Serves an authenticated console session until the client leaves or
/// pgbranch shuts down.
pub async fn serve(ctx: Arc<ProxyContext>, mut client: Stream, user: String) {
    info!(user, "admin console session started");
    loop {
        let message = tokio::select! {
            m = read_message(&mut client) => m,
            _ = ctx.shutdown.cancelled() => {
                let e = PgError::fatal("57P01", "terminating connection because pgbranch is shutting down");
                let _ = client.write_all(&e.to_bytes()).await;
                break;
            }
        };
        let (tag, body) = match message {
            Ok(Ok(m)) => m,
            Ok(Err(e)) => {
                let _ = client.write_all(&e.to_bytes()).await;
                break;
            }
            Err(_) => break,
        };
        let mut out = Vec::new();
        let after = match tag {
            ft::QUERY => {
                let text = String::from_utf8_lossy(take_cstr(&body).map_or(&body[..], |(q, _)| q))
                    .into_owned();
                let after = run_query(&ctx, &user, &text, &mut out).await;
                put_message(&mut out, bt::READY_FOR_QUERY, b"I");
                after
            }
            ft::TERMINATE => break,
            ft::SYNC => {
                put_message(&mut out, bt::READY_FOR_QUERY, b"I");
                After::Continue
            }
            ft::PARSE | ft::BIND | ft::DESCRIBE | ft::EXECUTE | ft::CLOSE | ft::FLUSH => {
                // Refused once; the rest up to Sync is skipped.
                PgError::error(
                    "0A000",
                    "the admin console answers only the simple query protocol",
                )
                .with_hint("use psql, or a client's simple query mode")
                .encode(&mut out);
                if skip_to_sync(&mut client).await.is_err() {
                    break;
                }
                put_message(&mut out, bt::READY_FOR_QUERY, b"I");
                After::Continue
            }
            other => {
                let e = PgError::fatal(
                    "08P01",
                    format!("unexpected message type {:?}", other as char),
                );
                let _ = client.write_all(&e.to_bytes()).await;
                break;
            }
        };
        if client.write_all(&out).await.is_err() || client.flush().await.is_err() {
            break;
        }
        if let After::Close = after {
            break;
        }
    }
    let _ = client.shutdown().await;
    info!(user, "admin console session ended");
}

async fn skip_to_sync(client: &mut Stream) -> std::io::Result<()> {
    loop {
        match read_message(client).await? {
            Ok((ft::SYNC, _)) => return Ok(()),
            Ok(_) => continue,
            Err(_) => return Err(std::io::ErrorKind::InvalidData.into()),
        }
    }
}

/// Runs each `;`-separated command of a Query; an error ends the rest.
async fn run_query(ctx: &ProxyContext, user: &str, text: &str, out: &mut Vec<u8>) -> After {
    let commands: Vec<&str> = text
        .split(';')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    if commands.is_empty() {
        put_message(out, bt::EMPTY_QUERY_RESPONSE, &[]);
        return After::Continue;
    }
    let mut after = After::Continue;
    for command in commands {
        match run_command(ctx, user, command).await {
            Ok((answer, then)) => {
                answer.encode(out);
                after = then;
            }
            Err(e) => {
                e.encode(out);
                return After::Continue;
            }
        }
    }
    after
}

/// The console's commands: (words, description).
const COMMANDS: [(&str, &str); 10] = [
    ("SHOW HELP", "this list"),
    ("SHOW CONNECTIONS", "client sessions: PID, user, database, branch, client, TLS, state, since"),
    ("SHOW STATS", "statement latency per branch and kind: count, average, p50, p95, p99 (ms), since start"),
    ("SHOW CONFIG", "the configuration in force; when each setting can change"),
    ("SHOW VERSION", "pgbranch version and commit"),
    ("RELOAD", "read the configuration again (as SIGHUP)"),
    ("PAUSE", "hold new statements outside transactions; waits for open transactions to end (admin.pause_timeout)"),
    ("RESUME", "let held statements go on"),
    ("SHUTDOWN", "stop accepting; sessions close when idle (as SIGTERM)"),
    ("SHOW PAUSED", "whether statements are held"),
];

async fn run_command(
    ctx: &ProxyContext,
    user: &str,
    command: &str,
) -> Result<(Answer, After), PgError> {
    let words: Vec<String> = command
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let answer = match words.as_slice() {
        ["SHOW", "HELP"] => Answer::table(
            vec!["command", "description"],
            COMMANDS
                .iter()
                .map(|(c, d)| vec![c.to_string(), d.to_string()])
                .collect(),
        ),
        ["SHOW", "CONNECTIONS" | "CLIENTS"] => show_connections(ctx),
        ["SHOW", "STATS"] => show_stats(ctx),
        ["SHOW", "CONFIG"] => Answer::table(
            vec!["key", "value", "changes_on"],
            crate::config::settings(&ctx.config())
                .into_iter()
                .map(|s| vec![s.key.to_string(), s.value, s.applies.label().to_string()])
                .collect(),
        ),
        ["SHOW", "VERSION"] => Answer::table(
            vec!["version", "commit"],
            vec![vec![
                env!("CARGO_PKG_VERSION").to_string(),
                env!("PGB_BUILD_COMMIT").to_string(),
            ]],
        ),
        ["SHOW", "PAUSED"] => Answer::table(
            vec!["paused"],
            vec![vec![if ctx.sessions.gate.is_paused() {
                "on"
            } else {
                "off"
            }
            .to_string()]],
        ),
        ["RELOAD"] => {
            info!(user, "admin console: RELOAD");
            let report = ctx.reload().map_err(|e| {
                PgError::error("F0000", format!("configuration not reloaded: {e}"))
                    .with_hint("the running configuration stays in force")
            })?;
            let mut a = Answer::tag("RELOAD");
            a = if report.applied.is_empty() {
                a.notice("NOTICE", "configuration reloaded; no setting changed")
            } else {
                a.notice(
                    "NOTICE",
                    format!(
                        "configuration reloaded; changed: {}",
                        report.applied.join(", ")
                    ),
                )
            };
            if !report.needs_restart.is_empty() {
                a = a.notice(
                    "WARNING",
                    format!(
                        "changed settings that take effect only after a restart (running values kept): {}",
                        report.needs_restart.join(", ")
                    ),
                );
            }
            a
        }
        ["PAUSE"] => {
            info!(user, "admin console: PAUSE");
            let mut a = Answer::tag("PAUSE");
            if !ctx.sessions.gate.pause() {
                a = a.notice("NOTICE", "already paused");
            }
            let wait = ctx.config().admin.pause_timeout;
            let busy = ctx.sessions.wait_drained(wait).await;
            if busy > 0 {
                a = a.notice(
                    "WARNING",
                    format!(
                        "{busy} session(s) still in a transaction or running a statement after {}; each is held when its transaction ends (the pause is in force)",
                        format_duration(wait)
                    ),
                );
            }
            a
        }
        ["RESUME"] => {
            info!(user, "admin console: RESUME");
            let a = Answer::tag("RESUME");
            if ctx.sessions.gate.resume() {
                a
            } else {
                a.notice("NOTICE", "not paused")
            }
        }
        ["SHUTDOWN"] => {
            info!(user, "admin console: SHUTDOWN");
            ctx.shutdown.cancel();
            return Ok((Answer::tag("SHUTDOWN"), After::Close));
        }
        _ => {
            return Err(PgError::error(
                "42601",
                format!("unknown admin console command: {command}"),
            )
            .with_hint("SHOW HELP lists the commands"))
        }
    };
    Ok((answer, After::Continue))
}

fn show_connections(ctx: &ProxyContext) -> Answer {
    let rows = ctx
        .sessions
        .list()
        .into_iter()
        .map(|s| {
            vec![
                s.pid.to_string(),
                s.user.clone(),
                s.database.clone(),
                s.branch(),
                s.application_name.clone(),
                s.peer.clone(),
                if s.tls { "on" } else { "off" }.to_string(),
                s.state().label().to_string(),
                utc_timestamp(s.connected_at),
            ]
        })
        .collect();
    Answer::table(
        vec![
            "pid",
            "user",
            "database",
            "branch",
            "application_name",
            "client_addr",
            "tls",
            "state",
            "connected_at",
        ],
        rows,
    )
}

fn show_stats(ctx: &ProxyContext) -> Answer {
    let ms = |ns: f64| format!("{:.3}", ns / 1e6);
    let rows = ctx
        .metrics
        .statements
        .summary()
        .into_iter()
        .map(|s| {
            vec![
                s.branch,
                s.kind.to_string(),
                s.count.to_string(),
                ms(s.mean_ns),
                ms(s.quantiles_ns[0]),
                ms(s.quantiles_ns[1]),
                ms(s.quantiles_ns[2]),
            ]
        })
        .collect();
    Answer::table(
        vec![
            "branch", "kind", "count", "avg_ms", "p50_ms", "p95_ms", "p99_ms",
        ],
        rows,
    )
}

fn format_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// `YYYY-MM-DD HH:MM:SS+00` (UTC), as PostgreSQL prints a timestamptz in
/// the UTC zone.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}+00",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00+00");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_301_441);
        assert_eq!(utc_timestamp(t), "2026-11-21 22:50:41+00");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(utc_timestamp(leap), "2000-02-29 00:00:00+00");
    }

    #[test]
    fn answers_encode_as_result_sets() {
        let mut out = Vec::new();
        Answer::table(vec!["a"], vec![vec!["x".into()]])
            .notice("NOTICE", "hi")
            .encode(&mut out);
        let tags: Vec<u8> = {
            let mut at = 0;
            let mut tags = Vec::new();
            while at < out.len() {
                tags.push(out[at]);
                at += 1 + crate::protocol::read_u32(&out, at + 1) as usize;
            }
            tags
        };
        assert_eq!(tags, b"NTDC");
        assert!(out.ends_with(b"SHOW 1\0"));
    }
}
