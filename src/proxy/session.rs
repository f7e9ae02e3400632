//! One client connection: negotiation, startup, authentication relay, then
//! the relay until either side ends.
//!
//! States: `Negotiating` (SSLRequest / GSSENCRequest / CancelRequest /
//! StartupMessage) → `Connecting` (upstream socket, TLS) → `Authenticating`
//! (server messages relayed to the client and the client's answers back,
//! until ReadyForQuery; BackendKeyData replaced by a proxy-issued key) →
//! `Relaying` ([`super::relay::Relay`]) → `Closing` (a final error for the
//! client when the session did not end by the client's own choice).

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tracing::{debug, info, warn, Instrument};

use super::cancel::{forward_cancel, CancelTarget, Registration};
use super::hooks::SessionInfo;
use super::relay::{Relay, RelayEnd, RelayParams};
use super::selection::{self, Selection, DEFAULT_BRANCH};
use super::sessions::NewSession;
use super::stream::Stream;
use super::ProxyContext;
use crate::branch;
use crate::config::ClientTlsMode;
use crate::metrics::Refusal;
use crate::protocol::backend::{auth, error_is_fatal, sasl_without_plus, BackendKey, PgError};
use crate::protocol::startup::{
    parse_startup_packet, StartupMessage, StartupPacket, MAX_STARTUP_PACKET,
};
use crate::protocol::{backend_tag as bt, frontend_tag as ft, put_message, read_u32, HEADER_LEN};

/// How long the last words of a session (final error, Terminate) may take.
const EPILOGUE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Largest client message accepted during authentication.
const MAX_AUTH_MESSAGE: usize = 64 * 1024;

/// Why a session ended before relaying.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// Report this to the client, then close.
    #[error("{0}")]
    Client(PgError),
    /// The connection is unusable; just close.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Nothing more to do (cancel request served, server error relayed).
    #[error("done")]
    Done,
}

impl From<PgError> for HandshakeError {
    fn from(e: PgError) -> Self {
        HandshakeError::Client(e)
    }
}

/// A connection ready for the relay.
struct Established {
    client: Stream,
    upstream: Stream,
    leftover: Vec<u8>,
    tx_status: u8,
    info: SessionInfo,
    _cancel: Registration,
}

/// What a finished handshake leads to.
enum Handshaken {
    /// A database session: relay it.
    Relay(Box<Established>),
    /// An authenticated admin console session (role name).
    Admin(Stream, String),
}

/// Serves one client connection to its end.
pub async fn serve(ctx: Arc<ProxyContext>, client: Stream, peer: String) {
    let span = tracing::info_span!("conn", %peer, user = tracing::field::Empty, database = tracing::field::Empty, branch = tracing::field::Empty, application_name = tracing::field::Empty);
    async move {
        let timeout = ctx.config().handshake_timeout;
        // The shutdown timeout also ends handshakes in progress: a client
        // that never finishes its startup must not hold up the exit.
        let handshake = tokio::select! {
            r = tokio::time::timeout(timeout, handshake(&ctx, client, &peer)) => r,
            _ = ctx.force.cancelled() => {
                debug!("shutdown timeout passed during startup; connection closed");
                return;
            }
        };
        let est = match handshake {
            Ok(Ok(Handshaken::Relay(est))) => *est,
            Ok(Ok(Handshaken::Admin(client, user))) => {
                crate::admin::console::serve(ctx.clone(), client, user).await;
                return;
            }
            // Counted where it happened (or not a refusal: a cancel request).
            Ok(Err(HandshakeError::Done)) => return,
            Ok(Err(HandshakeError::Client(e))) => {
                ctx.metrics.refused(if e.code == "08006" {
                    Refusal::Upstream
                } else {
                    Refusal::Handshake
                });
                return;
            }
            Ok(Err(HandshakeError::Io(e))) => {
                ctx.metrics.refused(Refusal::Handshake);
                debug!(error = %e, "connection closed during startup");
                return;
            }
            Err(_) => {
                ctx.metrics.refused(Refusal::Handshake);
                info!(
                    ?timeout,
                    "startup did not finish in time; connection closed"
                );
                return;
            }
        };
        relay(&ctx, est).await;
    }
    .instrument(span)
    .await
}

