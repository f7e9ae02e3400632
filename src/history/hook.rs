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
//! CONCURRENTLY` ...) are sent untouched and alone (`ClientVerdict::alone`):
//! the relay holds back whatever the client sent after them until their
//! responses are in, so that only their own responses decide, and the
//! record runs right after them, before any later statement (which could
//! open a transaction block the record must not join). A simple Query is
//! recorded by a Query of its own after its ReadyForQuery; an Execute,
//! followed by a Flush so that its result arrives before the client's
//! Sync, by Parse/Bind/Execute and a Sync of the proxy's own after its
//! CommandComplete (the statement has committed by then).
//!
//! Errors of injected statements reach the client (a DDL that cannot be
//! recorded fails, and says why), except those of a record sent after the
//! statement already succeeded: the client was told so, and an
//! ErrorResponse it did not ask for would break its protocol state; those
//! reach it as a WARNING notice. Everything else injected statements
//! produce is swallowed.

use std::collections::HashMap;
use std::sync::Arc;

use super::commands;
use super::migrate::migrate_sql;
use super::record::{self, Origin};
use crate::branch::commands as branch_commands;
use crate::protocol::{
    backend_tag as bt, frontend_tag as ft, query_message, take_cstr, HEADER_LEN,
};
use crate::proxy::hooks::{
    rewrite, ClientVerdict, HookFactory, Injected, PositionMap, SessionHook, SessionInfo,
    StatementSet,
};
use crate::proxy::reload::Tunables;
use crate::sql::classify::{classify, may_contain_ddl, Ddl};
use crate::sql::lexer::Statements;
use crate::sql::rewrite::{rewrite_schemas, SchemaMap};
use tracing::warn;

/// A DDL statement seen from the client.
#[derive(Debug)]
struct Captured {
    text: Vec<u8>,
    ddl: Ddl,
    /// SQL that versions the table the statement creates (`WITH SYSTEM
    /// VERSIONING`, or `time_travel.versioned_tables`), run after the
    /// record.
    versioning: Option<String>,
}

/// A statement that cannot run in a transaction block, sent alone and
/// waiting for its result.
#[derive(Debug)]
struct NonTx {
    captured: Captured,
    /// Sent as an Execute (else as a simple Query).
    extended: bool,
    /// Its CommandComplete arrived.
    succeeded: bool,
}

/// Records the DDL of one session.
pub struct HistoryHook {
    origin: Origin,
    /// Named prepared statements that are DDL.
    statements: HashMap<Vec<u8>, Arc<Captured>>,
    /// Portals bound to a DDL statement.
    portals: HashMap<Vec<u8>, Arc<Captured>>,
    non_tx: Option<NonTx>,
    /// Records sent after a statement that ran alone whose ReadyForQuery
    /// has not arrived yet: their errors are reported as warnings.
    late_records: usize,
    /// `standard_conforming_strings`, as the server last reported it
    /// (backslashes in '...' strings matter for splitting statements).
    standard_strings: bool,
    /// How the server counts the characters of a Query: `client_encoding`
    /// as the server last reported it (`None`: not since the session
    /// started).
    charset: Option<Charset>,
    /// On a branch other than main: its schemas, for rewriting names.
    schemas: Option<SchemaMap>,
    /// `branches.protected`, as last reloaded.
    tunables: Arc<Tunables>,
    /// An as-of session: its time as an SQL literal, and as text.
    as_of: Option<(String, String)>,
    /// The as-of time selected at connect time (RESET returns to it).
    connect_as_of: Option<(String, String)>,
    /// A `SET` / `RESET pgbranch.as_of` whose answer is coming.
    as_of_change: Option<AsOfChange>,
    /// The branch selected at connect time (`RESET pgbranch.branch`).
    connect_branch: String,
    /// A `SET pgbranch.branch` whose answer is coming.
    switch: Option<PendingSwitch>,
    /// After a switch: the session's search_path, restored after every
    /// RESET / DISCARD (which would return to the startup packet's).
    reset_path: Option<String>,
    /// Prepared statements and portals that RESET or DISCARD.
    reset_statements: HashMap<Vec<u8>, ResetKind>,
    reset_portals: HashMap<Vec<u8>, ResetKind>,
    /// A DISCARD ALL sent alone: restore the path after its ReadyForQuery.
    restore_after_alone: bool,
    /// Prepared statements and portals that are `SET pgbranch.branch`
    /// (`None`: `RESET pgbranch.branch`).
    switch_statements: HashMap<Vec<u8>, Option<String>>,
    switch_portals: HashMap<Vec<u8>, Option<String>>,
    /// Prepared statements and portals that are `SET` / `RESET
    /// pgbranch.as_of`: the session moves when one is executed.
    as_of_statements: HashMap<Vec<u8>, crate::timetravel::commands::AsOfSetting>,
    as_of_portals: HashMap<Vec<u8>, crate::timetravel::commands::AsOfSetting>,
    /// Queries, Syncs and FunctionCalls sent whose ReadyForQuery has not
    /// arrived yet.
    outstanding: usize,
    /// An Execute was sent since the last Sync.
    executed_since_sync: bool,
    /// Transaction status of the last ReadyForQuery.
    last_status: u8,
}

/// An as-of time as (SQL literal, text).
fn as_of_pair(at: &str) -> (String, String) {
    let literal = String::from_utf8_lossy(&record::dollar_quote(at.as_bytes())).into_owned();
    (literal, at.to_string())
}

/// A `SET` (time to come, from the proxy's own SELECT) or `RESET
/// pgbranch.as_of` on its way.
#[derive(Debug)]
struct AsOfChange {
    reset: bool,
    at: Option<String>,
    failed: bool,
    /// ReadyForQuery messages of earlier (pipelined) messages to come
    /// before this one's.
    skip: usize,
}

/// A `SET pgbranch.branch` on its way.
#[derive(Debug)]
struct PendingSwitch {
    target: String,
    schemas: Vec<(String, String)>,
    path: Option<String>,
    failed: bool,
}

impl HistoryHook {
    pub fn new(info: &SessionInfo, tunables: Arc<Tunables>) -> Self {
        Self {
            schemas: (!info.schemas.is_empty()).then(|| SchemaMap::new(info.schemas.clone())),
            tunables,
            as_of: info.as_of.as_deref().map(as_of_pair),
            connect_as_of: info.as_of.as_deref().map(as_of_pair),
            as_of_change: None,
            connect_branch: info.branch.clone(),
            switch: None,
            reset_path: info.reset_path.clone(),
            reset_statements: Default::default(),
            reset_portals: Default::default(),
            restore_after_alone: false,
            switch_statements: HashMap::new(),
            switch_portals: HashMap::new(),
            as_of_statements: HashMap::new(),
            as_of_portals: HashMap::new(),
            outstanding: 0,
            executed_since_sync: false,
            last_status: b'I',
            origin: Origin {
                branch: info.branch.clone(),
                client_addr: info.peer.clone(),
            },
            statements: HashMap::new(),
            portals: HashMap::new(),
            non_tx: None,
            late_records: 0,
            standard_strings: true,
            charset: None,
        }
    }

    fn split(&self, sql: &[u8]) -> Vec<std::ops::Range<usize>> {
        Statements::with_standard_conforming_strings(sql, self.standard_strings).collect()
    }

