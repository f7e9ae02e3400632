//! The session hook that records DDL in-band.
//!
//! Simple protocol: a Query string holding DDL is rewritten so that each
//! DDL statement is followed by `SELECT pgbranch.record_ddl(...)` and the
//! first one is preceded by the metadata check (`DO ...`, first time in a
//! session only) and `SELECT pgbranch.ddl_begin(...)`. The Query still runs
//! as one implicit transaction (or inside the client's block), so the row
//! commits or rolls back with the change; the injected statements'
//! responses are swallowed by position. Statements that are not DDL are
//! never re-emitted: their bytes pass through unchanged.
//!
//! Extended protocol: prepared statements are classified at Parse; an
//! Execute of a DDL portal gets the same statements injected as
//! Parse/Bind/Execute/Close before and after it, before the client's Sync.
//!
//! Statements that cannot run in a transaction block (`CREATE INDEX
//! CONCURRENTLY` ...) are sent alone, untouched; once the server reports
//! their CommandComplete and ReadyForQuery, the record is sent as a Query
//! of its own.
//!
//! Errors of injected statements reach the client (a DDL that cannot be
//! recorded fails, and says why); everything else they produce is
//! swallowed.

use std::collections::HashMap;
use std::sync::Arc;

use super::commands;
use super::migrate::migrate_sql;
use super::record::{self, Origin};
use crate::protocol::{backend_tag as bt, frontend_tag as ft, query_message, take_cstr};
use crate::proxy::hooks::{ClientVerdict, HookFactory, SessionHook, SessionInfo, StatementSet};
use crate::sql::classify::{classify, may_contain_ddl, Ddl};
use crate::sql::lexer::Statements;

/// A DDL statement seen from the client.
#[derive(Debug)]
struct Captured {
    text: Vec<u8>,
    ddl: Ddl,
}

/// A statement that cannot run in a transaction block, waiting for its
/// result.
#[derive(Debug)]
enum NonTx {
    Idle,
    Running(Captured),
    Succeeded(Captured),
}

/// Records the DDL of one session.
pub struct HistoryHook {
    origin: Origin,
    /// Named prepared statements that are DDL.
    statements: HashMap<Vec<u8>, Arc<Captured>>,
    /// Portals bound to a DDL statement.
    portals: HashMap<Vec<u8>, Arc<Captured>>,
    non_tx: NonTx,
    /// `standard_conforming_strings`, as the server last reported it
    /// (backslashes in '...' strings matter for splitting statements).
    standard_strings: bool,
}

impl HistoryHook {
    pub fn new(info: &SessionInfo) -> Self {
        Self {
            origin: Origin {
                branch: info.branch.clone(),
                client_addr: info.peer.clone(),
            },
            statements: HashMap::new(),
            portals: HashMap::new(),
            non_tx: NonTx::Idle,
            standard_strings: true,
        }
    }

    fn split(&self, sql: &[u8]) -> Vec<std::ops::Range<usize>> {
        Statements::with_standard_conforming_strings(sql, self.standard_strings).collect()
    }

