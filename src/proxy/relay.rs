//! The steady-state relay between a client and its upstream connection.
//!
//! One future per session polls both directions (as tokio's
//! `copy_bidirectional` does: no extra task, no lock, no cross-thread
//! wake-up). Each direction reads into a fixed buffer, walks the message
//! headers in place, and writes the scanned range back out in one write:
//! bytes are forwarded, not re-encoded, and a message larger than the
//! buffer is streamed through piece by piece, so memory stays bounded
//! whatever the result or COPY size. A write that cannot complete stops
//! reading in that direction, which is the backpressure: a client that stops
//! reading makes the upstream block, not the proxy buffer.
//!
//! Only what the hook asks for, and the few messages the relay itself must
//! read (ReadyForQuery, ErrorResponse), are required whole in the buffer.
//!
//! [`Pending`] is the queue of expected responses: every client message that
//! produces a response pushes a [`Group`] saying who owns it, and every
//! server message is matched against the front of the queue. That is what
//! lets a hook inject statements and swallow exactly their responses.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::hooks::{Injected, Owner, PositionMap, SessionHook, StatementSet};
use super::sessions::{SessionSlot, SessionState};
use super::stream::Stream;
use crate::protocol::backend::{error_is_fatal, PgError};
use crate::protocol::{backend_tag as bt, frontend_tag as ft, read_u32, HEADER_LEN};

/// Largest ErrorResponse read whole (to see whether it is FATAL).
const MAX_INSPECTED_ERROR: usize = 64 * 1024;

/// Which response ends a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ends {
    /// ReadyForQuery (Query, FunctionCall, Sync).
    Ready,
    ParseComplete,
    BindComplete,
    CloseComplete,
    /// RowDescription or NoData.
    Describe,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
}

/// The responses to one client message.
#[derive(Debug, Clone)]
struct Group {
    ends: Ends,
    owner: Owner,
    /// Extended-protocol message: skipped by the server after an error
    /// until Sync.
    extended: bool,
    sync: bool,
    /// Simple Query: statements whose responses the proxy owns.
    swallow: StatementSet,
    /// Simple Query: index of the statement now answering.
    stmt: u32,
    /// Client CopyDone/CopyFail messages sent before this group: tells
    /// which Syncs were sent inside a COPY FROM STDIN (the server ignores
    /// them).
    epoch: u32,
    /// Sent alone (`ClientVerdict::alone`): its responses go to
    /// `SessionHook::on_alone_response`.
    alone: bool,
    /// A rewritten simple Query: how to map error positions back.
    positions: Option<std::sync::Arc<PositionMap>>,
}

impl Group {
    fn for_client_tag(tag: u8, owner: Owner, swallow: StatementSet) -> Option<Self> {
        let (ends, extended, sync) = match tag {
            ft::QUERY | ft::FUNCTION_CALL => (Ends::Ready, false, false),
            ft::SYNC => (Ends::Ready, false, true),
            ft::PARSE => (Ends::ParseComplete, true, false),
            ft::BIND => (Ends::BindComplete, true, false),
            ft::CLOSE => (Ends::CloseComplete, true, false),
            ft::DESCRIBE => (Ends::Describe, true, false),
            ft::EXECUTE => (Ends::Execute, true, false),
            _ => return None,
        };
        Some(Self {
            ends,
            owner,
            extended,
            sync,
            swallow,
            stmt: 0,
            epoch: 0,
            alone: false,
            positions: None,
        })
    }

    fn owner_now(&self) -> Owner {
        if self.swallow.contains(self.stmt as usize) {
            Owner::Proxy
        } else {
            self.owner
        }
    }
}

/// The queue of expected responses, shared by both directions.
#[derive(Debug, Default)]
pub struct Pending {
    groups: VecDeque<Group>,
    /// After an error in an extended-protocol message the server ignores
    /// everything up to Sync.
    discard_until_sync: bool,
    /// Transaction status of the last ReadyForQuery (`I`, `T`, `E`).
    pub tx_status: u8,
    /// CopyDone/CopyFail messages the client has sent.
    copy_ends: u32,
    /// A COPY FROM STDIN is running whose end the client has not sent yet
    /// (the value is `copy_ends` at its start): Syncs sent now are ignored
    /// by the server and produce no ReadyForQuery.
    copy_in: Option<u32>,
}

impl Pending {
    fn push_client_tag(&mut self, tag: u8, owner: Owner, swallow: StatementSet) {
        match tag {
            ft::COPY_DONE | ft::COPY_FAIL => {
                if self.copy_in == Some(self.copy_ends) {
                    self.copy_in = None;
                }
                self.copy_ends += 1;
                return;
            }
            ft::SYNC if self.copy_in == Some(self.copy_ends) => return,
            _ => {}
        }
        if let Some(mut g) = Group::for_client_tag(tag, owner, swallow) {
            g.epoch = self.copy_ends;
            self.groups.push_back(g);
        }
    }