    /// The metadata check that precedes every recorded change. It is sent
    /// every time, not once per session: a session cannot know whether the
    /// transaction that created the schema committed (a ROLLBACK TO
    /// SAVEPOINT may have undone it). When the schema is current it costs
    /// about 3 ms (a ~200 KB block parsed; docs/benchmarks.md, "The
    /// metadata check's size"), against ~15 ms for recording the change.
    fn ensure_sql(&self) -> &'static str {
        migrate_sql()
    }

    /// A branch command's replacement text, and whether the metadata
    /// check must run first.
    fn branch_command(
        &self,
        command: Option<Result<branch_commands::Command, branch_commands::Invalid>>,
        sql: &[u8],
    ) -> Option<(String, bool)> {
        // System versioning commands: the metadata check comes first
        // (their functions arrive with migration 3).
        if command.is_none() {
            let command = crate::timetravel::commands::parse(sql)?;
            if self.origin.branch != crate::proxy::selection::DEFAULT_BRANCH {
                let e = branch_commands::Invalid {
                    code: "0A000",
                    message: format!(
                        "system versioning and RESTORE TABLE work on branch main only (this session is on \"{}\")",
                        self.origin.branch
                    ),
                    hint: Some("Connect to main for them; branches keep no row history.".into()),
                };
                return Some((branch_commands::raise_sql(&e), false));
            }
            return Some((crate::timetravel::commands::to_sql(&command), true));
        }
        Some(match command? {
            Ok(c) => branch_commands::to_sql(
                &c,
                &branch_commands::Context {
                    branch: &self.origin.branch,
                    client_addr: Some(&self.origin.client_addr),
                    statement: &String::from_utf8_lossy(sql),
                },
            ),
            Err(e) => (branch_commands::raise_sql(&e), false),
        })
    }

    /// The session is on `sw.target` now.
    fn apply_switch(&mut self, sw: PendingSwitch) {
        self.schemas = (sw.target != crate::proxy::selection::DEFAULT_BRANCH)
            .then(|| SchemaMap::new(sw.schemas));
        self.reset_path = if sw.target == self.connect_branch {
            None
        } else {
            sw.path
        };
        self.origin.branch = sw.target;
        // Statements prepared on the other branch keep its names.
        self.statements.clear();
        self.portals.clear();
    }

    /// DDL sent directly is refused on the session's branch now.
    fn protected(&self) -> bool {
        self.tunables.is_protected(&self.origin.branch)
    }

    /// The statement that refuses DDL on a protected branch.
    fn protected_error(&self) -> String {
        branch_commands::raise_sql(&branch_commands::Invalid {
            code: "42501",
            message: format!(
                "branch \"{}\" is protected: schema changes reach it only by MERGE BRANCH",
                self.origin.branch
            ),
            hint: Some(format!(
                "CREATE BRANCH my-change FROM {0}, change the schema there, then MERGE BRANCH my-change INTO {0}.",
                self.origin.branch
            )),
        })
    }

    /// `SET pgbranch.branch` / `RESET pgbranch.branch` as a simple Query:
    /// `switch_branch` (swallowed) moves the session, then the client's own
    /// statement runs (and answers SET / RESET).
    fn on_switch(&mut self, sql: &[u8], to: Option<String>) -> ClientVerdict {
        let refuse = |e: branch_commands::Invalid| ClientVerdict {
            replace: Some(query_message(&branch_commands::raise_sql(&e))),
            positions: Some(Arc::new(all_ours())),
            ..ClientVerdict::default()
        };
        if Statements::with_standard_conforming_strings(sql, self.standard_strings).count() != 1 {
            return refuse(branch_commands::Invalid {
                code: "0A000",
                message: "SET pgbranch.branch must be sent alone, not with other statements".into(),
                hint: None,
            });
        }
        let target = to.unwrap_or_else(|| self.connect_branch.clone());
        let (select, _) = branch_commands::to_sql(
            &branch_commands::Command::Switch(Some(target.clone())),
            &branch_commands::Context {
                branch: &self.origin.branch,
                client_addr: Some(&self.origin.client_addr),
                statement: "",
            },
        );
        let text = format!(
            "{};\n{select};\n{}",
            self.ensure_sql(),
            String::from_utf8_lossy(sql)
        );
        self.switch = Some(PendingSwitch {
            target,
            schemas: Vec::new(),
            path: None,
            failed: false,
        });
        ClientVerdict {
            replace: Some(query_message(&text)),
            swallow_statements: [0, 1].into_iter().collect(),
            positions: Some(Arc::new(all_ours())),
            ..ClientVerdict::default()
        }
    }

    /// `SET pgbranch.branch` in the extended protocol, at its Execute: the
    /// switch runs before it as the proxy's own statement. Only in an idle
    /// session: nothing outstanding, the last ReadyForQuery idle, and no
    /// other statement before it in this pipeline (a driver's BEGIN).
    fn on_switch_execute(&mut self, to: Option<String>, first_in_pipeline: bool) -> ClientVerdict {
        if !(first_in_pipeline && self.outstanding == 0 && self.last_status == b'I') {
            let raise = branch_commands::raise_sql(&branch_commands::Invalid {
                code: "25001",
                message: "SET pgbranch.branch cannot run inside a transaction block".into(),
                hint: Some(
                    "Send it alone, outside a transaction block: a branch is chosen for the session."
                        .into(),
                ),
            });
            return ClientVerdict {
                before: record::extended_frames(raise.as_bytes(), &[]),
                ..ClientVerdict::default()
            };
        }
        let target = to.unwrap_or_else(|| self.connect_branch.clone());
        let mut before = record::extended_frames(self.ensure_sql().as_bytes(), &[]);
        before.extend_from_slice(&record::extended_frames(
            branch_commands::switch_sql(&target, &self.origin.branch, false).as_bytes(),
            &[],
        ));
        self.switch = Some(PendingSwitch {
            target,
            schemas: Vec::new(),
            path: None,
            failed: false,
        });
        ClientVerdict {
            before,
            ..ClientVerdict::default()
        }
    }

    /// The statement that puts back a switched session's search_path.
    fn restore_path_sql(&self) -> Option<String> {
        self.reset_path.as_deref().map(crate::branch::set_path_sql)
    }

    /// A SET (`reset` false: the time comes from the proxy's SELECT) or
    /// RESET of pgbranch.as_of on its way, also RESET ALL / DISCARD ALL:
    /// the session moves at its ReadyForQuery, unless the server refused it.
    fn start_as_of_change(&mut self, reset: bool) {
        self.as_of_change = Some(AsOfChange {
            reset,
            at: None,
            failed: false,
            skip: self.outstanding,
        });
    }

    fn on_query(&mut self, body: &[u8]) -> ClientVerdict {
        let sql = take_cstr(body).map_or(body, |(s, _)| s);
        if self.as_of != self.connect_as_of && resets_all(sql) {
            self.start_as_of_change(true);
        }
        let verdict = self.on_query_inner(sql);
        let Some(restore) = self.restore_path_sql() else {
            return verdict;
        };
        // (A switch sets the path itself.)
        if verdict.alone || self.switch.is_some() || !resets_settings(sql) {
            return verdict;
        }
        if verdict.replace.is_none() && is_discard_all(sql) {
            // Cannot share its Query with another statement: it runs
            // alone and the path is restored right after it.
            self.restore_after_alone = true;
            return ClientVerdict {
                alone: true,
                rewrites: verdict.rewrites | rewrite::PATH_RESTORE,
                ..verdict
            };
        }
        // RESET / DISCARD return search_path to the startup packet's,
        // which is another branch's: the switched one follows them.
        let Some(mut text) = sent_query_text(&verdict, sql.to_vec()) else {
            return verdict;
        };
        let index = self.split(&text).len();
        text.extend_from_slice(b"\n;");
        text.extend_from_slice(restore.as_bytes());
        text.push(0);
        let mut message = Vec::with_capacity(text.len() + HEADER_LEN);
        crate::protocol::put_message(&mut message, ft::QUERY, &text);
        let mut verdict = verdict;
        verdict.swallow_statements.insert(index);
        verdict.replace = Some(message);
        verdict.rewrites |= rewrite::PATH_RESTORE;
        verdict
    }

    fn on_query_inner(&mut self, sql: &[u8]) -> ClientVerdict {
        // One scan for ordinary traffic: every as_of command names it.
        let as_of_command = crate::sql::contains_ignore_ascii_case(sql, b"pgbranch.as_of");
        if let Some(setting) = as_of_command
            .then(|| crate::timetravel::commands::parse_as_of_setting(sql))
            .flatten()
        {
            return self.on_as_of_setting(sql, setting);
        }
        if as_of_command
            && self
                .split(sql)
                .into_iter()
                .any(|r| crate::timetravel::commands::parse_as_of_setting(&sql[r]).is_some())
        {
            let e = branch_commands::Invalid {
                code: "0A000",
                message: "SET / RESET / SHOW pgbranch.as_of must be sent as a query of its own"
                    .into(),
                hint: None,
            };
            return ours_verdict(
                query_message(&branch_commands::raise_sql(&e)),
                rewrite::REFUSED,
            );
        }
        if let Some(e) = self.as_of_refusal(sql) {
            return ours_verdict(
                query_message(&branch_commands::raise_sql(&e)),
                rewrite::REFUSED,
            );
        }
        let command = branch_commands::parse(sql);
        if let Some(Ok(branch_commands::Command::Switch(to))) = command {
            let mut verdict = self.on_switch(sql, to);
            verdict.rewrites |= rewrite::COMMAND;
            return verdict;
        }
        if let Some((text, check)) = self.branch_command(command, sql) {
            let text = if check {
                format!("{};\n{text}", self.ensure_sql())
            } else {
                text
            };
            return ClientVerdict {
                replace: Some(query_message(&text)),
                swallow_statements: if check {
                    [0].into_iter().collect()
                } else {
                    StatementSet::default()
                },
                positions: Some(Arc::new(all_ours())),
                rewrites: rewrite::COMMAND,
                ..ClientVerdict::default()
            };
        }
        if let Some(rewritten) = commands::rewrite(sql, &self.origin.branch) {
            // The text is all the proxy's: positions point at its start.
            return ours_verdict(query_message(&rewritten), rewrite::COMMAND);
        }
        if let Some(verdict) = self.versioning_on_create(sql) {
            return verdict;
        }
        if let Some(verdict) = self.versioning_in_batch(sql) {
            return verdict;
        }
        // AS OF clauses become calls of the history functions.
        let travelled = match self.time_travel(sql) {
            Ok(t) => t,
            Err(e) => {
                return ours_verdict(
                    query_message(&branch_commands::raise_sql(&e)),
                    rewrite::TIME_TRAVEL,
                )
            }
        };
        let sql: &[u8] = travelled.as_deref().unwrap_or(sql);
        // A branch session names its schemas' copies.
        let mapped = self
            .schemas
            .as_ref()
            .and_then(|m| rewrite_schemas(sql, m, self.standard_strings))
            .map(|m| m.sql);
        let mut kinds = 0;
        if travelled.is_some() {
            kinds |= rewrite::TIME_TRAVEL;
        }
        if mapped.is_some() {
            kinds |= rewrite::BRANCH_NAMES;
        }
        let Some(mut text) = mapped.or_else(|| travelled.clone()) else {
            return self.on_query_text(sql);
        };
        let mut verdict = self.on_query_text(&text);
        if verdict.replace.is_none() {
            let mut message = Vec::with_capacity(text.len() + 6);
            text.push(0);
            crate::protocol::put_message(&mut message, ft::QUERY, &text);
            verdict.replace = Some(message);
        }
        verdict.rewrites |= kinds;
        verdict
    }

    /// `SET pgbranch.as_of = time` (the time checked and made absolute by
    /// the proxy's SELECT before the client's SET; the session becomes
    /// read-only), `RESET pgbranch.as_of` (back to the time selected at
    /// connect, or none), `SHOW pgbranch.as_of`. Outside transaction
    /// blocks only: a rollback would undo them behind the proxy's back.
    fn on_as_of_setting(
        &mut self,
        sql: &[u8],
        setting: crate::timetravel::commands::AsOfSetting,
    ) -> ClientVerdict {
        use crate::timetravel::commands::AsOfSetting;
        let ours = |text: String, swallow: &[usize], kinds: u8| ClientVerdict {
            swallow_statements: swallow.iter().copied().collect(),
            ..ours_verdict(query_message(&text), kinds)
        };
        let client = String::from_utf8_lossy(sql).into_owned();
        let client = client.trim_end().trim_end_matches(';');
        match setting {
            AsOfSetting::Show => {
                let shown = self.as_of.as_ref().map_or("off", |(_, t)| t.as_str());
                let literal =
                    String::from_utf8_lossy(&record::dollar_quote(shown.as_bytes())).into_owned();
                ours(
                    format!("SELECT {literal} AS \"pgbranch.as_of\""),
                    &[],
                    rewrite::COMMAND,
                )
            }
            // (A pipelined Close and Sync may still be unanswered: only
            // the last transaction status counts.)
            _ if self.last_status != b'I' => {
                let e = branch_commands::Invalid {
                    code: "25001",
                    message: "SET pgbranch.as_of cannot run inside a transaction block".into(),
                    hint: Some("Set it between transactions.".into()),
                };
                ours(branch_commands::raise_sql(&e), &[], rewrite::REFUSED)
            }
            AsOfSetting::Set(value) => {
                self.start_as_of_change(false);
                ours(
                    format!(
                        "SELECT ({value})::pg_catalog.timestamptz::pg_catalog.text;\n{client};\nSET default_transaction_read_only = on"
                    ),
                    &[0, 2],
                    rewrite::COMMAND,
                )
            }
            AsOfSetting::Reset => {
                self.start_as_of_change(true);
                ours(
                    format!("{client};\nRESET default_transaction_read_only"),
                    &[1],
                    rewrite::COMMAND,
                )
            }
        }
    }

    /// `SET` / `RESET` / `SHOW pgbranch.as_of` in a Parse. SHOW becomes the
    /// proxy's SELECT of the time in effect when it is prepared. SET and
    /// RESET are prepared as sent (PostgreSQL keeps the placeholder
    /// setting); each Execute of them moves the session
    /// ([`Self::on_as_of_execute`]).
    fn on_as_of_parse(
        &mut self,
        name: &[u8],
        setting: crate::timetravel::commands::AsOfSetting,
        parse_message: impl Fn(&[u8]) -> Vec<u8>,
    ) -> ClientVerdict {
        use crate::timetravel::commands::AsOfSetting;
        if let AsOfSetting::Show = setting {
            let shown = self.as_of.as_ref().map_or("off", |(_, t)| t.as_str());
            let literal =
                String::from_utf8_lossy(&record::dollar_quote(shown.as_bytes())).into_owned();
            let text = format!("SELECT {literal} AS \"pgbranch.as_of\"");
            return ours_verdict(parse_message(text.as_bytes()), rewrite::COMMAND);
        }
        self.as_of_statements.insert(name.to_vec(), setting);
        ClientVerdict::forward()
    }

    /// An Execute of `SET` / `RESET pgbranch.as_of`: outside a transaction
    /// block (as the last ReadyForQuery said: drivers send the next
    /// statement before the previous ReadyForQuery is in, so earlier
    /// batches may still be unanswered) and first in its batch, the time
    /// is checked and made absolute by the proxy's SELECT before it, the
    /// session's read-only default follows after it, and the session moves
    /// at this batch's ReadyForQuery unless something failed.
    fn on_as_of_execute(
        &mut self,
        setting: crate::timetravel::commands::AsOfSetting,
        first_in_pipeline: bool,
    ) -> ClientVerdict {
        use crate::timetravel::commands::AsOfSetting;
        if !(first_in_pipeline && self.last_status == b'I') {
            let raise = branch_commands::raise_sql(&branch_commands::Invalid {
                code: "25001",
                message: "SET pgbranch.as_of cannot run inside a transaction block".into(),
                hint: Some("Set it between transactions.".into()),
            });
            return ClientVerdict {
                before: record::extended_frames(raise.as_bytes(), &[]),
                rewrites: rewrite::REFUSED,
                ..ClientVerdict::default()
            };
        }
        let (reset, before, after) = match setting {
            AsOfSetting::Set(value) => (
                false,
                record::extended_frames(
                    format!("SELECT ({value})::pg_catalog.timestamptz::pg_catalog.text").as_bytes(),
                    &[],
                ),
                record::extended_frames(b"SET default_transaction_read_only = on", &[]),
            ),
            _ => (
                true,
                Vec::new(),
                record::extended_frames(b"RESET default_transaction_read_only", &[]),
            ),
        };
        self.start_as_of_change(reset);
        ClientVerdict {
            before,
            after,
            rewrites: rewrite::COMMAND,
            ..ClientVerdict::default()
        }
    }

    /// `CREATE TABLE ... WITH SYSTEM VERSIONING`, or a CREATE TABLE whose
    /// name matches `time_travel.versioned_tables`: the table is created
    /// (and recorded) as usual, then versioned in the same Query.
    /// For a `CREATE TABLE` that versions its table (the clause, or a
    /// matching `time_travel.versioned_tables` pattern, on main): the text
    /// without the clause (when it had one) and the SQL that versions it;
    /// or the refusal of the clause on a branch.
    #[allow(clippy::type_complexity)]
    fn creation_versioning(
        &self,
        sql: &[u8],
    ) -> Option<Result<(Option<Vec<u8>>, String), branch_commands::Invalid>> {
        use crate::timetravel::commands::{create_table, version_created_sql};
        let create = create_table(sql)?;
        let on_main = self.origin.branch == crate::proxy::selection::DEFAULT_BRANCH;
        let extra = match &create.without_versioning_clause {
            Some(_) if !on_main => {
                return Some(Err(branch_commands::Invalid {
                    code: "0A000",
                    message: format!(
                        "system versioning is kept on branch main only (this session is on \"{}\")",
                        self.origin.branch
                    ),
                    hint: Some(
                        "Create the table without WITH SYSTEM VERSIONING here; version it on main."
                            .into(),
                    ),
                }));
            }
            Some(_) => version_created_sql(&create.regclass, None),
            None => {
                let patterns = self
                    .tunables
                    .versioned_tables
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if patterns.is_empty() || !on_main {
                    return None;
                }
                version_created_sql(&create.regclass, Some(&patterns))
            }
        };
        Some(Ok((create.without_versioning_clause, extra)))
    }

    fn versioning_on_create(&mut self, sql: &[u8]) -> Option<ClientVerdict> {
        let (stripped, extra) = match self.creation_versioning(sql)? {
            Ok(v) => v,
            Err(e) => {
                return Some(ours_verdict(
                    query_message(&branch_commands::raise_sql(&e)),
                    rewrite::REFUSED,
                ));
            }
        };
        let text = stripped.unwrap_or_else(|| sql.to_vec());
        let mut verdict = self.on_query_text(&text);
        if verdict.alone {
            return Some(verdict);
        }
        let Some(mut body) = sent_query_text(&verdict, text) else {
            return Some(verdict);
        };
        let index = self.split(&body).len();
        body.extend_from_slice(b"\n;");
        body.extend_from_slice(extra.as_bytes());
        body.push(0);
        let mut message = Vec::with_capacity(body.len() + HEADER_LEN);
        crate::protocol::put_message(&mut message, ft::QUERY, &body);
        verdict.swallow_statements.insert(index);
        verdict.replace = Some(message);
        verdict.rewrites |= rewrite::COMMAND;
        Some(verdict)
    }

    /// A Query of several statements among which are versioning commands
    /// (`ALTER TABLE ... ADD/DROP SYSTEM VERSIONING`, `RESTORE TABLE`) or
    /// tables created `WITH SYSTEM VERSIONING` (or matching the configured
    /// patterns), as a migration tool sends a whole file: each such
    /// statement becomes its SQL in place (a created table is versioned
    /// right after its CREATE TABLE, unseen), the metadata check runs
    /// first (unseen), and the rest is handled as any Query. Error
    /// positions in statements after a replaced one are approximate.
    fn versioning_in_batch(&mut self, sql: &[u8]) -> Option<ClientVerdict> {
        use crate::sql::contains_ignore_ascii_case as has;
        // Cheap exits first: a Query of one statement (most, with or
        // without a final `;`) is not scanned; ordinary traffic has none
        // of the words (a column called created_at counts only with
        // patterns configured).
        let patterns = || {
            !self
                .tunables
                .versioned_tables
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        };
        if !several_statements(sql)
            || !(has(sql, b"system") || has(sql, b"restore") || (has(sql, b"create") && patterns()))
        {
            return None;
        }
        let ranges = self.split(sql);
        if ranges.len() < 2 {
            return None;
        }
        let mut text = self.ensure_sql().as_bytes().to_vec();
        text.extend_from_slice(b";\n");
        let prefix = text.len();
        let mut unseen: Vec<String> = Vec::new();
        let mut cursor = 0;
        for range in &ranges {
            let stmt = &sql[range.clone()];
            let replacement = if let Some(command) = crate::timetravel::commands::parse(stmt) {
                if self.origin.branch != crate::proxy::selection::DEFAULT_BRANCH {
                    // The same refusal as for the command alone.
                    let (refusal, _) = self.branch_command(None, stmt)?;
                    return Some(ours_verdict(query_message(&refusal), rewrite::REFUSED));
                }
                crate::timetravel::commands::to_sql(&command).into_bytes()
            } else {
                match self.creation_versioning(stmt) {
                    None => continue,
                    Some(Err(e)) => {
                        return Some(ours_verdict(
                            query_message(&branch_commands::raise_sql(&e)),
                            rewrite::REFUSED,
                        ))
                    }
                    Some(Ok((stripped, extra))) => {
                        let mut r = stripped.unwrap_or_else(|| stmt.to_vec());
                        r.extend_from_slice(b";\n");
                        r.extend_from_slice(extra.as_bytes());
                        unseen.push(extra);
                        r
                    }
                }
            };
            text.extend_from_slice(&sql[cursor..range.start]);
            text.extend_from_slice(&replacement);
            cursor = range.end;
        }
        if cursor == 0 {
            return None;
        }
        text.extend_from_slice(&sql[cursor..]);
        // The other statements' AS OF clauses (the check's text is a
        // dollar-quoted block, never rewritten).
        let text = match self.time_travel(&text) {
            Ok(rewritten) => rewritten.unwrap_or(text),
            Err(e) => {
                return Some(ours_verdict(
                    query_message(&branch_commands::raise_sql(&e)),
                    rewrite::TIME_TRAVEL,
                ))
            }
        };
        let mut verdict = self.on_query_text(&text);
        if verdict.alone {
            return Some(verdict);
        }
        let Some(mut body) = sent_query_text(&verdict, text) else {
            return Some(verdict);
        };
        // The check and the versioning of created tables are the proxy's.
        let statements = self.split(&body);
        let ours: Vec<usize> = std::iter::once(0)
            .chain(statements.iter().enumerate().filter_map(|(i, r)| {
                unseen
                    .iter()
                    .any(|u| body[r.clone()] == *u.as_bytes())
                    .then_some(i)
            }))
            .collect();
        for &i in &ours {
            verdict.swallow_statements.insert(i);
        }
        // Positions: the check was inserted before the client's text.
        let charset = self.charset.unwrap_or(Charset::Guess);
        let check = charset.count(&body[..prefix]);
        let mut map = verdict.positions.as_deref().cloned().unwrap_or_default();
        for (at, _) in &mut map.inserted {
            *at = at.saturating_sub(check);
        }
        map.inserted.insert(0, (0, check));
        if map.statement_shift.len() != statements.len() {
            map.statement_shift = vec![Some(0); statements.len()];
        }
        for shift in map.statement_shift.iter_mut().flatten() {
            *shift = shift.saturating_add(check);
        }
        for i in ours {
            map.statement_shift[i] = None;
        }
        verdict.positions = Some(Arc::new(map));
        let mut message = Vec::with_capacity(body.len() + HEADER_LEN + 1);
        body.push(0);
        crate::protocol::put_message(&mut message, ft::QUERY, &body);
        verdict.replace = Some(message);
        verdict.rewrites |= rewrite::COMMAND;
        Some(verdict)
    }

    /// In an as-of session, the refusal of a statement of `sql` that
    /// writes.
    fn as_of_refusal(&self, sql: &[u8]) -> Option<branch_commands::Invalid> {
        let (_, at) = self.as_of.as_ref()?;
        let command = self
            .split(sql)
            .into_iter()
            .find_map(|r| crate::timetravel::write_command(&sql[r]))?;
        Some(branch_commands::Invalid {
            code: "25006",
            message: format!(
                "cannot execute {command} in a read-only session as of {at}"
            ),
            hint: Some("An as-of session shows the past and changes nothing; connect without as_of to write.".into()),
        })
    }

    /// The text with its AS OF / FOR SYSTEM_TIME clauses rewritten
    /// (`None`: it has none), or why it cannot be. In an as-of session,
    /// every table is read as of the session's time.
    fn time_travel(&self, sql: &[u8]) -> Result<Option<Vec<u8>>, branch_commands::Invalid> {
        let rewritten = match &self.as_of {
            Some((literal, _)) => {
                crate::sql::timetravel::rewrite_session(sql, self.standard_strings, literal)
            }
            None if !crate::sql::timetravel::mentions_time_travel(sql) => return Ok(None),
            None => crate::sql::timetravel::rewrite(sql, self.standard_strings),
        };
        match rewritten {
            Ok(r) => Ok(r.map(|r| r.sql)),
            Err(e) => Err(branch_commands::Invalid {
                code: "42601",
                message: format!("pgbranch: {}", e.message),
                hint: None,
            }),
        }
    }

    fn on_query_text(&mut self, sql: &[u8]) -> ClientVerdict {
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
        if self.protected() {
            return ours_verdict(query_message(&self.protected_error()), rewrite::REFUSED);
        }
        if let [Some(ddl)] = ddls.as_slice() {
            if ddl.non_transactional {
                // Alone it runs outside a transaction and is recorded
                // after it succeeds.
                self.non_tx = Some(NonTx {
                    captured: Captured {
                        text: sql[ranges[0].clone()].to_vec(),
                        ddl: ddl.clone(),
                        versioning: None,
                    },
                    extended: false,
                    succeeded: false,
                });
                return ClientVerdict {
                    alone: true,
                    ..ClientVerdict::default()
                };
            }
        }
        // With other statements the server refuses one that cannot run in
        // a transaction block (the Query is an implicit one), but a COMMIT
        // among them commits what came before: those are recorded as usual.
        let ddls: Vec<Option<Ddl>> = ddls
            .into_iter()
            .map(|d| d.filter(|d| !d.non_transactional))
            .collect();
        if ddls.iter().all(Option::is_none) {
            return ClientVerdict::forward();
        }
        let mut out = Vec::with_capacity(sql.len() * 2 + 256);
        let mut swallow = StatementSet::default();
        // Where every statement of `out` must be, client's and injected:
        // checked below by splitting `out` again.
        let mut expected = Vec::with_capacity(ranges.len() * 2 + 2);
        // `out` is `sql[..cursor]` with `shift` bytes injected.
        let mut shift = 0usize;
        let mut cursor = 0usize;
        let mut first = true;
        // Error positions: characters of `sql[..counted]`, and the map.
        let mut positions = Positions {
            charset: self.charset.unwrap_or(Charset::Guess),
            sql,
            counted: 0,
            chars: 0,
            inserted: 0,
            map: PositionMap::default(),
        };
        for (range, ddl) in ranges.iter().zip(&ddls) {
            let Some(ddl) = ddl else {
                expected.push(range.start + shift..range.end + shift);
                positions.client_statement();
                if controls_transaction(&sql[range.clone()]) {
                    // The metadata check and the branch lock belong to
                    // the transaction: a ROLLBACK (TO SAVEPOINT) undoes
                    // them, a COMMIT releases the lock.
                    first = true;
                }
                continue;
            };
            out.extend_from_slice(&sql[cursor..range.start]);
            cursor = range.start;
            if first {
                first = false;
                let begin = out.len();
                for injected in [
                    self.ensure_sql().as_bytes(),
                    &record::begin_sql(&self.origin),
                ] {
                    swallow.insert(expected.len());
                    expected.push(out.len()..out.len() + injected.len());
                    positions.map.statement_shift.push(None);
                    out.extend_from_slice(injected);
                    out.push(b';');
                }
                positions.insert(range.start, &out[begin..]);
            }
            if let Some(injected) = record::before_sql(&self.origin, ddl) {
                let begin = out.len();
                swallow.insert(expected.len());
                expected.push(out.len()..out.len() + injected.len());
                positions.map.statement_shift.push(None);
                out.extend_from_slice(&injected);
                out.push(b';');
                positions.insert(range.start, &out[begin..]);
            }
            shift = out.len() - cursor;
            expected.push(range.start + shift..range.end + shift);
            positions.client_statement();
            out.extend_from_slice(&sql[cursor..range.end]);
            cursor = range.end;
            let begin = out.len();
            out.push(b';');
            let injected = record::record_sql(&self.origin, &sql[range.clone()], ddl);
            swallow.insert(expected.len());
            expected.push(out.len()..out.len() + injected.len());
            positions.map.statement_shift.push(None);
            out.extend_from_slice(&injected);
            positions.insert(range.end, &out[begin..]);
            shift = out.len() - cursor;
        }
        out.extend_from_slice(&sql[cursor..]);
        // A statement that does not end where the splitter says (an
        // unterminated string, comment or parenthesis: PostgreSQL rejects
        // the Query before running any of it) would swallow the injected
        // text, or be completed by it. Such a Query goes as it was sent.
        if self.split(&out) != expected {
            return ClientVerdict::forward();
        }
        let mut message = Vec::with_capacity(out.len() + 6);
        out.push(0);
        crate::protocol::put_message(&mut message, ft::QUERY, &out);
        ClientVerdict {
            replace: Some(message),
            swallow_statements: swallow,
            positions: Some(Arc::new(positions.map)),
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
        forget(&mut self.statements, name);
        let parse_message = |text: &[u8]| {
            let mut parse = name.to_vec();
            parse.push(0);
            parse.extend_from_slice(text);
            parse.push(0);
            parse.extend_from_slice(params);
            let mut message = Vec::new();
            crate::protocol::put_message(&mut message, ft::PARSE, &parse);
            message
        };
        forget(&mut self.switch_statements, name);
        forget(&mut self.as_of_statements, name);
        let command = branch_commands::parse(sql);
        if let Some(Ok(branch_commands::Command::Switch(to))) = command {
            // The statement itself (a placeholder setting) is prepared as
            // sent; its Execute moves the session.
            self.switch_statements.insert(name.to_vec(), to);
            return ClientVerdict::forward();
        }
        forget(&mut self.reset_statements, name);
        // Also before any switch: the statement may run after one.
        if resets_settings(sql) {
            let kind = if resets_all(sql) {
                ResetKind::All
            } else {
                ResetKind::Some
            };
            self.reset_statements.insert(name.to_vec(), kind);
        }
        // A branch command's metadata check runs before its Parse, as the
        // proxy's own statement.
        if let Some((text, check)) = self.branch_command(command, sql) {
            return ClientVerdict {
                before: if check {
                    record::extended_frames(self.ensure_sql().as_bytes(), &[])
                } else {
                    Vec::new()
                },
                replace: Some(parse_message(text.as_bytes())),
                positions: Some(Arc::new(all_ours())),
                rewrites: rewrite::COMMAND,
                ..ClientVerdict::default()
            };
        }
        if let Some(rewritten) = commands::rewrite(sql, &self.origin.branch) {
            return ours_verdict(parse_message(rewritten.as_bytes()), rewrite::COMMAND);
        }
        if let Some(setting) = crate::timetravel::commands::parse_as_of_setting(sql) {
            return self.on_as_of_parse(name, setting, parse_message);
        }
        if let Some(e) = self.as_of_refusal(sql) {
            return ours_verdict(
                parse_message(branch_commands::raise_sql(&e).as_bytes()),
                rewrite::REFUSED,
            );
        }
        let travelled = match self.time_travel(sql) {
            Ok(t) => t,
            Err(e) => {
                return ours_verdict(
                    parse_message(branch_commands::raise_sql(&e).as_bytes()),
                    rewrite::TIME_TRAVEL,
                )
            }
        };
        let sql: &[u8] = travelled.as_deref().unwrap_or(sql);
        let mapped = self
            .schemas
            .as_ref()
            .and_then(|m| rewrite_schemas(sql, m, self.standard_strings));
        let sql: &[u8] = mapped.as_ref().map_or(sql, |m| &m.sql);
        let mut verdict = ClientVerdict::forward();
        if travelled.is_some() {
            verdict.replace = Some(parse_message(sql));
            verdict.rewrites |= rewrite::TIME_TRAVEL;
        }
        // CREATE TABLE ... WITH SYSTEM VERSIONING (or a matching pattern):
        // the table is versioned after the record, at Execute.
        let mut versioning = None;
        let stripped;
        let sql: &[u8] = match self.creation_versioning(sql) {
            None => sql,
            Some(Err(e)) => {
                return ours_verdict(
                    parse_message(branch_commands::raise_sql(&e).as_bytes()),
                    rewrite::REFUSED,
                );
            }
            Some(Ok((text, extra))) => {
                versioning = Some(extra);
                verdict.rewrites |= rewrite::COMMAND;
                match text {
                    Some(t) => {
                        stripped = t;
                        verdict.replace = Some(parse_message(&stripped));
                        &stripped
                    }
                    None => sql,
                }
            }
        };
        if may_contain_ddl(sql) {
            // A prepared statement holds one statement at most.
            let ranges = self.split(sql);
            if let [range] = ranges.as_slice() {
                if let Some(ddl) = classify(&sql[range.clone()]).filter(|d| !d.temporary) {
                    if self.protected() {
                        return ours_verdict(
                            parse_message(self.protected_error().as_bytes()),
                            rewrite::REFUSED,
                        );
                    }
                    let text = sql[range.clone()].to_vec();
                    self.statements.insert(
                        name.to_vec(),
                        Arc::new(Captured {
                            text,
                            ddl,
                            versioning,
                        }),
                    );
                }
            }
        }
        if mapped.is_some() {
            verdict.replace = Some(parse_message(sql));
            verdict.rewrites |= rewrite::BRANCH_NAMES;
        }
        verdict
    }

    fn on_bind(&mut self, body: &[u8]) {
        // Every Bind passes here: a map that is empty (as they mostly are)
        // is not hashed into.
        let names = take_cstr(body).and_then(|(portal, rest)| Some((portal, take_cstr(rest)?.0)));
        if let Some((portal, statement)) = names {
            rebind(
                &mut self.switch_portals,
                &self.switch_statements,
                portal,
                statement,
            );
            rebind(
                &mut self.as_of_portals,
                &self.as_of_statements,
                portal,
                statement,
            );
            rebind(
                &mut self.reset_portals,
                &self.reset_statements,
                portal,
                statement,
            );
        }
        match names {
            Some((portal, statement)) => {
                rebind(&mut self.portals, &self.statements, portal, statement)
            }
            // Names longer than the peeked prefix: forget every portal
            // rather than keep one that may have been rebound.
            None => self.portals.clear(),
        }
    }

    /// The record of a statement that ran alone and succeeded, sent after
    /// it as a Query, or (`extended`) as Parse/Bind/Execute and a Sync.
    fn late_record(&mut self, c: &Captured, extended: bool) -> Vec<u8> {
        self.late_records += 1;
        let mut message = Vec::new();
        if extended {
            message.extend_from_slice(&record::extended_frames(self.ensure_sql().as_bytes(), &[]));
            message.extend_from_slice(&record::record_frames_with(
                record::Recorder::Late,
                &self.origin,
                &c.text,
                &c.ddl,
            ));
            crate::protocol::put_message(&mut message, ft::SYNC, &[]);
        } else {
            let mut sql = Vec::new();
            sql.extend_from_slice(self.ensure_sql().as_bytes());
            sql.push(b';');
            sql.extend_from_slice(&record::record_sql_with(
                record::Recorder::Late,
                &self.origin,
                &c.text,
                &c.ddl,
            ));
            sql.push(0);
            crate::protocol::put_message(&mut message, ft::QUERY, &sql);
        }
        message
    }

    fn on_execute(&mut self, body: &[u8]) -> ClientVerdict {
        let Some((portal, _)) = take_cstr(body) else {
            return ClientVerdict::forward();
        };
        let first_in_pipeline = !std::mem::replace(&mut self.executed_since_sync, true);
        if let Some(to) = self.switch_portals.get(portal).cloned() {
            let mut verdict = self.on_switch_execute(to, first_in_pipeline);
            verdict.rewrites |= rewrite::COMMAND;
            return verdict;
        }
        if let Some(setting) = self.as_of_portals.get(portal).cloned() {
            return self.on_as_of_execute(setting, first_in_pipeline);
        }
        if let Some(&kind) = self.reset_portals.get(portal) {
            if kind == ResetKind::All && self.as_of != self.connect_as_of {
                self.start_as_of_change(true);
            }
            if let Some(restore) = self.restore_path_sql() {
                return ClientVerdict {
                    after: record::extended_frames(restore.as_bytes(), &[]),
                    rewrites: rewrite::PATH_RESTORE,
                    ..ClientVerdict::default()
                };
            }
        }
        let Some(captured) = take(&mut self.portals, portal) else {
            return ClientVerdict::forward();
        };
        if captured.ddl.non_transactional {
            self.non_tx = Some(NonTx {
                captured: Captured {
                    text: captured.text.clone(),
                    ddl: captured.ddl.clone(),
                    versioning: None,
                },
                extended: true,
                succeeded: false,
            });
            // The server holds the result back until Sync or Flush, and the
            // relay holds the client's Sync back until the result is in.
            let mut after = Vec::new();
            crate::protocol::put_message(&mut after, ft::FLUSH, &[]);
            return ClientVerdict {
                after,
                alone: true,
                ..ClientVerdict::default()
            };
        }
        let mut before = Vec::new();
        before.extend_from_slice(&record::extended_frames(self.ensure_sql().as_bytes(), &[]));
        before.extend_from_slice(&record::begin_frames(&self.origin));
        if let Some(sql) = record::before_sql(&self.origin, &captured.ddl) {
            before.extend_from_slice(&record::extended_frames(&sql, &[]));
        }
        let mut after = record::record_frames(&self.origin, &captured.text, &captured.ddl);
        if let Some(v) = &captured.versioning {
            after.extend_from_slice(&record::extended_frames(v.as_bytes(), &[]));
        }
        ClientVerdict {
            before,
            after,
            ..ClientVerdict::default()
        }
    }

    /// The verdict on one client message (rewrite kinds not set yet).
    fn client_verdict(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        match tag {
            ft::QUERY => {
                let verdict = self.on_query(body);
                self.outstanding += 1;
                verdict
            }
            ft::SYNC => {
                self.outstanding += 1;
                self.executed_since_sync = false;
                ClientVerdict::forward()
            }
            ft::FUNCTION_CALL => {
                self.outstanding += 1;
                ClientVerdict::forward()
            }
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
                            b'S' => {
                                forget(&mut self.switch_statements, name);
                                forget(&mut self.as_of_statements, name);
                                forget(&mut self.reset_statements, name);
                                forget(&mut self.statements, name);
                            }
                            _ => {
                                forget(&mut self.switch_portals, name);
                                forget(&mut self.as_of_portals, name);
                                forget(&mut self.reset_portals, name);
                                forget(&mut self.portals, name);
                            }
                        }
                    }
                }
                ClientVerdict::forward()
            }
            _ => ClientVerdict::forward(),
        }
    }
}