    /// The metadata check that precedes every recorded change. It is sent
    /// every time, not once per session: a session cannot know whether the
    /// transaction that created the schema committed (a ROLLBACK TO
    /// SAVEPOINT may have undone it). When the schema is current it costs
    /// about 1 ms, against tens of ms for recording the change.
    fn ensure_sql(&self) -> &'static str {
        migrate_sql()
    }

    fn on_query(&mut self, body: &[u8]) -> ClientVerdict {
        let sql = take_cstr(body).map_or(body, |(s, _)| s);
        if let Some(rewritten) = commands::rewrite(sql, &self.origin.branch) {
            return ClientVerdict {
                replace: Some(query_message(&rewritten)),
                ..ClientVerdict::default()
            };
        }
        if !may_contain_ddl(sql) {
            return ClientVerdict::forward();
        }
        let ranges = self.split(sql);
        let ddls: Vec<Option<Ddl>> = ranges
            .iter()
            .map(|r| classify(&sql[r.clone()]).filter(|d| !d.temporary))
            .collect();
        if ddls.iter().all(Option::is_none) {
            return ClientVerdict::forward();
        }
        if ddls.iter().flatten().any(|d| d.non_transactional) {
            // Alone it runs outside a transaction and is recorded after it
            // succeeds; with other statements the server refuses it.
            if ranges.len() == 1 {
                let ddl = ddls.into_iter().flatten().next().expect("one DDL");
                self.non_tx = NonTx::Running(Captured {
                    text: sql[ranges[0].clone()].to_vec(),
                    ddl,
                });
            }
            return ClientVerdict::forward();
        }
        let mut out = Vec::with_capacity(sql.len() * 2 + 256);
        let mut swallow = StatementSet::default();
        let mut index = 0usize;
        let mut cursor = 0usize;
        let mut first = true;
        for (range, ddl) in ranges.iter().zip(&ddls) {
            let Some(ddl) = ddl else {
                index += 1;
                continue;
            };
            out.extend_from_slice(&sql[cursor..range.start]);
            cursor = range.start;
            if first {
                first = false;
                out.extend_from_slice(self.ensure_sql().as_bytes());
                out.push(b';');
                swallow.insert(index);
                index += 1;
                out.extend_from_slice(&record::begin_sql(&self.origin));
                out.push(b';');
                swallow.insert(index);
                index += 1;
            }
            out.extend_from_slice(&sql[cursor..range.end]);
            cursor = range.end;
            index += 1;
            out.push(b';');
            out.extend_from_slice(&record::record_sql(&self.origin, &sql[range.clone()], ddl));
            swallow.insert(index);
            index += 1;
        }
        out.extend_from_slice(&sql[cursor..]);
        let mut message = Vec::with_capacity(out.len() + 6);
        out.push(0);
        crate::protocol::put_message(&mut message, ft::QUERY, &out);
        ClientVerdict {
            replace: Some(message),
            swallow_statements: swallow,
            ..ClientVerdict::default()
        }
    }

    fn on_parse(&mut self, body: &[u8]) -> ClientVerdict {
        let Some((name, rest)) = take_cstr(body) else {
            return ClientVerdict::forward();
        };
        let Some((sql, params)) = take_cstr(rest) else {
            return ClientVerdict::forward();
        };
        self.statements.remove(name);
        if let Some(rewritten) = commands::rewrite(sql, &self.origin.branch) {
            let mut parse = name.to_vec();
            parse.push(0);
            parse.extend_from_slice(rewritten.as_bytes());
            parse.push(0);
            parse.extend_from_slice(params);
            let mut message = Vec::new();
            crate::protocol::put_message(&mut message, ft::PARSE, &parse);
            return ClientVerdict {
                replace: Some(message),
                ..ClientVerdict::default()
            };
        }
        if may_contain_ddl(sql) {
            // A prepared statement holds one statement at most.
            let ranges = self.split(sql);
            if let [range] = ranges.as_slice() {
                if let Some(ddl) = classify(&sql[range.clone()]).filter(|d| !d.temporary) {
                    let text = sql[range.clone()].to_vec();
                    self.statements
                        .insert(name.to_vec(), Arc::new(Captured { text, ddl }));
                }
            }
        }
        ClientVerdict::forward()
    }

    fn on_bind(&mut self, body: &[u8]) {
        match take_cstr(body).and_then(|(portal, rest)| Some((portal, take_cstr(rest)?.0))) {
            Some((portal, statement)) => match self.statements.get(statement) {
                Some(c) => {
                    self.portals.insert(portal.to_vec(), c.clone());
                }
                None => {
                    self.portals.remove(portal);
                }
            },
            // Names longer than the peeked prefix: forget every portal
            // rather than keep one that may have been rebound.
            None => self.portals.clear(),
        }
    }

    fn on_execute(&mut self, body: &[u8]) -> ClientVerdict {
        let Some((portal, _)) = take_cstr(body) else {
            return ClientVerdict::forward();
        };
        let Some(captured) = self.portals.remove(portal) else {
            return ClientVerdict::forward();
        };
        if captured.ddl.non_transactional {
            self.non_tx = NonTx::Running(Captured {
                text: captured.text.clone(),
                ddl: captured.ddl.clone(),
            });
            return ClientVerdict::forward();
        }
        let mut before = Vec::new();
        before.extend_from_slice(&record::extended_frames(self.ensure_sql().as_bytes(), &[]));
        before.extend_from_slice(&record::begin_frames(&self.origin));
        ClientVerdict {
            before,
            after: record::record_frames(&self.origin, &captured.text, &captured.ddl),
            ..ClientVerdict::default()
        }
    }
}