    /// Pushes groups for every message in a block of complete frames.
    fn push_frames(&mut self, frames: &[u8], owner: Owner, swallow: &StatementSet) {
        let mut at = 0;
        while at + HEADER_LEN <= frames.len() {
            self.push_client_tag(frames[at], owner, swallow.clone());
            at += 1 + read_u32(frames, at + 1) as usize;
        }
    }

    /// Marks the groups pushed since the queue held `from` groups as sent
    /// alone.
    fn mark_alone(&mut self, from: usize) {
        for g in self.groups.iter_mut().skip(from) {
            g.alone = true;
        }
    }

    /// Sets the position map of the groups pushed since the queue held
    /// `from` groups.
    fn set_positions(&mut self, from: usize, map: &std::sync::Arc<PositionMap>) {
        for g in self.groups.iter_mut().skip(from) {
            g.positions = Some(map.clone());
        }
    }

    /// Whether a group sent alone still expects a response: it is queued
    /// and not among the groups the server will skip (after an error in
    /// an extended-protocol message, everything up to the next Sync).
    fn alone_outstanding(&self) -> bool {
        let mut skipping = self.discard_until_sync;
        for g in &self.groups {
            if g.sync {
                skipping = false;
            }
            if g.alone && !skipping {
                return true;
            }
        }
        false
    }

    /// The group a server message would be matched against, skipping
    /// groups the server discards after an error.
    fn front(&self) -> Option<&Group> {
        if self.discard_until_sync {
            self.groups.iter().find(|g| g.sync)
        } else {
            self.groups.front()
        }
    }

    /// Who owns a server message with `tag` (without consuming it).
    fn owner_of(&self, tag: u8) -> Owner {
        match tag {
            // Asynchronous messages go to the client; a notice belongs to
            // whatever statement is running.
            bt::NOTIFICATION_RESPONSE | bt::PARAMETER_STATUS => Owner::Client,
            bt::READY_FOR_QUERY => self.front().map_or(Owner::Client, |g| g.owner),
            _ => self.front().map_or(Owner::Client, Group::owner_now),
        }
    }

    /// Accounts for a server message with `tag` that is being consumed.
    fn advance(&mut self, tag: u8) {
        if matches!(
            tag,
            bt::NOTIFICATION_RESPONSE | bt::PARAMETER_STATUS | bt::NOTICE_RESPONSE
        ) {
            return;
        }
        if self.discard_until_sync {
            while self.groups.front().is_some_and(|g| !g.sync) {
                self.groups.pop_front();
            }
        }
        if tag == bt::COPY_IN_RESPONSE {
            self.start_copy_in();
            return;
        }
        let Some(g) = self.groups.front_mut() else {
            return;
        };
        let done = match (g.ends, tag) {
            (_, bt::ERROR_RESPONSE) if g.extended => {
                self.discard_until_sync = true;
                true
            }
            (Ends::Ready, bt::READY_FOR_QUERY) => {
                self.discard_until_sync = false;
                true
            }
            (Ends::Ready, bt::COMMAND_COMPLETE | bt::EMPTY_QUERY_RESPONSE) => {
                g.stmt = g.stmt.saturating_add(1);
                false
            }
            (Ends::ParseComplete, bt::PARSE_COMPLETE)
            | (Ends::BindComplete, bt::BIND_COMPLETE)
            | (Ends::CloseComplete, bt::CLOSE_COMPLETE)
            | (Ends::Describe, bt::ROW_DESCRIPTION | bt::NO_DATA)
            | (
                Ends::Execute,
                bt::COMMAND_COMPLETE | bt::EMPTY_QUERY_RESPONSE | bt::PORTAL_SUSPENDED,
            ) => true,
            _ => false,
        };
        if done {
            self.groups.pop_front();
        }
    }

    /// CopyInResponse for the front group: until the client's next
    /// CopyDone/CopyFail, the server ignores Sync, so the Syncs the client
    /// sent after starting the COPY get no ReadyForQuery.
    fn start_copy_in(&mut self) {
        let Some(epoch) = self.groups.front().map(|g| g.epoch) else {
            return;
        };
        let mut first = true;
        self.groups.retain(|g| {
            let keep = first || !(g.sync && g.epoch == epoch);
            first = false;
            keep
        });
        if self.copy_ends == epoch {
            self.copy_in = Some(epoch);
        }
    }

    /// No response outstanding.
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// The client closed its connection (after Terminate or not).
    ClientClosed,
    /// The upstream closed; `fatal_seen` says whether it sent a FATAL
    /// error first (which the client then already has).
    UpstreamClosed {
        fatal_seen: bool,
    },
    ClientError(io::Error),
    UpstreamError(io::Error),
    /// The client broke the protocol; the error is for the client.
    ProtocolViolation(PgError),
    /// Graceful shutdown reached an idle session.
    Shutdown,
    /// The shutdown timeout passed.
    ForcedShutdown,
}