impl SessionHook for HistoryHook {
    fn wants_client(&self, tag: u8) -> bool {
        matches!(
            tag,
            ft::QUERY
                | ft::PARSE
                | ft::BIND
                | ft::EXECUTE
                | ft::CLOSE
                | ft::SYNC
                | ft::FUNCTION_CALL
        )
    }

    fn client_peek_limit(&self, tag: u8) -> usize {
        match tag {
            // A Bind carries parameter values (possibly large) after the
            // two names this hook reads; DDL takes no parameters.
            ft::BIND => 4096,
            // Only counted (large object writes can be large).
            ft::FUNCTION_CALL => 0,
            _ => usize::MAX,
        }
    }

    fn on_client_prefix(&mut self, tag: u8, prefix: &[u8]) {
        if tag == ft::FUNCTION_CALL {
            self.outstanding += 1;
        }
        if tag == ft::BIND {
            self.on_bind(prefix);
        }
    }

    fn on_client_message(&mut self, tag: u8, body: &[u8]) -> ClientVerdict {
        let mut verdict = self.client_verdict(tag, body);
        // What is changed and not named otherwise is DDL being recorded.
        if verdict.rewrites == 0 && !verdict.is_forward() {
            verdict.rewrites = rewrite::HISTORY;
        }
        verdict
    }

