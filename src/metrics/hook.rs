//! The session hook that times statements, wrapped around the feature
//! hook (DDL history and branches) of each session.
//!
//! A simple Query is timed from the moment it is forwarded to its
//! ReadyForQuery; an Execute from the moment it is forwarded to its
//! CommandComplete (or PortalSuspended, EmptyQueryResponse, ErrorResponse).
//! The kind comes from the statement's first word (a prepared statement's
//! from its Parse); the overhead is the time spent in the hooks for the
//! statement's messages and responses, read once per batch (what the
//! relay frames in one pass, usually what one read brought: a pipeline's
//! messages, or a statement's responses) rather than once per message, and
//! counted for the batch's last statement (client side) or the first it
//! ends (server side).
//! Nothing here allocates per statement: statement and portal names are
//! kept as 64-bit hashes (the unnamed one and the last one used aside, so
//! that the usual Bind and Execute hash nothing), the queue of statements
//! in flight keeps its capacity.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

use super::stmt::{BranchSession, Kind, Protocol, StatementMetrics};
use crate::protocol::{backend_tag as bt, frontend_tag as ft, take_cstr};
use crate::proxy::hooks::{
    rewrite, ClientVerdict, HookFactory, Injected, SessionHook, SessionInfo,
};
use crate::proxy::reload::Tunables;
use crate::sql::classify::{classify, Action};
use crate::sql::lexer::{Lexer, Statements};

/// Most DDL actions remembered per statement in flight.
const MAX_ACTIONS: usize = 8;

/// Bytes of a statement kept for the slow-statement log.
const TEXT: usize = 256;

/// The start of a statement's text, kept without allocating.
#[derive(Debug, Clone, Copy)]
struct Text {
    bytes: [u8; TEXT],
    len: u16,
    truncated: bool,
}

impl Text {
    const EMPTY: Text = Text {
        bytes: [0; TEXT],
        len: 0,
        truncated: false,
    };

    fn of(sql: &[u8]) -> Text {
        let n = sql.len().min(TEXT);
        let mut t = Text::EMPTY;
        t.bytes[..n].copy_from_slice(&sql[..n]);
        t.len = n as u16;
        t.truncated = sql.len() > TEXT;
        t
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// A statement's text for the log: literals (strings, numbers, dollar
/// quotes) replaced by `?`, comments dropped, so that no value (a password,
/// personal data) reaches the log.
pub fn normalize(sql: &[u8], truncated: bool) -> String {
    use crate::sql::lexer::TokenKind;
    let mut out = String::with_capacity(sql.len());
    let mut prev_end = None;
    for t in Lexer::new(sql) {
        if prev_end.is_some_and(|e| e < t.start) {
            out.push(' ');
        }
        match t.kind {
            TokenKind::String | TokenKind::DollarString | TokenKind::Number => out.push('?'),
            _ => out.push_str(&String::from_utf8_lossy(t.text)),
        }
        prev_end = Some(t.end());
    }
    if truncated {
        out.push_str(" ...");
    }
    out
}

/// What a statement in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A simple Query: done at its ReadyForQuery.
    Query,
    /// An Execute: done at its CommandComplete (or error).
    Execute,
    /// A Sync or FunctionCall: its ReadyForQuery ends what came before.
    Sync,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: Slot,
    kind: Kind,
    start: Instant,
    overhead_ns: u64,
    failed: bool,
    actions: [Option<Action>; MAX_ACTIONS],
    /// Kept only when slow statements are logged.
    text: Option<Text>,
}

/// Kind and DDL action of a prepared statement (and its text, when slow
/// statements are logged).
#[derive(Debug, Clone, Copy)]
struct Prepared {
    kind: Kind,
    action: Option<Action>,
    text: Option<Text>,
}

impl Prepared {
    const OTHER: Prepared = Prepared {
        kind: Kind::Other,
        action: None,
        text: None,
    };
}

type Hashed<V> = HashMap<u64, V, BuildHasherDefault<DefaultHasher>>;

/// Prepared statements, or portals, by name. The unnamed one and the last
/// named one found are kept aside: a client that binds the same prepared
/// statement to the unnamed portal again and again hashes no name.
#[derive(Default)]
struct ByName {
    unnamed: Option<Prepared>,
    named: Hashed<Prepared>,
    /// The last named entry found by [`ByName::get`] (its name, its value).
    last: Option<(Vec<u8>, Prepared)>,
}

impl ByName {
    fn get(&mut self, name: &[u8]) -> Option<Prepared> {
        if name.is_empty() {
            return self.unnamed;
        }
        if let Some((last, p)) = &self.last {
            if last.as_slice() == name {
                return Some(*p);
            }
        }
        let p = self.named.get(&name_hash(name)).copied()?;
        let (last, value) = self.last.get_or_insert_with(|| (Vec::new(), p));
        last.clear();
        last.extend_from_slice(name);
        *value = p;
        Some(p)
    }