/// One direction's buffer and framing state.
struct Pump {
    buf: Vec<u8>,
    /// Start of bytes not yet written (direct mode).
    start: usize,
    /// End of bytes already framed.
    scanned: usize,
    /// End of bytes read.
    end: usize,
    /// Bytes of the current message still to pass through unframed.
    remaining: usize,
    /// The scanned region waits for more bytes of a message needed whole.
    need_more: bool,
    /// Bytes from `scanned` that the waiting message needs.
    need_total: usize,
    /// Modified output (when bytes were injected or swallowed).
    out: Vec<u8>,
    out_pos: usize,
    need_flush: bool,
    eof: bool,
    default_size: usize,
}

impl Pump {
    fn new(size: usize, initial: &[u8]) -> Self {
        let mut buf = vec![0; size.max(initial.len())];
        buf[..initial.len()].copy_from_slice(initial);
        Self {
            buf,
            start: 0,
            scanned: 0,
            end: initial.len(),
            remaining: 0,
            need_more: false,
            need_total: HEADER_LEN,
            out: Vec::new(),
            out_pos: 0,
            need_flush: false,
            eof: false,
            default_size: size,
        }
    }

    fn output(&self) -> &[u8] {
        if self.out_pos < self.out.len() {
            &self.out[self.out_pos..]
        } else {
            &self.buf[self.start..self.scanned]
        }
    }

    fn has_output(&self) -> bool {
        self.out_pos < self.out.len() || self.start < self.scanned
    }

    fn consume_output(&mut self, n: usize) {
        if self.out_pos < self.out.len() {
            self.out_pos += n;
            if self.out_pos == self.out.len() {
                self.out.clear();
                self.out_pos = 0;
            }
        } else {
            self.start += n;
        }
    }

    /// Whether the stream is between messages with nothing in flight, so a
    /// proxy-made message may be written.
    fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.scanned == self.start && !self.has_output()
    }

    fn idle(&self) -> bool {
        self.at_boundary() && self.scanned == self.end
    }

    /// Makes room to read: compacts, and grows for a message needed whole
    /// (`need` bytes from `scanned`).
    fn make_room(&mut self, need: usize) {
        if self.start == self.end {
            self.start = 0;
            self.scanned = 0;
            self.end = 0;
            if self.buf.len() > self.default_size && need <= self.default_size {
                self.buf = vec![0; self.default_size];
            }
        }
        let free = self.buf.len() - self.end;
        if free == 0 || self.scanned + need > self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.scanned -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if need > self.buf.len() - self.scanned {
            // Grow with the bytes that arrive, not with what a 5-byte
            // header claims: a peer that announces a huge message and
            // sends nothing must not make the proxy allocate it.
            let target = (self.scanned + need).min((self.buf.len() * 2).max(self.end + 64 * 1024));
            self.buf.resize(target, 0);
        }
    }

    /// Passes over the rest of a streamed message, then returns the next
    /// header `(tag, length)`. `None` when the buffered bytes run out (with
    /// `need_more` set if they end inside a header). A length below 4 is
    /// returned as is; the caller refuses it.
    fn next_header(&mut self) -> Option<(u8, usize)> {
        if self.remaining > 0 {
            let n = self.remaining.min(self.end - self.scanned);
            self.scanned += n;
            self.remaining -= n;
        }
        if self.scanned == self.end {
            return None;
        }
        if self.end - self.scanned < HEADER_LEN {
            self.need_more = true;
            return None;
        }
        Some((
            self.buf[self.scanned],
            read_u32(&self.buf, self.scanned + 1) as usize,
        ))
    }

    /// Passes a message of `total` bytes through; what has not arrived yet
    /// streams through later without being framed.
    fn pass(&mut self, total: usize) {
        let avail = self.end - self.scanned;
        if avail >= total {
            self.scanned += total;
        } else {
            self.remaining = total - avail;
            self.scanned = self.end;
        }
    }

    /// Whether the whole message of `total` bytes is buffered; otherwise
    /// marks the pump as waiting for it.
    fn has_whole(&mut self, total: usize) -> bool {
        let whole = self.end - self.scanned >= total;
        self.need_more = !whole;
        self.need_total = total;
        whole
    }

    /// Bytes needed from `scanned` for the message the pump waits on.
    fn whole_need(&self) -> usize {
        if !self.need_more || self.end - self.scanned < HEADER_LEN {
            return HEADER_LEN;
        }
        self.need_total
    }

    /// Moves the written-as-is range `[start, upto)` into `out` so that
    /// what follows can be changed.
    fn divert(&mut self, upto: usize) {
        self.out.extend_from_slice(&self.buf[self.start..upto]);
        self.start = upto;
    }
}

/// Which tags each side must see whole for the hook.
struct Interest {
    client: [bool; 256],
    /// Longest client message body held whole for the hook, per tag.
    client_peek: [usize; 256],
    server: [bool; 256],
}