    fn wants_server(&self, tag: u8) -> bool {
        matches!(
            tag,
            bt::COMMAND_COMPLETE | bt::ERROR_RESPONSE | bt::READY_FOR_QUERY | bt::PARAMETER_STATUS
        )
    }

    fn on_server_message(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        // The switch's own CommandComplete follows its rows; one that
        // arrives before them answers an earlier (pipelined) statement. A
        // failed switch never sends its statement's.
        if tag == bt::READY_FOR_QUERY {
            self.outstanding = self.outstanding.saturating_sub(1);
            self.last_status = body.first().copied().unwrap_or(b'I');
            match self.as_of_change.take() {
                Some(mut change) if change.skip > 0 => {
                    change.skip -= 1;
                    self.as_of_change = Some(change);
                }
                Some(change) if !change.failed => {
                    self.as_of = if change.reset {
                        self.connect_as_of.clone()
                    } else {
                        change.at.as_deref().map(as_of_pair)
                    };
                }
                _ => {}
            }
        }
        if tag == bt::ERROR_RESPONSE {
            if let Some(change) = self.as_of_change.as_mut().filter(|c| c.skip == 0) {
                change.failed = true;
            }
        }
        if tag == bt::COMMAND_COMPLETE {
            match self.switch.take() {
                Some(sw) if sw.failed => {}
                Some(sw) if !sw.schemas.is_empty() => self.apply_switch(sw),
                other => self.switch = other,
            }
        }
        if tag == bt::PARAMETER_STATUS {
            match take_cstr(body) {
                Some((b"standard_conforming_strings", rest)) => {
                    self.standard_strings = take_cstr(rest).is_none_or(|(v, _)| v != b"off");
                }
                Some((b"client_encoding", rest)) => {
                    self.charset = take_cstr(rest).map(|(v, _)| Charset::of(v));
                }
                _ => {}
            }
        }
        Vec::new()
    }