impl SessionHook for HistoryHook {
    fn wants_client(&self, tag: u8) -> bool {
        matches!(
            tag,
            ft::QUERY | ft::PARSE | ft::BIND | ft::EXECUTE | ft::CLOSE
        )
    }

    fn client_peek_limit(&self, tag: u8) -> usize {
        // A Bind carries parameter values (possibly large) after the two
        // names this hook reads; DDL takes no parameters.
        if tag == ft::BIND {
            4096
        } else {
            usize::MAX
        }
    }

    fn on_client_prefix(&mut self, tag: u8, prefix: &[u8]) {
        if tag == ft::BIND {
            self.on_bind(prefix);
        }
    }

    fn on_client_message(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        match tag {
            ft::QUERY => self.on_query(body),
            ft::PARSE => self.on_parse(body),
            ft::BIND => {
                self.on_bind(body);
                ClientVerdict::forward()
            }
            ft::EXECUTE => self.on_execute(body),
            ft::CLOSE => {
                if let Some((&kind, rest)) = body.split_first() {
                    if let Some((name, _)) = take_cstr(rest) {
                        match kind {
                            b'S' => self.statements.remove(name),
                            _ => self.portals.remove(name),
                        };
                    }
                }
                ClientVerdict::forward()
            }
            _ => ClientVerdict::forward(),
        }
    }

    fn wants_server(&self, tag: u8) -> bool {
        matches!(
            tag,
            bt::COMMAND_COMPLETE | bt::ERROR_RESPONSE | bt::READY_FOR_QUERY | bt::PARAMETER_STATUS
        )
    }

    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        if tag == bt::PARAMETER_STATUS {
            if let Some((b"standard_conforming_strings", rest)) = take_cstr(body) {
                self.standard_strings = take_cstr(rest).is_none_or(|(v, _)| v != b"off");
            }
            return Vec::new();
        }
        match (std::mem::replace(&mut self.non_tx, NonTx::Idle), tag) {
            (NonTx::Idle, _) => Vec::new(),
            (NonTx::Running(c), bt::COMMAND_COMPLETE) => {
                let reported = take_cstr(body).map_or(body, |(s, _)| s);
                if reported == c.ddl.tag.as_bytes() {
                    self.non_tx = NonTx::Succeeded(c);
                } else {
                    self.non_tx = NonTx::Running(c);
                }
                Vec::new()
            }
            (NonTx::Running(_), bt::ERROR_RESPONSE) => Vec::new(),
            (NonTx::Succeeded(c), bt::READY_FOR_QUERY) => {
                let mut sql = Vec::new();
                sql.extend_from_slice(self.ensure_sql().as_bytes());
                sql.push(b';');
                sql.extend_from_slice(&record::record_sql(&self.origin, &c.text, &c.ddl));
                sql.push(0);
                let mut message = Vec::new();
                crate::protocol::put_message(&mut message, ft::QUERY, &sql);
                message
            }
            (state, _) => {
                self.non_tx = state;
                Vec::new()
            }
        }
    }

    fn on_injected_response(&mut self, tag: u8, _body: &[u8]) -> bool {
        tag == bt::ERROR_RESPONSE
    }
}

/// Creates a [`HistoryHook`] per session.
pub struct HistoryHooks;

impl HookFactory for HistoryHooks {
    fn create(&self, info: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(HistoryHook::new(info))
    }
}