    fn insert(&mut self, name: &[u8], p: Prepared) {
        if name.is_empty() {
            self.unnamed = Some(p);
            return;
        }
        if let Some((last, value)) = &mut self.last {
            if last.as_slice() == name {
                *value = p;
            }
        }
        self.named.insert(name_hash(name), p);
    }

    fn remove(&mut self, name: &[u8]) {
        if name.is_empty() {
            self.unnamed = None;
            return;
        }
        if self
            .last
            .as_ref()
            .is_some_and(|(last, _)| last.as_slice() == name)
        {
            self.last = None;
        }
        if !self.named.is_empty() {
            self.named.remove(&name_hash(name));
        }
    }
}

/// The batch the relay is framing (see [`SessionHook::end_of_batch`]).
#[derive(Debug, Clone, Copy)]
struct Batch {
    /// When its first message reached the hook: the time of all of them.
    start: Instant,
    /// From the client (else from the server).
    client: bool,
}

fn name_hash(name: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// The kind of a statement, from its first words.
pub fn statement_kind(sql: &[u8]) -> Kind {
    let mut tokens = Lexer::new(sql);
    let Some(first) = tokens.next() else {
        return Kind::Other;
    };
    let word = |w: &str| first.is_word(w);
    if word("select") || word("with") || word("values") || word("table") {
        Kind::Select
    } else if word("insert") {
        Kind::Insert
    } else if word("update") {
        Kind::Update
    } else if word("delete") {
        Kind::Delete
    } else if word("copy") {
        Kind::Copy
    } else if [
        "begin",
        "start",
        "commit",
        "end",
        "rollback",
        "abort",
        "savepoint",
        "release",
    ]
    .iter()
    .any(|w| word(w))
    {
        Kind::Transaction
    } else if word("prepare") {
        match tokens.next() {
            Some(t) if t.is_word("transaction") => Kind::Transaction,
            _ => Kind::Other,
        }
    } else if is_command(sql) {
        Kind::Command
    } else if crate::sql::classify::is_ddl(sql) {
        Kind::Ddl
    } else {
        Kind::Other
    }
}

/// Whether `sql` is one of pgbranch's own commands.
fn is_command(sql: &[u8]) -> bool {
    crate::branch::commands::parse(sql).is_some()
        || crate::history::commands::parse(sql).is_some()
        || crate::timetravel::commands::parse(sql).is_some()
}

/// The DDL actions of a simple Query's statements (at most
/// [`MAX_ACTIONS`]).
/// Also counts DDL whose object could not be read.
fn ddl_actions(sql: &[u8], metrics: &StatementMetrics) -> [Option<Action>; MAX_ACTIONS] {
    let mut out = [None; MAX_ACTIONS];
    let mut n = 0;
    for r in Statements::new(sql) {
        if n == MAX_ACTIONS {
            break;
        }
        if let Some(d) = classify(&sql[r]) {
            if d.identity.is_empty() {
                metrics.unparsed();
            }
            out[n] = Some(d.action);
            n += 1;
        }
    }
    out
}

/// Times the statements of one session.
pub struct MetricsHook {
    inner: Box<dyn SessionHook>,
    metrics: Arc<StatementMetrics>,
    session: BranchSession,
    statements: ByName,
    portals: ByName,
    in_flight: VecDeque<Entry>,
    /// Hook time not yet attributed to a statement (Parse, Bind...).
    overhead_ns: u64,
    /// The batch being framed, once a message of it reached the hook.
    batch: Option<Batch>,
    /// Whether the client batch queued a Query or Execute.
    queued_in_batch: bool,
    /// Statements the server batch ended (with their durations), recorded
    /// at its end once its hook time is known.
    finished: Vec<(Entry, Protocol, u64)>,
    /// The branch the session is on (its label may be `other`).
    branch: String,
    /// Transaction status of the last ReadyForQuery.
    tx_status: u8,
    tx_start: Option<Instant>,
    /// `log.slow_statement_threshold`, as last reloaded.
    tunables: Arc<Tunables>,
}

impl MetricsHook {
    pub fn new(
        inner: Box<dyn SessionHook>,
        metrics: Arc<StatementMetrics>,
        info: &SessionInfo,
        tunables: Arc<Tunables>,
    ) -> Self {
        let session = BranchSession::new(metrics.branch(&info.branch));
        Self {
            inner,
            metrics,
            session,
            statements: ByName::default(),
            portals: ByName::default(),
            in_flight: VecDeque::with_capacity(16),
            overhead_ns: 0,
            batch: None,
            queued_in_batch: false,
            finished: Vec::with_capacity(4),
            branch: info.branch.clone(),
            tx_status: b'I',
            tx_start: None,
            tunables,
        }
    }

    /// Statements at least this long are logged; 0: none.
    fn slow_ns(&self) -> u64 {
        self.tunables
            .slow_ns
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn text_of(&self, sql: &[u8]) -> Option<Text> {
        (self.slow_ns() > 0).then(|| Text::of(sql))
    }

    /// The time of the batch being framed (read at its first message).
    fn batch_time(&mut self, client: bool) -> Instant {
        self.batch
            .get_or_insert_with(|| Batch {
                start: Instant::now(),
                client,
            })
            .start
    }

    fn push(&mut self, slot: Slot, prepared: Prepared, start: Instant) {
        if slot != Slot::Sync {
            self.queued_in_batch = true;
        }
        let mut actions = [None; MAX_ACTIONS];
        actions[0] = prepared.action;
        self.in_flight.push_back(Entry {
            slot,
            kind: prepared.kind,
            start,
            overhead_ns: std::mem::take(&mut self.overhead_ns),
            failed: false,
            actions,
            text: prepared.text,
        });
    }

    /// A statement ended at `now`: recorded at the end of the batch.
    fn finish(&mut self, e: Entry, protocol: Protocol, now: Instant) {
        let ns = now.duration_since(e.start).as_nanos() as u64;
        self.finished.push((e, protocol, ns));
    }

    fn record(&mut self, e: Entry, protocol: Protocol, ns: u64) {
        let stats = self.session.stats();
        stats.record(e.kind, protocol, ns);
        let slow_ns = self.slow_ns();
        if slow_ns > 0 && ns >= slow_ns {
            let text = e.text.unwrap_or(Text::EMPTY);
            tracing::warn!(
                duration_ms = ns as f64 / 1e6,
                kind = e.kind.label(),
                protocol = match protocol {
                    Protocol::Simple => "simple",
                    Protocol::Extended => "extended",
                },
                failed = e.failed,
                statement = %normalize(text.as_bytes(), text.truncated),
                "slow statement"
            );
        }
        self.metrics.overhead.record_ns(e.overhead_ns);
        if !e.failed {
            for a in e.actions.into_iter().flatten() {
                stats.ddl(a);
            }
        }
    }

    /// Follows the metrics counters to the branch the session is on now;
    /// statements that ended before count on the branch they ran on.
    fn follow_branch(&mut self) {
        let Some(b) = self.inner.branch().filter(|b| *b != self.branch) else {
            return;
        };
        let b = b.to_string();
        if let Some(batch) = self.batch.as_mut() {
            let now = Instant::now();
            let spent = now.duration_since(batch.start).as_nanos() as u64;
            batch.start = now;
            self.record_finished(spent);
        }
        self.session = BranchSession::new(self.metrics.branch(&b));
        self.branch = b;
    }

    /// Records the statements the server batch ended, the first with the
    /// hook time `spent` (or else the statement in flight at the front).
    fn record_finished(&mut self, spent: u64) {
        match self.finished.first_mut() {
            Some((e, _, _)) => e.overhead_ns += spent,
            None => {
                if let Some(e) = self.in_flight.front_mut() {
                    e.overhead_ns += spent;
                }
            }
        }
        let mut finished = std::mem::take(&mut self.finished);
        for (e, protocol, ns) in finished.drain(..) {
            self.record(e, protocol, ns);
        }
        self.finished = finished;
    }

    /// `rewrites`: what the inner hook did to the message.
    fn observe_client(&mut self, tag: u8, body: &[u8], start: Instant, rewrites: u8) {
        let time_travel = rewrites & rewrite::TIME_TRAVEL != 0;
        match tag {
            ft::QUERY => {
                let sql = take_cstr(body).map_or(body, |(s, _)| s);
                let kind = if time_travel {
                    Kind::TimeTravel
                } else {
                    statement_kind(sql)
                };
                let mut prepared = Prepared {
                    kind,
                    action: None,
                    text: self.text_of(sql),
                };
                let actions = if kind == Kind::Ddl {
                    ddl_actions(sql, &self.metrics)
                } else {
                    [None; MAX_ACTIONS]
                };
                prepared.action = actions[0];
                self.push(Slot::Query, prepared, start);
                if let Some(e) = self.in_flight.back_mut() {
                    e.actions = actions;
                }
            }
            ft::PARSE => {
                if let Some((name, rest)) = take_cstr(body) {
                    let sql = take_cstr(rest).map_or(rest, |(s, _)| s);
                    let kind = if time_travel {
                        Kind::TimeTravel
                    } else {
                        statement_kind(sql)
                    };
                    let action = if kind == Kind::Ddl {
                        classify(sql).map(|d| {
                            if d.identity.is_empty() {
                                self.metrics.unparsed();
                            }
                            d.action
                        })
                    } else {
                        None
                    };
                    let text = self.text_of(sql);
                    self.statements
                        .insert(name, Prepared { kind, action, text });
                }
            }
            ft::BIND => self.on_bind(body),
            ft::EXECUTE => {
                let prepared = take_cstr(body)
                    .and_then(|(portal, _)| self.portals.get(portal))
                    .unwrap_or(Prepared::OTHER);
                self.push(Slot::Execute, prepared, start);
            }
            ft::SYNC | ft::FUNCTION_CALL => self.push(Slot::Sync, Prepared::OTHER, start),
            ft::CLOSE => {
                if let Some((&kind, rest)) = body.split_first() {
                    if let Some((name, _)) = take_cstr(rest) {
                        match kind {
                            b'S' => self.statements.remove(name),
                            _ => self.portals.remove(name),
                        };
                    }
                }
            }
            _ => {}
        }
    }

    fn on_bind(&mut self, body: &[u8]) {
        if let Some((portal, rest)) = take_cstr(body) {
            if let Some((statement, _)) = take_cstr(rest) {
                match self.statements.get(statement) {
                    Some(p) => self.portals.insert(portal, p),
                    None => self.portals.remove(portal),
                }
            }
        }
    }

    fn observe_server(&mut self, tag: u8, body: &[u8], now: Instant) {
        match tag {
            bt::COMMAND_COMPLETE | bt::PORTAL_SUSPENDED | bt::EMPTY_QUERY_RESPONSE
                if self
                    .in_flight
                    .front()
                    .is_some_and(|e| e.slot == Slot::Execute) =>
            {
                let e = self.in_flight.pop_front().expect("checked");
                self.finish(e, Protocol::Extended, now);
            }
            bt::ERROR_RESPONSE => {
                if let Some(code) = crate::protocol::backend::error_field(body, b'C') {
                    self.metrics.error(code);
                }
                match self.in_flight.front().map(|e| e.slot) {
                    Some(Slot::Execute) => {
                        let mut e = self.in_flight.pop_front().expect("checked");
                        e.failed = true;
                        self.finish(e, Protocol::Extended, now);
                    }
                    Some(Slot::Query) => {
                        if let Some(e) = self.in_flight.front_mut() {
                            e.failed = true;
                        }
                    }
                    _ => {}
                }
            }
            bt::READY_FOR_QUERY => {
                // Ends the Query or Sync at the front; Executes before a
                // Sync that never ran (after an error) are dropped.
                while let Some(e) = self.in_flight.pop_front() {
                    match e.slot {
                        Slot::Query => {
                            self.finish(e, Protocol::Simple, now);
                            break;
                        }
                        Slot::Sync => break,
                        Slot::Execute => {}
                    }
                }
                let status = body.first().copied().unwrap_or(b'I');
                match (self.tx_status, status) {
                    (b'I', b'T' | b'E') => self.tx_start = Some(now),
                    (b'T' | b'E', b'I') => {
                        if let Some(s) = self.tx_start.take() {
                            self.metrics
                                .transactions
                                .record_ns(now.duration_since(s).as_nanos() as u64);
                        }
                    }
                    _ => {}
                }
                self.tx_status = status;
                self.follow_branch();
            }
            _ => {}
        }
    }
}

impl SessionHook for MetricsHook {
    fn wants_client(&self, tag: u8) -> bool {
        matches!(
            tag,
            ft::QUERY
                | ft::PARSE
                | ft::BIND
                | ft::EXECUTE
                | ft::SYNC
                | ft::FUNCTION_CALL
                | ft::CLOSE
        ) || self.inner.wants_client(tag)
    }

    fn client_peek_limit(&self, tag: u8) -> usize {
        if tag == ft::BIND {
            // The two names come first; parameter values may be large.
            self.inner.client_peek_limit(tag).min(4096)
        } else {
            self.inner.client_peek_limit(tag)
        }
    }

    fn on_client_prefix(&mut self, tag: u8, prefix: &[u8]) {
        self.batch_time(true);
        if tag == ft::BIND {
            self.on_bind(prefix);
        }
        if self.inner.wants_client(tag) {
            self.inner.on_client_prefix(tag, prefix);
        }
    }

    fn on_client_message(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        let start = self.batch_time(true);
        let verdict = if self.inner.wants_client(tag) {
            self.inner.on_client_message(tag, body)
        } else {
            ClientVerdict::forward()
        };
        if verdict.rewrites != 0 {
            self.metrics.rewritten(verdict.rewrites);
        }
        self.observe_client(tag, body, start, verdict.rewrites);
        verdict
    }

    fn wants_server(&self, tag: u8) -> bool {
        matches!(
            tag,
            bt::COMMAND_COMPLETE
                | bt::PORTAL_SUSPENDED
                | bt::EMPTY_QUERY_RESPONSE
                | bt::ERROR_RESPONSE
                | bt::READY_FOR_QUERY
        ) || self.inner.wants_server(tag)
    }

    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        let now = self.batch_time(false);
        let out = if self.inner.wants_server(tag) {
            self.inner.on_server_message(tag, body)
        } else {
            Vec::new()
        };
        self.observe_server(tag, body, now);
        out
    }

    fn end_of_batch(&mut self) {
        self.inner.end_of_batch();
        let Some(batch) = self.batch.take() else {
            return;
        };
        let spent = batch.start.elapsed().as_nanos() as u64;
        if batch.client {
            // The last Query or Execute of the batch (only Syncs follow
            // it), or else the next one queued.
            let last = std::mem::take(&mut self.queued_in_batch)
                .then(|| {
                    self.in_flight
                        .iter_mut()
                        .rev()
                        .find(|e| e.slot != Slot::Sync)
                })
                .flatten();
            match last {
                Some(e) => e.overhead_ns += spent,
                None => self.overhead_ns += spent,
            }
            return;
        }
        self.record_finished(spent);
    }

    fn on_alone_response(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        if self.inner.wants_server(tag) {
            self.inner.on_alone_response(tag, body)
        } else {
            Vec::new()
        }
    }

    fn on_injected_response(&mut self, tag: u8, body: &[u8]) -> Injected {
        self.inner.on_injected_response(tag, body)
    }

    fn branch(&self) -> Option<&str> {
        self.inner.branch()
    }
}

/// Wraps every session's hook in a [`MetricsHook`].
pub struct MetricsHooks {
    pub inner: Arc<dyn HookFactory>,
    pub metrics: Arc<StatementMetrics>,
    /// `log.slow_statement_threshold`, as last reloaded.
    pub tunables: Arc<Tunables>,
}

impl HookFactory for MetricsHooks {
    fn create(&self, info: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(MetricsHook::new(
            self.inner.create(info),
            self.metrics.clone(),
            info,
            self.tunables.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_come_from_the_first_words() {
        for (sql, kind) in [
            ("SELECT 1", Kind::Select),
            (
                "  /* c */ with x as (select 1) select * from x",
                Kind::Select,
            ),
            ("insert into t values (1)", Kind::Insert),
            ("UPDATE t SET x = 1", Kind::Update),
            ("delete from t", Kind::Delete),
            ("BEGIN", Kind::Transaction),
            ("commit", Kind::Transaction),
            ("PREPARE TRANSACTION 'x'", Kind::Transaction),
            ("PREPARE q AS SELECT 1", Kind::Other),
            ("COPY t FROM STDIN", Kind::Copy),
            ("CREATE TABLE t (x int)", Kind::Ddl),
            ("ALTER TABLE t ADD y int", Kind::Ddl),
            ("CREATE BRANCH b", Kind::Command),
            ("SHOW SCHEMA HISTORY", Kind::Command),
            ("SET search_path = x", Kind::Other),
            ("", Kind::Other),
        ] {
            assert_eq!(statement_kind(sql.as_bytes()), kind, "{sql}");
        }
    }

    #[test]
    fn logged_statements_hold_no_literals() {
        assert_eq!(
            normalize(
                b"SELECT pg_sleep(0.05), 'secret' -- note\n FROM t WHERE x = $1 AND y = $$z$$",
                false
            ),
            "SELECT pg_sleep(?), ? FROM t WHERE x = $1 AND y = ?"
        );
        assert_eq!(
            normalize(b"ALTER ROLE a PASSWORD 'hunter2", true),
            "ALTER ROLE a PASSWORD ? ..."
        );
    }

    #[test]
    fn names_kept_aside_follow_parse_and_close() {
        let p = |kind| Prepared {
            kind,
            action: None,
            text: None,
        };
        let kind = |m: &mut ByName, name: &[u8]| m.get(name).map(|x| x.kind);
        let mut m = ByName::default();
        assert_eq!(kind(&mut m, b""), None);
        assert_eq!(kind(&mut m, b"s"), None);
        m.insert(b"", p(Kind::Select));
        m.insert(b"s", p(Kind::Insert));
        m.insert(b"t", p(Kind::Update));
        assert_eq!(kind(&mut m, b""), Some(Kind::Select));
        // Found twice: the second time from the entry kept aside.
        assert_eq!(kind(&mut m, b"s"), Some(Kind::Insert));
        assert_eq!(kind(&mut m, b"s"), Some(Kind::Insert));
        // Prepared again under the same name: the kept entry follows.
        m.insert(b"s", p(Kind::Delete));
        assert_eq!(kind(&mut m, b"s"), Some(Kind::Delete));
        assert_eq!(kind(&mut m, b"t"), Some(Kind::Update));
        assert_eq!(kind(&mut m, b"s"), Some(Kind::Delete));
        // Closed: gone, also from the side.
        m.remove(b"s");
        assert_eq!(kind(&mut m, b"s"), None);
        assert_eq!(kind(&mut m, b"t"), Some(Kind::Update));
        m.remove(b"");
        assert_eq!(kind(&mut m, b""), None);
        assert_eq!(kind(&mut m, b"t"), Some(Kind::Update));
    }

    #[test]
    fn ddl_actions_are_collected_per_statement() {
        let a = ddl_actions(
            b"CREATE TABLE a (x int); SELECT 1; DROP TABLE b",
            &StatementMetrics::new(1),
        );
        assert_eq!(a[0], Some(Action::Create));
        assert_eq!(a[1], Some(Action::Drop));
        assert_eq!(a[2], None);
    }
}