    fn on_alone_response(&mut self, tag: u8, body: &[u8]) -> Vec<u8> {
        if self.restore_after_alone && tag == bt::READY_FOR_QUERY {
            self.restore_after_alone = false;
            if let Some(restore) = self.restore_path_sql() {
                return query_message(&restore);
            }
        }
        let Some(mut state) = self.non_tx.take() else {
            return Vec::new();
        };
        match tag {
            bt::COMMAND_COMPLETE => {
                let reported = take_cstr(body).map_or(body, |(s, _)| s);
                state.succeeded = reported == state.captured.ddl.tag.as_bytes();
                if state.extended {
                    // Committed already (a statement that cannot run in a
                    // transaction block commits at once); the client's Sync
                    // waits in the relay behind the proxy's own.
                    return if state.succeeded {
                        self.late_record(&state.captured, true)
                    } else {
                        Vec::new()
                    };
                }
                self.non_tx = Some(state);
                Vec::new()
            }
            bt::READY_FOR_QUERY if state.succeeded => self.late_record(&state.captured, false),
            bt::ERROR_RESPONSE | bt::READY_FOR_QUERY => Vec::new(),
            _ => {
                self.non_tx = Some(state);
                Vec::new()
            }
        }
    }

    fn branch(&self) -> Option<&str> {
        Some(&self.origin.branch)
    }