/// The relay future. Poll it to completion for the session's lifetime.
pub struct Relay<'a> {
    client: &'a mut Stream,
    upstream: &'a mut Stream,
    c2u: Pump,
    u2c: Pump,
    pub pending: Pending,
    hook: &'a mut dyn SessionHook,
    interest: Interest,
    /// Messages the hook asked to send upstream at the next client
    /// message boundary (see `SessionHook::on_server_message` and
    /// `SessionHook::on_alone_response`).
    inject_upstream: Vec<u8>,
    /// A client message was sent alone: no later client message is framed
    /// while a response to it is outstanding.
    held: bool,
    max_message: usize,
    fatal_seen: bool,
    shutdown: Pin<Box<WaitForCancellationFutureOwned>>,
    shutdown_token: super::StopSignal,
    shutting_down: bool,
    force: Pin<Box<WaitForCancellationFutureOwned>>,
    force_token: super::StopSignal,
    signals_registered: bool,
    /// Where bytes to and from the client are counted (metrics on).
    io: Option<std::sync::Arc<crate::metrics::stmt::StatementMetrics>>,
    /// Where the session's state is published (admin console, PAUSE).
    slot: Option<std::sync::Arc<SessionSlot>>,
    /// The next statement waits for RESUME.
    paused: bool,
    /// An extended-protocol message went out since the last
    /// ReadyForQuery: PostgreSQL may hold an implicit transaction open even
    /// when every response has arrived (no Sync yet).
    unsynced: bool,
}

/// Parameters of a relay.
pub struct RelayParams<'a> {
    pub buffer_size: usize,
    pub max_message: usize,
    /// Bytes already read from the upstream during startup.
    pub upstream_leftover: &'a [u8],
    pub tx_status: u8,
    pub shutdown: super::StopSignal,
    pub force: super::StopSignal,
    /// Counts bytes to and from the client when set.
    pub io: Option<std::sync::Arc<crate::metrics::stmt::StatementMetrics>>,
    /// The session's entry in the admin console's list; its gate holds
    /// statements during PAUSE.
    pub slot: Option<std::sync::Arc<SessionSlot>>,
}

impl<'a> Relay<'a> {
    pub fn new(
        client: &'a mut Stream,
        upstream: &'a mut Stream,
        hook: &'a mut dyn SessionHook,
        params: RelayParams<'_>,
    ) -> Self {
        let mut interest = Interest {
            client: [false; 256],
            client_peek: [usize::MAX; 256],
            server: [false; 256],
        };
        for tag in 0..=255u8 {
            interest.client[tag as usize] = hook.wants_client(tag);
            interest.client_peek[tag as usize] = hook.client_peek_limit(tag);
            interest.server[tag as usize] = hook.wants_server(tag);
        }
        Self {
            client,
            upstream,
            c2u: Pump::new(params.buffer_size, &[]),
            u2c: Pump::new(params.buffer_size, params.upstream_leftover),
            pending: Pending {
                tx_status: params.tx_status,
                ..Pending::default()
            },
            hook,
            interest,
            inject_upstream: Vec::new(),
            held: false,
            max_message: params.max_message,
            fatal_seen: false,
            shutdown: Box::pin(params.shutdown.token().clone().cancelled_owned()),
            shutdown_token: params.shutdown,
            shutting_down: false,
            force: Box::pin(params.force.token().clone().cancelled_owned()),
            force_token: params.force,
            signals_registered: false,
            io: params.io,
            slot: params.slot,
            paused: false,
            unsynced: false,
        }
    }

    /// Whether a proxy-made message may be written to the client now.
    pub fn client_at_boundary(&self) -> bool {
        self.u2c.at_boundary()
    }

    /// Whether a proxy-made message may be written to the upstream now.
    pub fn upstream_at_boundary(&self) -> bool {
        self.c2u.at_boundary()
    }

    /// Idle: no response outstanding, nothing half-sent, not in a
    /// transaction.
    fn session_idle(&self) -> bool {
        self.pending.is_empty()
            && self.pending.tx_status == b'I'
            && self.c2u.idle()
            && self.u2c.idle()
    }

    /// No transaction open, explicit or implicit, and nothing outstanding.
    fn between_transactions(&self) -> bool {
        self.pending.is_empty() && self.pending.tx_status == b'I' && !self.unsynced
    }