/// Reads one untagged startup-phase packet.
async fn read_startup_packet<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<StartupPacket, HandshakeError> {
    let len = r.read_u32().await? as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(PgError::fatal("08P01", "invalid length of startup packet").into());
    }
    let mut body = vec![0; len - 4];
    r.read_exact(&mut body).await?;
    parse_startup_packet(&body).map_err(|e| PgError::fatal("08P01", e.to_string()).into())
}

/// Reads one tagged message, refusing lengths outside `4..=max`.
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<(u8, Vec<u8>), HandshakeError> {
    Ok(super::stream::read_tagged(r, max).await??)
}

/// Buffered reader over the upstream during startup; its leftover bytes
/// become the relay's first input.
struct UpstreamReader {
    buf: Vec<u8>,
    pos: usize,
}

impl UpstreamReader {
    async fn next(&mut self, s: &mut Stream) -> Result<(u8, Vec<u8>), HandshakeError> {
        loop {
            let avail = &self.buf[self.pos..];
            if avail.len() >= HEADER_LEN {
                let len = read_u32(avail, 1) as usize;
                if len < 4 {
                    return Err(PgError::fatal(
                        "08P01",
                        "the database server sent a malformed message",
                    )
                    .into());
                }
                if avail.len() > len {
                    let tag = avail[0];
                    let body = avail[HEADER_LEN..1 + len].to_vec();
                    self.pos += 1 + len;
                    return Ok((tag, body));
                }
            }
            if self.pos > 0 {
                self.buf.drain(..self.pos);
                self.pos = 0;
            }
            let mut chunk = [0u8; 8192];
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    fn leftover(self) -> Vec<u8> {
        self.buf[self.pos..].to_vec()
    }
}

async fn send_error(stream: &mut Stream, err: &PgError) {
    let _ = stream.write_all(&err.to_bytes()).await;
    let _ = stream.flush().await;
}

async fn handshake(
    ctx: &ProxyContext,
    mut client: Stream,
    peer: &str,
) -> Result<Handshaken, HandshakeError> {
    let is_tcp = matches!(client, Stream::Tcp(_));
    // The certificate in force when the connection arrived (a reload
    // affects later connections).
    // The certificate and TLS mode in force now, read together.
    let live = ctx.live();
    let tls = live.tls.clone();
    let require_tls = live.config.tls.mode == ClientTlsMode::Require;
    // PostgreSQL 17 direct TLS: the first byte is a TLS handshake record.
    if let (Stream::Tcp(tcp), Some(acceptor)) = (&client, &tls) {
        let mut first = [0u8; 1];
        if tcp.peek(&mut first).await? == 1 && first[0] == 0x16 {
            let Stream::Tcp(tcp) = client else {
                unreachable!()
            };
            let tls = acceptor.accept(tcp).await?;
            // Direct TLS must name the protocol (ALPN "postgresql"), as
            // PostgreSQL 17 requires, against cross-protocol attacks.
            if tls.get_ref().1.alpn_protocol() != Some(b"postgresql") {
                debug!("direct TLS without ALPN postgresql refused");
                ctx.metrics.refused(Refusal::Handshake);
                return Err(HandshakeError::Done);
            }
            client = Stream::ClientTls(Box::new(tls));
        }
    }
    let startup = loop {
        match read_startup_packet(&mut client).await {
            Err(HandshakeError::Client(e)) => {
                send_error(&mut client, &e).await;
                return Err(HandshakeError::Client(e));
            }
            Err(e) => return Err(e),
            Ok(StartupPacket::Ssl) => match (&tls, client) {
                (Some(acceptor), Stream::Tcp(mut tcp)) => {
                    tcp.write_all(b"S").await?;
                    client = Stream::ClientTls(Box::new(acceptor.accept(tcp).await?));
                }
                (_, mut other) => {
                    if other.is_tls() {
                        let e = PgError::fatal(
                            "08P01",
                            "SSLRequest received on an encrypted connection",
                        );
                        send_error(&mut other, &e).await;
                        return Err(e.into());
                    }
                    other.write_all(b"N").await?;
                    client = other;
                }
            },
            Ok(StartupPacket::GssEnc) => client.write_all(b"N").await?,
            Ok(StartupPacket::Cancel { pid, secret }) => {
                match ctx.cancel.lookup(pid, &secret) {
                    Some(target) => {
                        debug!(pid, "forwarding cancel request");
                        if let Err(e) = forward_cancel(&target).await {
                            warn!(error = %e, "could not forward cancel request");
                        }
                    }
                    None => debug!(pid, "cancel request with an unknown key ignored"),
                }
                return Err(HandshakeError::Done);
            }
            Ok(StartupPacket::Startup(m)) => break m,
        }
    };
    match startup_checks(startup, &client, is_tcp && require_tls) {
        Ok((startup, _)) if is_admin_console(ctx, &startup) => {
            let user = startup.get_str("user").unwrap_or_default();
            match crate::admin::console::authenticate(ctx, &mut client, &user).await {
                Ok(()) => Ok(Handshaken::Admin(client, user)),
                Err(crate::admin::console::AuthError::Refused(e)) => Err(e.into()),
                Err(crate::admin::console::AuthError::Io(e)) => Err(e.into()),
            }
        }
        Ok((startup, selection)) => connect_and_authenticate(ctx, client, startup, selection, peer)
            .await
            .map(|est| Handshaken::Relay(Box::new(est))),
        Err(e) => {
            send_error(&mut client, &e).await;
            Err(e.into())
        }
    }
}

/// The client asks for the admin console: the virtual database, while
/// admin roles are configured.
fn is_admin_console(ctx: &ProxyContext, startup: &StartupMessage) -> bool {
    let database = startup
        .get("database")
        .filter(|d| !d.is_empty())
        .or_else(|| startup.get("user"));
    database == Some(crate::admin::console::DATABASE.as_bytes())
        && !ctx.admin_roles().roles.is_empty()
}

/// Applies the startup rules: TLS requirement, selection, unsupported
/// parameters.
fn startup_checks(
    mut startup: StartupMessage,
    client: &Stream,
    tls_required: bool,
) -> Result<(StartupMessage, Selection), PgError> {
    // Read parameters as the server will: the last occurrence wins.
    startup.keep_last_occurrences();
    if tls_required && !client.is_tls() {
        return Err(PgError::fatal(
            "28000",
            "pgbranch accepts only encrypted connections on TCP",
        )
        .with_hint("connect with sslmode=require (or stronger)"));
    }
    if startup.get("user").is_none() {
        return Err(PgError::fatal(
            "28000",
            "no PostgreSQL user name specified in startup packet",
        ));
    }
    if let Some(r) = startup.get_str("replication") {
        if !matches!(
            r.to_ascii_lowercase().as_str(),
            "false" | "off" | "no" | "0"
        ) {
            return Err(PgError::fatal(
                "0A000",
                "replication connections are not supported through pgbranch",
            )
            .with_hint("connect to PostgreSQL directly for replication"));
        }
    }
    let selection = selection::extract(&mut startup)?;
    if selection.as_of.is_some() {
        // Read-only from the first statement; the proxy also refuses
        // writes it can see, naming the as-of time.
        startup.set("default_transaction_read_only", b"on".to_vec());
    }
    Ok((startup, selection))
}

async fn connect_and_authenticate(
    ctx: &ProxyContext,
    mut client: Stream,
    mut startup: StartupMessage,
    selection: Selection,
    peer: &str,
) -> Result<Established, HandshakeError> {
    let user = startup.get_str("user").unwrap_or_default();
    let database = startup.get_str("database").unwrap_or_else(|| user.clone());
    let application_name = startup.get_str("application_name");
    let span = tracing::Span::current();
    span.record("user", user.as_str());
    span.record("database", database.as_str());
    span.record("branch", selection.branch.as_str());
    if let Some(a) = &application_name {
        span.record("application_name", a.as_str());
    }

    let started = std::time::Instant::now();
    let connected = ctx.connector.connect().await;
    ctx.metrics
        .upstream_connect_seconds
        .record(started.elapsed().as_secs_f64());
    let mut upstream = match connected {
        Ok(s) => s,
        Err(e) => {
            warn!(upstream = %ctx.connector.target.addr, error = %e, "cannot reach the database server");
            let err = PgError::fatal("08006", "pgbranch: the database server cannot be reached")
                .with_hint("check that PostgreSQL is running and reachable from pgbranch; the cause is in the pgbranch log");
            send_error(&mut client, &err).await;
            return Err(err.into());
        }
    };
    // A branch session's search_path goes in the startup packet, so that
    // it holds from the first statement on and RESET returns to it.
    let client_path = startup.get_str("search_path").or_else(|| {
        startup
            .get("options")
            .and_then(|o| selection::option_value(o, "search_path"))
    });
    let default_key = (database.clone(), user.clone());
    let assumed = (selection.branch != DEFAULT_BRANCH).then(|| {
        let logical = ctx
            .versioned_schemas
            .get(&database)
            .map(|v| v.clone())
            .unwrap_or_else(|| vec!["public".to_string()]);
        let schemas = branch::assumed_schemas(&logical, &selection.branch);
        let cached_default = ctx.default_paths.get(&default_key).map(|p| p.clone());
        let path = branch::branch_search_path(
            client_path.as_deref().or(cached_default.as_deref()),
            &schemas,
        );
        startup.set("search_path", path.into_bytes());
        schemas
    });
    upstream.write_all(&startup.encode()).await?;
    upstream.flush().await?;

    let mut reader = UpstreamReader {
        buf: Vec::with_capacity(8192),
        pos: 0,
    };
    // Messages for the client are batched and written when the proxy must
    // wait for the client, or at ReadyForQuery.
    let mut to_client: Vec<u8> = Vec::with_capacity(1024);
    let mut registration = None;
    loop {
        let (tag, body) = match reader.next(&mut upstream).await {
            Ok(m) => m,
            Err(HandshakeError::Io(e)) => {
                warn!(error = %e, "the database server closed the connection during startup");
                let err = PgError::fatal(
                    "08006",
                    "pgbranch: the database server closed the connection during startup",
                );
                fail(&mut client, &mut to_client, err).await;
                ctx.metrics.refused(Refusal::Upstream);
                return Err(HandshakeError::Done);
            }
            Err(e) => return Err(e),
        };
        match tag {
            bt::AUTHENTICATION => {
                let code = if body.len() >= 4 {
                    read_u32(&body, 0)
                } else {
                    u32::MAX
                };
                match code {
                    auth::OK | auth::SASL_FINAL => put_message(&mut to_client, tag, &body),
                    auth::CLEARTEXT | auth::MD5 | auth::SASL_CONTINUE => {
                        put_message(&mut to_client, tag, &body);
                        relay_client_auth(&mut client, &mut upstream, &mut to_client, false)
                            .await?;
                    }
                    auth::SASL => {
                        let Some(msg) = sasl_without_plus(&body) else {
                            let err = PgError::fatal("28000", "the database server offers only channel-binding SASL mechanisms, which cannot pass through a proxy")
                                .with_hint("allow SCRAM-SHA-256 without channel binding for connections from pgbranch");
                            return Err(fail(&mut client, &mut to_client, err).await);
                        };
                        to_client.extend_from_slice(&msg);
                        relay_client_auth(&mut client, &mut upstream, &mut to_client, true).await?;
                    }
                    auth::GSS | auth::GSS_CONTINUE | auth::SSPI | auth::KERBEROS_V5 => {
                        let err = PgError::fatal("28000", "GSSAPI and SSPI authentication are not supported through pgbranch")
                            .with_hint("use SCRAM-SHA-256, md5 or password authentication for connections from pgbranch");
                        return Err(fail(&mut client, &mut to_client, err).await);
                    }
                    other => {
                        let err = PgError::fatal("08P01", format!("unsupported authentication request {other} from the database server"));
                        return Err(fail(&mut client, &mut to_client, err).await);
                    }
                }
            }
            bt::BACKEND_KEY_DATA => {
                let Some(upstream_key) = BackendKey::parse(&body) else {
                    let err =
                        PgError::fatal("08P01", "the database server sent invalid BackendKeyData");
                    return Err(fail(&mut client, &mut to_client, err).await);
                };
                let (client_key, reg) = ctx.cancel.register(CancelTarget {
                    connector: ctx.connector.clone(),
                    upstream: upstream_key,
                });
                client_key.encode(&mut to_client);
                registration = Some(reg);
            }
            bt::ERROR_RESPONSE => {
                put_message(&mut to_client, tag, &body);
                client.write_all(&to_client).await?;
                client.flush().await?;
                if error_is_fatal(&body) {
                    ctx.metrics.refused(Refusal::Rejected);
                    return Err(HandshakeError::Done);
                }
            }
            bt::READY_FOR_QUERY => {
                // Checked before the client is told it is connected.
                let Some(reg) = registration else {
                    let err = PgError::fatal("08P01", "the database server sent no BackendKeyData");
                    return Err(fail(&mut client, &mut to_client, err).await);
                };
                let mut body = body;
                let mut schemas = Vec::new();
                let mut reset_path = None;
                if let Some(assumed) = &assumed {
                    let cached_default = ctx.default_paths.get(&default_key).map(|p| p.clone());
                    let entered = enter_branch(
                        &mut upstream,
                        &mut reader,
                        &selection.branch,
                        assumed,
                        client_path.as_deref(),
                        cached_default.as_deref(),
                    )
                    .await;
                    match entered {
                        Ok(e) => {
                            match e.default_path {
                                Some(p) => ctx.default_paths.insert(default_key.clone(), p),
                                None => ctx.default_paths.remove(&default_key).map(|(_, v)| v),
                            };
                            let logical = e.schemas.iter().map(|(l, _)| l.clone()).collect();
                            ctx.versioned_schemas.insert(database.clone(), logical);
                            schemas = e.schemas;
                            reset_path = e.reset_path;
                            body = e.ready;
                        }
                        Err(EnterError::Refused(error)) => {
                            to_client.extend_from_slice(&error);
                            let _ = client.write_all(&to_client).await;
                            let _ = client.flush().await;
                            ctx.metrics.refused(Refusal::Rejected);
                            return Err(HandshakeError::Done);
                        }
                        Err(EnterError::Handshake(e)) => return Err(e),
                    }
                }
                // An as-of session: its time, made absolute ('now' is
                // fixed at connect), or a FATAL saying why it is invalid.
                let mut as_of = None;
                if let Some(text) = &selection.as_of {
                    match run_startup_query(&mut upstream, &mut reader, &as_of_query(text)).await? {
                        Ok((rows, ready)) => {
                            as_of = rows.into_iter().next().and_then(|r| r.into_iter().next());
                            body = ready;
                        }
                        Err(error) => {
                            to_client.extend_from_slice(&as_fatal(&error));
                            let _ = client.write_all(&to_client).await;
                            let _ = client.flush().await;
                            ctx.metrics.refused(Refusal::Rejected);
                            return Err(HandshakeError::Done);
                        }
                    }
                }
                put_message(&mut to_client, tag, &body);
                client.write_all(&to_client).await?;
                client.flush().await?;
                ctx.metrics
                    .auth_seconds
                    .record(started.elapsed().as_secs_f64());
                let info = SessionInfo {
                    as_of,
                    user,
                    database,
                    branch: selection.branch,
                    application_name,
                    peer: peer.to_string(),
                    schemas,
                    reset_path,
                };
                debug!("session established");
                return Ok(Established {
                    client,
                    upstream,
                    leftover: reader.leftover(),
                    tx_status: body.first().copied().unwrap_or(b'I'),
                    info,
                    _cancel: reg,
                });
            }
            // ParameterStatus, NoticeResponse, NegotiateProtocolVersion
            // and anything else: relayed as sent.
            _ => put_message(&mut to_client, tag, &body),
        }
    }
}

/// The as-of time `text` (any timestamptz input) made absolute.
fn as_of_query(text: &str) -> Vec<u8> {
    let literal = String::from_utf8_lossy(&crate::history::record::dollar_quote(text.as_bytes()))
        .into_owned();
    crate::protocol::query_message(&format!("SELECT ({literal})::timestamptz::text"))
}

/// Why a branch session could not start.
enum EnterError {
    /// A complete ErrorResponse (FATAL) for the client.
    Refused(Vec<u8>),
    Handshake(HandshakeError),
}

impl From<HandshakeError> for EnterError {
    fn from(e: HandshakeError) -> Self {
        EnterError::Handshake(e)
    }
}

impl From<std::io::Error> for EnterError {
    fn from(e: std::io::Error) -> Self {
        EnterError::Handshake(e.into())
    }
}

/// Runs `query` on the upstream before the session starts: its rows (text
/// columns) and the final ReadyForQuery body, or the server's error.
async fn run_startup_query(
    upstream: &mut Stream,
    reader: &mut UpstreamReader,
    query: &[u8],
) -> Result<Result<(Vec<Vec<String>>, Vec<u8>), Vec<u8>>, HandshakeError> {
    upstream.write_all(query).await?;
    upstream.flush().await?;
    let mut rows = Vec::new();
    let mut error = None;
    loop {
        let (tag, body) = reader.next(upstream).await?;
        match tag {
            bt::DATA_ROW => rows.push(crate::protocol::backend::data_row_text(&body)),
            bt::ERROR_RESPONSE => error = Some(body),
            bt::READY_FOR_QUERY => {
                return Ok(match error {
                    Some(e) => Err(e),
                    None => Ok((rows, body)),
                })
            }
            _ => {}
        }
    }
}

/// Checks the session's branch in the database (and marks the session as
/// using it); corrects the search_path when the branch's schemas are not
/// the ones assumed in the startup packet. One round trip in the common
/// case, before the client is told it is connected.
/// Also returns the search_path configured for the role and database
/// (ALTER ROLE/DATABASE ... SET), which the session starts from when the
/// client names none.
async fn enter_branch(
    upstream: &mut Stream,
    reader: &mut UpstreamReader,
    branch: &str,
    assumed: &[(String, String)],
    client_path: Option<&str>,
    assumed_default: Option<&str>,
) -> Result<Entered, EnterError> {
    let (rows, mut ready) = match run_startup_query(upstream, reader, &branch::enter_query(branch))
        .await?
    {
        Ok(r) => r,
        Err(error) => {
            let code = crate::protocol::backend::error_code(&error);
            // No pgbranch schema (or one from before branches): the
            // database has no branches yet.
            if matches!(code.as_deref(), Some("3F000" | "42883")) {
                let mut out = Vec::new();
                PgError::fatal("3D000", format!("branch \"{branch}\" does not exist"))
                        .with_hint(format!(
                            "Create it with CREATE BRANCH {} (connected to main), or \"pgbranch branch create {branch}\".",
                            branch::quote_ident(branch)
                        ))
                        .encode(&mut out);
                return Err(EnterError::Refused(out));
            }
            return Err(EnterError::Refused(as_fatal(&error)));
        }
    };
    let default_path = rows
        .first()
        .and_then(|r| r.get(2))
        .filter(|p| !p.is_empty())
        .cloned();
    let schemas: Vec<(String, String)> = rows
        .into_iter()
        .filter_map(|r| match r.as_slice() {
            [l, p, _] => Some((l.clone(), p.clone())),
            _ => None,
        })
        .collect();
    let default_changed = client_path.is_none() && default_path.as_deref() != assumed_default;
    if schemas.is_empty() {
        // Dropped while the session waited for it.
        let mut out = Vec::new();
        PgError::fatal("3D000", format!("branch \"{branch}\" does not exist")).encode(&mut out);
        return Err(EnterError::Refused(out));
    }
    let mut reset_path = None;
    if schemas != assumed || default_changed {
        let path = branch::branch_search_path(client_path.or(default_path.as_deref()), &schemas);
        match run_startup_query(upstream, reader, &branch::set_path_query(&path)).await? {
            Ok((_, r)) => ready = r,
            Err(error) => return Err(EnterError::Refused(as_fatal(&error))),
        }
        reset_path = Some(path);
    }
    Ok(Entered {
        schemas,
        ready,
        default_path,
        reset_path,
    })
}

/// A branch session's start: its schemas, the final ReadyForQuery body,
/// the role/database search_path, and the path set at session level when
/// the startup packet's was not right.
struct Entered {
    schemas: Vec<(String, String)>,
    ready: Vec<u8>,
    default_path: Option<String>,
    reset_path: Option<String>,
}

/// An ErrorResponse message with the server's fields, made FATAL: the
/// session ends with it.
fn as_fatal(body: &[u8]) -> Vec<u8> {
    let mut fields = Vec::with_capacity(body.len() + 8);
    for (code, value) in crate::protocol::backend::error_fields(body) {
        fields.push(code);
        if code == b'S' || code == b'V' {
            fields.extend_from_slice(b"FATAL");
        } else {
            fields.extend_from_slice(value.as_bytes());
        }
        fields.push(0);
    }
    fields.push(0);
    let mut out = Vec::new();
    put_message(&mut out, bt::ERROR_RESPONSE, &fields);
    out
}

/// Ends the handshake: the messages queued for the client go out followed
/// by `err`, so the client learns why its connection closes.
async fn fail(client: &mut Stream, to_client: &mut Vec<u8>, err: PgError) -> HandshakeError {
    err.encode(to_client);
    let _ = client.write_all(to_client).await;
    let _ = client.flush().await;
    HandshakeError::Client(err)
}

/// Sends what is queued for the client, then relays the client's one
/// authentication answer to the upstream.
async fn relay_client_auth(
    client: &mut Stream,
    upstream: &mut Stream,
    to_client: &mut Vec<u8>,
    sasl_initial: bool,
) -> Result<(), HandshakeError> {
    client.write_all(to_client).await?;
    client.flush().await?;
    to_client.clear();
    let (tag, body) = match read_message(client, MAX_AUTH_MESSAGE).await {
        Ok(m) => m,
        Err(HandshakeError::Client(e)) => {
            send_error(client, &e).await;
            return Err(e.into());
        }
        Err(e) => return Err(e),
    };
    if tag != ft::PASSWORD {
        let e = PgError::fatal(
            "08P01",
            format!(
                "expected an authentication response, got message type {:?}",
                tag as char
            ),
        );
        send_error(client, &e).await;
        return Err(e.into());
    }
    if sasl_initial && client.is_tls() && upstream.is_tls() && sasl_client_thinks_no_binding(&body)
    {
        let err = channel_binding_error();
        send_error(client, &err).await;
        return Err(err.into());
    }
    let mut out = Vec::with_capacity(body.len() + HEADER_LEN);
    put_message(&mut out, tag, &body);
    upstream.write_all(&out).await?;
    upstream.flush().await?;
    Ok(())
}

async fn relay(ctx: &ProxyContext, est: Established) {
    let Established {
        mut client,
        mut upstream,
        leftover,
        tx_status,
        info,
        _cancel,
    } = est;
    let config = ctx.config();
    ctx.metrics.drift.watch(&info.database);
    let registered = ctx.sessions.register(NewSession {
        pid: _cancel.pid(),
        peer: info.peer.clone(),
        user: info.user.clone(),
        database: info.database.clone(),
        branch: info.branch.clone(),
        application_name: info.application_name.clone().unwrap_or_default(),
        tls: client.is_tls(),
    });
    let mut hook = ctx.hooks.create(&info);
    let mut relay = Relay::new(
        &mut client,
        &mut upstream,
        hook.as_mut(),
        RelayParams {
            buffer_size: config.relay_buffer_size,
            max_message: config.max_message_size,
            upstream_leftover: &leftover,
            tx_status,
            shutdown: ctx.shutdown.clone(),
            force: ctx.force.clone(),
            io: (!config.metrics.listen.is_empty()).then(|| ctx.metrics.statements.clone()),
            slot: Some(registered.slot.clone()),
        },
    );
    let end = (&mut relay).await;
    let at_boundary = relay.client_at_boundary();
    let upstream_at_boundary = relay.upstream_at_boundary();
    drop(relay);
    let final_error = match &end {
        RelayEnd::ClientClosed => None,
        RelayEnd::ClientError(e) => {
            debug!(error = %e, "client connection failed");
            None
        }
        RelayEnd::UpstreamClosed { fatal_seen: true } => None,
        RelayEnd::UpstreamClosed { fatal_seen: false } | RelayEnd::UpstreamError(_) => {
            if let RelayEnd::UpstreamError(e) = &end {
                warn!(error = %e, "connection to the database server failed");
            } else {
                warn!("the database server closed the connection");
            }
            Some(
                PgError::fatal(
                    "08006",
                    "pgbranch: the connection to the database server was lost",
                )
                .with_hint("the server closed the connection unexpectedly; reconnect to continue"),
            )
        }
        RelayEnd::ProtocolViolation(e) => {
            info!(error = %e, "protocol violation; connection closed");
            Some(e.clone())
        }
        RelayEnd::Shutdown | RelayEnd::ForcedShutdown => {
            debug!(?end, "closing session for shutdown");
            // Terminate only between messages, and never wait long: an
            // upstream that stopped reading must not hold up shutdown.
            if upstream_at_boundary {
                let _ = tokio::time::timeout(EPILOGUE_TIMEOUT, async {
                    upstream.write_all(&[ft::TERMINATE, 0, 0, 0, 4]).await?;
                    upstream.flush().await
                })
                .await;
            }
            Some(PgError::fatal(
                "57P01",
                "terminating connection because pgbranch is shutting down",
            ))
        }
    };
    // A client that stopped reading must not hold up the session's end.
    let _ = tokio::time::timeout(EPILOGUE_TIMEOUT, async {
        if let (Some(err), true) = (final_error, at_boundary) {
            send_error(&mut client, &err).await;
        }
        let _ = client.shutdown().await;
    })
    .await;
    debug!("session ended");
}

/// Whether a SASLInitialResponse says "I support channel binding but think
/// the server does not" (GS2 flag `y`). With TLS on both legs PostgreSQL
/// rejects that as a possible downgrade, and the flag is covered by the
/// client's proof, so the proxy cannot change it.
fn sasl_client_thinks_no_binding(body: &[u8]) -> bool {
    let Some((_mechanism, rest)) = crate::protocol::take_cstr(body) else {
        return false;
    };
    rest.len() > 4 && rest[4] == b'y'
}

/// The error for [`sasl_client_thinks_no_binding`] with TLS on both legs:
/// says what to change instead of the server's "channel binding
/// negotiation error".
fn channel_binding_error() -> PgError {
    PgError::fatal(
        "28000",
        "SCRAM authentication with channel_binding=prefer cannot pass through pgbranch when both the client and the server connection use TLS",
    )
    .with_detail("the client would bind to pgbranch's TLS certificate, which the database server cannot verify, and the server refuses a client that skips binding on a TLS connection")
    .with_hint("connect with channel_binding=disable, or disable TLS on one of the two legs (tls.mode or upstream.tls in the pgbranch configuration)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gs2_flag_detection() {
        let mut body = b"SCRAM-SHA-256\0".to_vec();
        body.extend_from_slice(&20u32.to_be_bytes());
        body.extend_from_slice(b"y,,n=,r=abcdefghijk");
        assert!(sasl_client_thinks_no_binding(&body));
        let n = [&body[..18], b"n", &body[19..]].concat();
        assert!(!sasl_client_thinks_no_binding(&n));
        assert!(!sasl_client_thinks_no_binding(b"SCRAM-SHA-256\0"));
        assert!(!sasl_client_thinks_no_binding(b"no-nul"));
    }
}