    fn on_injected_response(&mut self, tag: u8, body: &[u8]) -> Injected {
        if let Some(change) = self.as_of_change.as_mut() {
            match tag {
                bt::DATA_ROW => {
                    change.at = crate::protocol::backend::data_row_text(body)
                        .into_iter()
                        .next();
                }
                bt::ERROR_RESPONSE => change.failed = true,
                _ => {}
            }
        }
        if let Some(sw) = self.switch.as_mut() {
            match tag {
                bt::DATA_ROW => {
                    if let [l, p, path] = crate::protocol::backend::data_row_text(body).as_slice() {
                        sw.schemas.push((l.clone(), p.clone()));
                        sw.path = Some(path.clone());
                    }
                }
                bt::ERROR_RESPONSE => sw.failed = true,
                _ => {}
            }
        }
        if self.late_records > 0 {
            return match tag {
                bt::READY_FOR_QUERY => {
                    self.late_records -= 1;
                    Injected::Swallow
                }
                bt::ERROR_RESPONSE => {
                    warn!(
                        error = %String::from_utf8_lossy(body),
                        "a statement that ran outside a transaction could not be recorded"
                    );
                    Injected::Replace(late_record_warning(body))
                }
                _ => Injected::Swallow,
            };
        }
        if tag == bt::ERROR_RESPONSE {
            Injected::Forward
        } else {
            Injected::Swallow
        }
    }
}