    /// While held by PAUSE: reads what the client sends into the buffer
    /// (unframed) to notice it leaving.
    fn poll_client_while_held(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayEnd>> {
        loop {
            let p = &mut self.c2u;
            if p.end == p.buf.len() {
                return Poll::Pending;
            }
            let mut rb = ReadBuf::new(&mut p.buf[p.end..]);
            match Pin::new(&mut *self.client).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(RelayEnd::ClientError(e))),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        return Poll::Ready(Err(RelayEnd::ClientClosed));
                    }
                    if let Some(m) = &self.io {
                        m.bytes_from_clients
                            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                    }
                    p.end += n;
                }
            }
        }
    }

    /// Frames client bytes `[scanned, end)`.
    fn process_client(&mut self) -> Result<(), PgError> {
        let p = &mut self.c2u;
        while let Some((tag, len)) = p.next_header() {
            if len < 4 {
                return Err(PgError::fatal("08P01", "invalid message length"));
            }
            if len > self.max_message {
                return Err(PgError::fatal(
                    "08P01",
                    format!(
                        "message of {len} bytes exceeds the proxy's limit of {} bytes (max_message_size)",
                        self.max_message
                    ),
                ));
            }
            let total = 1 + len;
            if matches!(
                tag,
                ft::PARSE | ft::BIND | ft::DESCRIBE | ft::EXECUTE | ft::CLOSE | ft::FLUSH
            ) {
                self.unsynced = true;
            }
            if !self.interest.client[tag as usize] {
                self.pending
                    .push_client_tag(tag, Owner::Client, StatementSet::default());
                p.pass(total);
                continue;
            }
            let peek = self.interest.client_peek[tag as usize];
            if len - 4 > peek {
                // Too long to hold whole: the hook sees its beginning.
                if !p.has_whole(HEADER_LEN + peek) {
                    break;
                }
                let prefix = &p.buf[p.scanned + HEADER_LEN..p.scanned + HEADER_LEN + peek];
                self.hook.on_client_prefix(tag, prefix);
                self.pending
                    .push_client_tag(tag, Owner::Client, StatementSet::default());
                p.pass(total);
                continue;
            }
            if !p.has_whole(total) {
                break;
            }
            let body = &p.buf[p.scanned + HEADER_LEN..p.scanned + total];
            let verdict = self.hook.on_client_message(tag, body);
            if verdict.is_forward() {
                self.pending
                    .push_client_tag(tag, Owner::Client, StatementSet::default());
                p.scanned += total;
                continue;
            }
            p.divert(p.scanned);
            let none = StatementSet::default();
            self.pending
                .push_frames(&verdict.before, Owner::Proxy, &none);
            p.out.extend_from_slice(&verdict.before);
            let client_groups = self.pending.groups.len();
            match &verdict.replace {
                Some(bytes) => {
                    self.pending
                        .push_frames(bytes, Owner::Client, &verdict.swallow_statements);
                    p.out.extend_from_slice(bytes);
                }
                None => {
                    self.pending
                        .push_client_tag(tag, Owner::Client, verdict.swallow_statements);
                    p.out
                        .extend_from_slice(&p.buf[p.scanned..p.scanned + total]);
                }
            }
            if verdict.alone {
                self.pending.mark_alone(client_groups);
            }
            if let Some(map) = &verdict.positions {
                self.pending.set_positions(client_groups, map);
            }
            self.pending
                .push_frames(&verdict.after, Owner::Proxy, &none);
            p.out.extend_from_slice(&verdict.after);
            p.scanned += total;
            p.start = p.scanned;
            if verdict.alone && self.pending.alone_outstanding() {
                // Nothing the client sent later goes out before all of
                // this message's responses (poll_c2u).
                self.held = true;
                break;
            }
        }
        if !p.out.is_empty() {
            p.divert(p.scanned);
        }
        Ok(())
    }

    /// Frames upstream bytes `[scanned, end)`.
    fn process_server(&mut self) -> Result<(), PgError> {
        let p = &mut self.u2c;
        while let Some((tag, len)) = p.next_header() {
            if len < 4 {
                return Err(PgError::fatal(
                    "08P01",
                    "the database server sent a malformed message",
                ));
            }
            let total = 1 + len;
            let owner = self.pending.owner_of(tag);
            let alone = !matches!(
                tag,
                bt::NOTIFICATION_RESPONSE | bt::PARAMETER_STATUS | bt::NOTICE_RESPONSE
            ) && self.pending.front().is_some_and(|g| g.alone);
            // An error of a rewritten Query: its position is mapped back.
            let positions = if tag == bt::ERROR_RESPONSE {
                self.pending
                    .front()
                    .and_then(|g| Some((g.positions.clone()?, g.stmt)))
            } else {
                None
            };
            // Errors and notices can be as large as a client makes them
            // (an error quoting a huge value): the hook sees those up to
            // the size the relay inspects anyway; longer ones stream.
            let hook_wants = owner == Owner::Client
                && self.interest.server[tag as usize]
                && (len <= MAX_INSPECTED_ERROR
                    || !matches!(tag, bt::ERROR_RESPONSE | bt::NOTICE_RESPONSE));
            // ErrorResponse is read whole to notice FATAL errors; those are
            // short. A huge one (e.g. a 200 MB value in the message) streams.
            let whole = owner == Owner::Proxy
                || hook_wants
                || tag == bt::READY_FOR_QUERY
                || (tag == bt::ERROR_RESPONSE && len <= MAX_INSPECTED_ERROR);
            if !whole {
                self.pending.advance(tag);
                p.pass(total);
                continue;
            }
            if !p.has_whole(total) {
                break;
            }
            self.pending.advance(tag);
            let body = &p.buf[p.scanned + HEADER_LEN..p.scanned + total];
            match tag {
                bt::READY_FOR_QUERY if !body.is_empty() => {
                    self.pending.tx_status = body[0];
                    self.unsynced = false;
                }
                bt::ERROR_RESPONSE if error_is_fatal(body) => self.fatal_seen = true,
                _ => {}
            }
            let verdict = match owner {
                Owner::Client => {
                    if hook_wants {
                        let inject = self.hook.on_server_message(tag, body);
                        self.inject_upstream.extend_from_slice(&inject);
                        if alone {
                            let inject = self.hook.on_alone_response(tag, body);
                            self.inject_upstream.extend_from_slice(&inject);
                        }
                    }
                    Injected::Forward
                }
                Owner::Proxy => self.hook.on_injected_response(tag, body),
            };
            let verdict = match (verdict, positions) {
                (Injected::Forward, Some((map, stmt))) => match map.rewrite_fields(body, stmt) {
                    Some(mapped) => {
                        let mut frame = Vec::with_capacity(mapped.len() + HEADER_LEN);
                        crate::protocol::put_message(&mut frame, tag, &mapped);
                        Injected::Replace(frame)
                    }
                    None => Injected::Forward,
                },
                (verdict, _) => verdict,
            };
            match verdict {
                Injected::Forward => {}
                Injected::Swallow => {
                    p.divert(p.scanned);
                    p.start = p.scanned + total;
                }
                Injected::Replace(bytes) => {
                    p.divert(p.scanned);
                    p.out.extend_from_slice(&bytes);
                    p.start = p.scanned + total;
                }
            }
            p.scanned += total;
        }
        if !p.out.is_empty() {
            p.divert(p.scanned);
        }
        Ok(())
    }

    /// Queues the hook's upstream injection once the client stream is
    /// between messages (everything framed so far is whole).
    fn take_upstream_injection(&mut self) {
        if self.inject_upstream.is_empty() || self.c2u.remaining > 0 {
            return;
        }
        let bytes = std::mem::take(&mut self.inject_upstream);
        let p = &mut self.c2u;
        p.divert(p.scanned);
        self.pending
            .push_frames(&bytes, Owner::Proxy, &StatementSet::default());
        p.out.extend_from_slice(&bytes);
    }

    /// Does one unit of work in the client → upstream direction.
    fn poll_c2u(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayEnd>> {
        self.take_upstream_injection();
        if self.c2u.has_output() {
            let n = ready!(Pin::new(&mut *self.upstream).poll_write(cx, self.c2u.output()))
                .map_err(RelayEnd::UpstreamError)?;
            if n == 0 {
                return Poll::Ready(Err(RelayEnd::UpstreamError(
                    io::ErrorKind::WriteZero.into(),
                )));
            }
            self.c2u.consume_output(n);
            self.c2u.need_flush = true;
            return Poll::Ready(Ok(()));
        }
        if self.c2u.need_flush {
            ready!(Pin::new(&mut *self.upstream).poll_flush(cx))
                .map_err(RelayEnd::UpstreamError)?;
            self.c2u.need_flush = false;
        }
        if self.held {
            if self.pending.alone_outstanding() {
                // Woken by the upstream's responses (see `poll`).
                return Poll::Pending;
            }
            self.held = false;
            // The hook's injection goes before what the client sent later.
            if !self.inject_upstream.is_empty() {
                return Poll::Ready(Ok(()));
            }
        }
        if self.c2u.scanned < self.c2u.end && !self.c2u.need_more {
            // PAUSE: a new statement outside a transaction waits.
            if self.slot.is_some() && self.between_transactions() {
                let slot = self.slot.as_ref().expect("checked");
                // Busy first, then the gate (PAUSE sets the gate, then
                // reads the states): one of the two sees the other.
                slot.mark_active();
                if slot.gate().poll_open(cx).is_pending() {
                    self.paused = true;
                    slot.publish(SessionState::Held, None);
                    // A client that leaves while held ends its session;
                    // what it sent meanwhile waits in the buffer.
                    return self.poll_client_while_held(cx);
                }
            }
            let framed = self.process_client();
            self.hook.end_of_batch();
            framed.map_err(RelayEnd::ProtocolViolation)?;
            if self.c2u.has_output() || self.held {
                return Poll::Ready(Ok(()));
            }
        }
        if self.c2u.eof {
            return Poll::Ready(Err(RelayEnd::ClientClosed));
        }
        let need = self.c2u.whole_need();
        self.c2u.make_room(need);
        let p = &mut self.c2u;
        let mut rb = ReadBuf::new(&mut p.buf[p.end..]);
        ready!(Pin::new(&mut *self.client).poll_read(cx, &mut rb))
            .map_err(RelayEnd::ClientError)?;
        let n = rb.filled().len();
        if let Some(m) = &self.io {
            m.bytes_from_clients
                .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
        if n == 0 {
            p.eof = true;
        }
        p.end += n;
        p.need_more = false;
        Poll::Ready(Ok(()))
    }

    /// Does one unit of work in the upstream → client direction.
    fn poll_u2c(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RelayEnd>> {
        if self.u2c.has_output() {
            let n = ready!(Pin::new(&mut *self.client).poll_write(cx, self.u2c.output()))
                .map_err(RelayEnd::ClientError)?;
            if n == 0 {
                return Poll::Ready(Err(RelayEnd::ClientError(io::ErrorKind::WriteZero.into())));
            }
            if let Some(m) = &self.io {
                m.bytes_to_clients
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            self.u2c.consume_output(n);
            self.u2c.need_flush = true;
            return Poll::Ready(Ok(()));
        }
        if self.u2c.need_flush {
            ready!(Pin::new(&mut *self.client).poll_flush(cx)).map_err(RelayEnd::ClientError)?;
            self.u2c.need_flush = false;
        }
        if self.u2c.scanned < self.u2c.end && !self.u2c.need_more {
            let framed = self.process_server();
            self.hook.end_of_batch();
            framed.map_err(RelayEnd::ProtocolViolation)?;
            if self.u2c.has_output() {
                return Poll::Ready(Ok(()));
            }
        }
        if self.u2c.eof {
            return Poll::Ready(Err(RelayEnd::UpstreamClosed {
                fatal_seen: self.fatal_seen,
            }));
        }
        let need = self.u2c.whole_need();
        self.u2c.make_room(need);
        let p = &mut self.u2c;
        let mut rb = ReadBuf::new(&mut p.buf[p.end..]);
        ready!(Pin::new(&mut *self.upstream).poll_read(cx, &mut rb))
            .map_err(RelayEnd::UpstreamError)?;
        let n = rb.filled().len();
        if n == 0 {
            p.eof = true;
        }
        p.end += n;
        p.need_more = false;
        Poll::Ready(Ok(()))
    }
}

impl Relay<'_> {
    /// Polls one direction until it must wait, so that each socket is
    /// polled (and its waiter lock taken) once per wake-up rather than once
    /// per step of the other direction.
    fn drive(
        &mut self,
        cx: &mut Context<'_>,
        step: fn(&mut Self, &mut Context<'_>) -> Poll<Result<(), RelayEnd>>,
    ) -> Option<RelayEnd> {
        loop {
            match step(self, cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(end)) => return Some(end),
                Poll::Pending => return None,
            }
        }
    }
}

impl Future for Relay<'_> {
    type Output = RelayEnd;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<RelayEnd> {
        let this = self.get_mut();
        // The shutdown signals are shared by every session: polling their
        // futures takes a lock shared by all connections. Poll them once to
        // register this task's waker, then read their atomic flags.
        if !this.signals_registered {
            this.signals_registered = true;
            let _ = this.force.as_mut().poll(cx);
            let _ = this.shutdown.as_mut().poll(cx);
        }
        if this.force_token.is_cancelled() {
            return Poll::Ready(RelayEnd::ForcedShutdown);
        }
        if this.shutdown_token.is_cancelled() {
            this.shutting_down = true;
        }
        // A statement held by PAUSE was never sent: the session may close.
        if this.shutting_down && (this.session_idle() || this.paused) {
            return Poll::Ready(RelayEnd::Shutdown);
        }
        this.paused = false;
        // Progress in one direction never makes the other readable or
        // writable, so each is driven until it waits, once.
        if let Some(end) = this.drive(cx, Self::poll_c2u) {
            return Poll::Ready(end);
        }
        if let Some(end) = this.drive(cx, Self::poll_u2c) {
            return Poll::Ready(end);
        }
        // A server message made the hook inject something upstream, or
        // ended the wait for the responses to a message sent alone.
        if !this.inject_upstream.is_empty() || this.held {
            if let Some(end) = this.drive(cx, Self::poll_c2u) {
                return Poll::Ready(end);
            }
        }
        if this.shutting_down && this.session_idle() {
            return Poll::Ready(RelayEnd::Shutdown);
        }
        if let Some(slot) = &this.slot {
            let state = if this.paused {
                SessionState::Held
            } else if !this.pending.is_empty() {
                SessionState::Active
            } else if this.between_transactions() {
                SessionState::Idle
            } else {
                SessionState::InTransaction
            };
            slot.publish(state, this.hook.branch());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8) -> u8 {
        tag
    }

    /// Feeds server tags through the queue, returning owners.
    fn run(p: &mut Pending, tags: &[u8]) -> Vec<Owner> {
        tags.iter()
            .map(|&t| {
                let o = p.owner_of(t);
                p.advance(t);
                o
            })
            .collect()
    }

    use Owner::{Client as C, Proxy as X};

    #[test]
    fn injected_extended_messages_before_sync_are_recognised() {
        let mut p = Pending::default();
        for t in [b'P', b'B', b'E'] {
            p.push_client_tag(t, C, StatementSet::default());
        }
        for t in [b'P', b'B', b'E'] {
            p.push_client_tag(t, X, StatementSet::default());
        }
        p.push_client_tag(b'S', C, StatementSet::default());
        let owners = run(&mut p, b"12DDC12CZ");
        assert_eq!(owners, vec![C, C, C, C, C, X, X, X, C]);
        assert!(p.is_empty());
    }

    #[test]
    fn error_skips_to_sync() {
        let mut p = Pending::default();
        for t in [b'P', b'B', b'E'] {
            p.push_client_tag(t, C, StatementSet::default());
        }
        for t in [b'P', b'B', b'E'] {
            p.push_client_tag(t, X, StatementSet::default());
        }
        p.push_client_tag(b'S', C, StatementSet::default());
        // Parse fails: everything up to Sync is skipped by the server.
        let owners = run(&mut p, b"EZ");
        assert_eq!(owners, vec![C, C]);
        assert!(p.is_empty());
    }

    #[test]
    fn swallowed_statements_of_a_simple_query() {
        let mut p = Pending::default();
        p.push_client_tag(b'Q', C, [1].into_iter().collect());
        // CREATE TABLE; INSERT INTO history: second CommandComplete swallowed.
        let owners = run(&mut p, &[msg(b'C'), b'N', b'C', b'Z']);
        assert_eq!(owners, vec![C, X, X, C]);
        // A failing first statement: error is the client's.
        p.push_client_tag(b'Q', C, [1].into_iter().collect());
        assert_eq!(run(&mut p, b"EZ"), vec![C, C]);
    }

    #[test]
    fn a_group_sent_alone_is_outstanding_until_answered_or_skipped() {
        let mut p = Pending::default();
        for t in *b"PB" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        let from = p.groups.len();
        p.push_client_tag(b'E', C, StatementSet::default());
        p.mark_alone(from);
        assert!(p.alone_outstanding());
        run(&mut p, b"12");
        assert!(p.alone_outstanding());
        run(&mut p, b"C");
        assert!(!p.alone_outstanding());

        // Bind fails: the server skips the Execute up to the Sync.
        for t in *b"PB" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        let from = p.groups.len();
        p.push_client_tag(b'E', C, StatementSet::default());
        p.mark_alone(from);
        run(&mut p, b"1E");
        assert!(!p.alone_outstanding());
        // A Query sent alone behind the Sync is answered after all.
        p.push_client_tag(b'S', C, StatementSet::default());
        let from = p.groups.len();
        p.push_client_tag(b'Q', C, StatementSet::default());
        p.mark_alone(from);
        assert!(p.alone_outstanding());
        run(&mut p, b"ZCZ");
        assert!(!p.alone_outstanding());
        assert!(p.is_empty());
    }

    #[test]
    fn async_messages_stay_with_the_client() {
        let mut p = Pending::default();
        p.push_client_tag(b'Q', X, StatementSet::default());
        assert_eq!(run(&mut p, b"ASNCZ"), vec![C, C, X, X, X]);
        assert_eq!(run(&mut p, b"A"), vec![C]);
    }

    #[test]
    fn describe_and_pipelines() {
        let mut p = Pending::default();
        for t in *b"PDSPBDES" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        run(&mut p, b"1tTZ12TDDCZ");
        assert!(p.is_empty());
    }

    #[test]
    fn syncs_inside_copy_in_expect_no_ready_for_query() {
        // tokio-postgres / libpq: Bind, Execute, Sync, CopyData..., CopyDone, Sync.
        let mut p = Pending::default();
        for t in *b"BES" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        run(&mut p, b"2G");
        for t in *b"ddcS" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        run(&mut p, b"CZ");
        assert!(p.is_empty(), "{p:?}");

        // CopyInResponse arrives before the client's Sync is framed: that
        // Sync is ignored too; the one after CopyDone is answered.
        p.push_client_tag(b'Q', C, StatementSet::default());
        run(&mut p, b"G");
        for t in *b"dScS" {
            p.push_client_tag(t, C, StatementSet::default());
        }
        run(&mut p, b"CZZ");
        assert!(p.is_empty(), "{p:?}");
    }

    #[test]
    fn pump_streams_large_messages() {
        let mut pump = Pump::new(16, &[]);
        pump.make_room(5);
        assert_eq!(pump.buf.len(), 16);
        pump.end = 16;
        pump.start = 16;
        pump.scanned = 16;
        pump.make_room(5);
        assert_eq!((pump.start, pump.end), (0, 0));
    }
}