/// An ErrorResponse of a record sent after its statement succeeded, as a
/// NoticeResponse with severity WARNING: notices may arrive at any time.
fn late_record_warning(error: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(error.len() + 64);
    let mut rest = error;
    while let Some((&field, after)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let Some((value, after)) = take_cstr(after) else {
            break;
        };
        rest = after;
        if field == b'P' {
            // A position in the proxy's Query, not in one the client sent.
            continue;
        }
        body.push(field);
        match field {
            b'S' | b'V' => body.extend_from_slice(b"WARNING"),
            b'M' => {
                body.extend_from_slice(
                    b"pgbranch could not record the statement in the DDL history: ",
                );
                body.extend_from_slice(value);
            }
            _ => body.extend_from_slice(value),
        }
        body.push(0);
    }
    body.push(0);
    let mut message = Vec::new();
    crate::protocol::put_message(&mut message, bt::NOTICE_RESPONSE, &body);
    message
}

/// Whether `sql` holds a statement that resets settings (`RESET ...`,
/// `DISCARD ...`), which would return search_path to its startup value.
fn resets_settings(sql: &[u8]) -> bool {
    use crate::sql::contains_ignore_ascii_case as contains;
    if !(contains(sql, b"reset") || contains(sql, b"discard") || contains(sql, b"search_path")) {
        return false;
    }
    crate::sql::lexer::Statements::new(sql).any(|r| {
        let mut tokens = crate::sql::lexer::Lexer::new(&sql[r]);
        match tokens.next() {
            Some(t) if t.is_word("reset") || t.is_word("discard") => true,
            // SET [SESSION | LOCAL] search_path {TO | =} DEFAULT
            Some(t) if t.is_word("set") => {
                let mut t = tokens.next();
                if t.as_ref()
                    .is_some_and(|t| t.is_word("session") || t.is_word("local"))
                {
                    t = tokens.next();
                }
                t.is_some_and(|t| t.is_word("search_path"))
                    && tokens
                        .next()
                        .is_some_and(|t| t.is_word("to") || t.is_punct(b'='))
                    && tokens.next().is_some_and(|t| t.is_word("default"))
            }
            _ => false,
        }
    })
}

/// Whether `sql` is one `DISCARD ALL` statement.
fn is_discard_all(sql: &[u8]) -> bool {
    let mut statements = crate::sql::lexer::Statements::new(sql);
    let (Some(only), None) = (statements.next(), statements.next()) else {
        return false;
    };
    is_all_of(&sql[only], &["discard"])
}

/// Whether statement `stmt` is `<one of firsts> ALL`.
fn is_all_of(stmt: &[u8], firsts: &[&str]) -> bool {
    let mut words = crate::sql::lexer::Lexer::new(stmt);
    words
        .next()
        .is_some_and(|t| firsts.iter().any(|w| t.is_word(w)))
        && words.next().is_some_and(|t| t.is_word("all"))
}

/// Whether a statement may end, roll back or start a transaction (or roll
/// back to a savepoint): its first word is one of those commands'.
/// `PREPARE` is counted (it also names PREPARE TRANSACTION); an extra
/// metadata check and lock cost a little, a missing one fails the DDL.
fn controls_transaction(stmt: &[u8]) -> bool {
    crate::sql::lexer::Lexer::new(stmt).next().is_some_and(|t| {
        [
            "begin", "start", "commit", "end", "rollback", "abort", "prepare",
        ]
        .iter()
        .any(|k| t.is_word(k))
    })
}

/// A replacement that is all the proxy's own text (error positions point
/// at its start), counted under the `rewrite` kinds given.
fn ours_verdict(message: Vec<u8>, kinds: u8) -> ClientVerdict {
    ClientVerdict {
        replace: Some(message),
        positions: Some(Arc::new(all_ours())),
        rewrites: kinds,
        ..ClientVerdict::default()
    }
}

/// The text of the Query a verdict of `on_query_text` sends: its
/// replacement's, or `text` when it forwards the Query; `None` when it
/// sends something else (a refusal).
fn sent_query_text(verdict: &ClientVerdict, text: Vec<u8>) -> Option<Vec<u8>> {
    match &verdict.replace {
        Some(m) if m.first() == Some(&ft::QUERY) && m.len() > HEADER_LEN => {
            Some(m[HEADER_LEN..m.len() - 1].to_vec())
        }
        Some(_) => None,
        None => Some(text),
    }
}

/// Whether `sql` may hold several statements: a `;` with more than
/// whitespace and `;` after it (strings and comments are not told apart:
/// a cheap filter).
fn several_statements(sql: &[u8]) -> bool {
    sql.iter().position(|&b| b == b';').is_some_and(|i| {
        sql[i..]
            .iter()
            .any(|b| !b.is_ascii_whitespace() && *b != b';')
    })
}

/// The position map of a text that is all the proxy's (a history command
/// rewritten into a SELECT): positions point at the start of the client's.
fn all_ours() -> PositionMap {
    PositionMap {
        inserted: vec![(0, u32::MAX)],
        statement_shift: Vec::new(),
    }
}

/// Builds the [`PositionMap`] of a rewritten Query.
struct Positions<'a> {
    charset: Charset,
    /// The client's text.
    sql: &'a [u8],
    /// Characters of `sql[..counted]`.
    counted: usize,
    chars: u32,
    /// Characters inserted so far.
    inserted: u32,
    map: PositionMap,
}

impl Positions<'_> {
    /// `text` inserted before byte `at` of the client's text.
    fn insert(&mut self, at: usize, text: &[u8]) {
        self.chars = self
            .chars
            .saturating_add(self.charset.count(&self.sql[self.counted..at]));
        self.counted = at;
        let len = self.charset.count(text);
        self.map.inserted.push((self.chars, len));
        self.inserted = self.inserted.saturating_add(len);
    }

    /// The next statement of the rewritten Query is the client's.
    fn client_statement(&mut self) {
        self.map.statement_shift.push(Some(self.inserted));
    }
}

/// How PostgreSQL counts the characters of text in a client encoding
/// (error positions are character offsets): `pg_encoding_mblen` of each
/// encoding, from PostgreSQL's `common/wchar.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    /// LATIN1, WIN1252, KOI8R ...: a byte is a character.
    SingleByte,
    /// EUC_JP, EUC_JIS_2004, EUC_KR, JOHAB.
    Euc,
    EucCn,
    EucTw,
    /// SJIS, SHIFT_JIS_2004.
    Sjis,
    /// BIG5, GBK, UHC: a byte with the high bit set starts two.
    DoubleByte,
    Gb18030,
    MuleInternal,
    /// Not known (set in the startup packet, never reported since) or
    /// SQL_ASCII: UTF-8 when the text is valid UTF-8, else bytes.
    Guess,
}

impl Charset {
    fn of(name: &[u8]) -> Self {
        match name.to_ascii_uppercase().as_slice() {
            b"UTF8" | b"UNICODE" => Self::Utf8,
            b"EUC_JP" | b"EUC_JIS_2004" | b"EUC_KR" | b"JOHAB" => Self::Euc,
            b"EUC_CN" => Self::EucCn,
            b"EUC_TW" => Self::EucTw,
            b"SJIS" | b"SHIFT_JIS_2004" => Self::Sjis,
            b"BIG5" | b"GBK" | b"UHC" => Self::DoubleByte,
            b"GB18030" => Self::Gb18030,
            b"MULE_INTERNAL" => Self::MuleInternal,
            b"SQL_ASCII" => Self::Guess,
            _ => Self::SingleByte,
        }
    }

    /// Length of the character starting at `s[0]`.
    fn char_len(self, s: &[u8]) -> usize {
        let b = s[0];
        let len = match self {
            Self::SingleByte => 1,
            Self::Utf8 | Self::Guess => match b {
                0xc0..=0xdf => 2,
                0xe0..=0xef => 3,
                0xf0..=0xf7 => 4,
                _ => 1,
            },
            Self::Euc => match b {
                0x8e => 2,
                0x8f => 3,
                0x80.. => 2,
                _ => 1,
            },
            Self::EucCn | Self::DoubleByte => 1 + usize::from(b >= 0x80),
            Self::EucTw => match b {
                0x8e => 4,
                0x8f => 3,
                0x80.. => 2,
                _ => 1,
            },
            Self::Sjis => match b {
                0xa1..=0xdf => 1,
                0x80.. => 2,
                _ => 1,
            },
            Self::Gb18030 => match (b, s.get(1)) {
                (..0x80, _) => 1,
                (_, Some(0x30..=0x39)) => 4,
                _ => 2,
            },
            Self::MuleInternal => match b {
                0x81..=0x8d => 2,
                0x9a | 0x9b => 3,
                0x90..=0x99 => 3,
                0x9c | 0x9d => 4,
                _ => 1,
            },
        };
        len.min(s.len())
    }

    /// The number of characters in `text`.
    fn count(self, text: &[u8]) -> u32 {
        let charset = match self {
            Self::Guess if std::str::from_utf8(text).is_err() => Self::SingleByte,
            c => c,
        };
        if charset == Self::SingleByte || text.is_ascii() {
            return u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        let mut n = 0u32;
        let mut at = 0;
        while at < text.len() {
            at += charset.char_len(&text[at..]);
            n = n.saturating_add(1);
        }
        n
    }
}

/// Creates a [`HistoryHook`] per session.
#[derive(Default)]
pub struct HistoryHooks {
    /// Branches on which DDL is refused, as last reloaded.
    pub tunables: Arc<Tunables>,
}

impl HookFactory for HistoryHooks {
    fn create(&self, info: &SessionInfo) -> Box<dyn SessionHook> {
        Box::new(HistoryHook::new(info, self.tunables.clone()))
    }
}

/// A Bind of `statement` to `portal`: the portal takes the statement's
/// entry, or loses its own. An empty map is not hashed into (`get` on an
/// empty map returns at once; `remove` would hash first).
fn rebind<V: Clone>(
    portals: &mut HashMap<Vec<u8>, V>,
    statements: &HashMap<Vec<u8>, V>,
    portal: &[u8],
    statement: &[u8],
) {
    match statements.get(statement) {
        Some(v) => {
            portals.insert(portal.to_vec(), v.clone());
        }
        None => forget(portals, portal),
    }
}

/// Removes `key`; an empty map is not hashed into (`remove` hashes first,
/// and most of these maps are empty for most sessions).
fn forget<V>(map: &mut HashMap<Vec<u8>, V>, key: &[u8]) {
    take(map, key);
}

/// Removes and returns `key`'s entry, without hashing into an empty map.
fn take<V>(map: &mut HashMap<Vec<u8>, V>, key: &[u8]) -> Option<V> {
    if map.is_empty() {
        None
    } else {
        map.remove(key)
    }
}

/// What a prepared RESET / DISCARD statement resets.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ResetKind {
    /// search_path may change (the branch's is put back).
    Some,
    /// RESET ALL / DISCARD ALL: pgbranch.as_of too.
    All,
}

/// Whether a statement of `sql` is RESET ALL or DISCARD ALL (which put
/// pgbranch.as_of, like every setting, back to the connection's own).
fn resets_all(sql: &[u8]) -> bool {
    use crate::sql::contains_ignore_ascii_case as contains;
    if !(contains(sql, b"all") && (contains(sql, b"reset") || contains(sql, b"discard"))) {
        return false;
    }
    crate::sql::lexer::Statements::new(sql).any(|r| is_all_of(&sql[r], &["reset", "discard"]))
}

#[cfg(test)]
mod tests {
    use super::several_statements;

    #[test]
    fn one_statement_with_or_without_its_semicolon_is_not_several() {
        assert!(!several_statements(b"SELECT 1"));
        assert!(!several_statements(b"SELECT 1;"));
        assert!(!several_statements(b"SELECT 1 ; ;\n "));
        assert!(several_statements(b"SELECT 1; SELECT 2"));
        assert!(several_statements(
            b"ALTER TABLE t ADD SYSTEM VERSIONING;INSERT INTO t VALUES (1)"
        ));
        // A cheap filter: a ';' inside a string counts.
        assert!(several_statements(b"SELECT ';x'"));
    }
}
