//! Time-travel queries: a lexical rewriter (no I/O) from the SQL:2011 /
//! MariaDB system-versioning syntax to calls of the functions pgbranch
//! creates in the database.
//!
//! For every versioned table `s.t` the server holds an overload
//! `pgbranch_history.as_of(s.t, timestamptz, boolean) RETURNS SETOF s.t` and
//! `pgbranch_history.versions(s.t, timestamptz, timestamptz, boolean)`
//! (the table's columns plus `pgbranch_valid_from` and `pgbranch_valid_to`).
//! The overload is chosen by the first argument, `NULL::<name as written>`,
//! so name resolution (`search_path`, quoting) stays PostgreSQL's.
//!
//! # What is rewritten
//!
//! A table reference in a FROM clause — `[ONLY] name`, where `name` is an
//! identifier or a `"quoted identifier"`, optionally qualified (`s.t`,
//! `"S"."T"`, up to `db.s.t`) — directly followed by one of these clauses
//! (keywords in any case):
//!
//! | clause | becomes |
//! |---|---|
//! | `AS OF [TIMESTAMP] e`, `FOR SYSTEM_TIME AS OF [TIMESTAMP] e` | `pgbranch_history.as_of(NULL::name, (e)::pg_catalog.timestamptz, false)` |
//! | `FOR SYSTEM_TIME FROM a TO b` | `pgbranch_history.versions(NULL::name, (a)::pg_catalog.timestamptz, (b)::pg_catalog.timestamptz, false)` |
//! | `FOR SYSTEM_TIME BETWEEN [ASYMMETRIC] a AND b` | `pgbranch_history.versions(NULL::name, (a)::pg_catalog.timestamptz, (b)::pg_catalog.timestamptz, true)` |
//! | `FOR SYSTEM_TIME ALL` | `pgbranch_history.versions(NULL::name, '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true)` |
//!
//! followed by `AS <alias>`: the alias the user wrote after the clause
//! (`[AS] alias`, left in place), else the last part of the name as
//! written (`public.orders` → `AS orders`, `"Mixed"` → `AS "Mixed"`), so
//! that `orders.id` keeps working. `ONLY` is dropped (a function has no
//! inheritance children); a `TIMESTAMP` right after `AS OF` is part of the
//! syntax and dropped too.
//!
//! FROM clauses are found at any parenthesis depth: `SELECT ... FROM`
//! (subqueries, CTE bodies, `INSERT ... SELECT`, `CREATE ... AS SELECT`,
//! `DECLARE ... CURSOR FOR SELECT`), `UPDATE ... FROM`, `DELETE ... USING`
//! and `MERGE ... USING`. An item starts after the FROM (or USING), after
//! every `JOIN`, after a `,` of the clause, inside a parenthesised join
//! (`FROM (a JOIN b ON ...)`), and after `LATERAL`. The SQL command
//! `TABLE name` is handled as `SELECT * FROM name`.
//!
//! **Expressions** (`e`, `a`, `b`) are any SQL text up to, at parenthesis
//! (and `CASE ... END`) depth 0: a `,`, `)` or `;`, the end of the input,
//! a word that cannot continue an expression (`WHERE`, `GROUP`, `HAVING`,
//! `ORDER`, `LIMIT`, `OFFSET`, `FETCH`, `WINDOW`, `UNION`, `INTERSECT`,
//! `EXCEPT`, `JOIN`, `INNER`, `LEFT`, `RIGHT`, `FULL`, `CROSS`, `NATURAL`,
//! `ON`, `USING`, `RETURNING`, `FOR`, `AS`, `FROM` except in `IS [NOT]
//! DISTINCT FROM`, `TO` except in `SIMILAR TO`, and `AND` for the lower
//! bound of `BETWEEN`), or an identifier directly after a complete operand
//! (`now() - interval '1 hour' o`: `o` is the alias). Operators, typed
//! literals (`interval '1 hour'`, `timestamptz '...'`), function calls,
//! casts (`::timestamp with time zone`, `::timestamptz(3)`), `AT TIME
//! ZONE`, `IS [NOT] NULL`, `COLLATE`, `CASE ... END` and subscripts all
//! continue an expression. The expression's text is kept where it was;
//! only the keywords around it are replaced, so [`Rewritten::edits`] maps
//! a position inside it back exactly. Comments between the clause's
//! keywords are dropped with them; every other byte (comments, strings,
//! dollar quotes, the table name, the user's alias) is copied as it came.
//!
//! **Errors** ([`TimeTravelError`], with a byte offset in the input): an
//! empty expression (`AS OF WHERE ...`), `FOR SYSTEM_TIME` followed by
//! anything but `AS OF`, `FROM`, `BETWEEN` or `ALL`, `BETWEEN SYMMETRIC`,
//! `FROM a` without `TO`, `BETWEEN a` without `AND`, clauses nested more
//! than 32 deep inside each other's expressions, and (in an as-of session)
//! `TABLESAMPLE` on a table that would be rewritten.
//!
//! # As-of sessions
//!
//! [`rewrite_session`] additionally wraps every plain table reference (same
//! places, no clause) as `pgbranch_history.as_of(NULL::name, (<at>)::
//! timestamptz, true)`, keeping the user's alias (`FROM t x`, `FROM t AS
//! x`) or adding `AS <last name part>`. Left alone: names of CTEs defined
//! anywhere in the statement (`WITH [RECURSIVE] name [(cols)] AS [[NOT]
//! MATERIALIZED] (...)`, several of them), function calls (a name followed
//! by `(`), subqueries, `LATERAL (...)`, `ROWS FROM (...)`, names in the
//! schemas `information_schema`, `pgbranch_history` and any schema starting
//! with `pg_` (`pg_catalog`, `pg_temp`, `pg_toast`), and unqualified names
//! starting with `pg_`. Explicit clauses keep their own time.
//!
//! # Limits (not recognised)
//!
//! - An alias before the clause (`FROM t x AS OF ...`, `FROM t AS x FOR
//!   SYSTEM_TIME ...`) is not a match: the text is left unchanged (and the
//!   server rejects it).
//! - An unquoted table alias named `of` (`FROM t AS of`) is read as the
//!   start of a clause (an error when nothing follows); quote it (`AS
//!   "of"`).
//! - Clauses after anything else than a name (a subquery, a function
//!   call) and on the target of `UPDATE`, `DELETE`, `INSERT` or `MERGE`
//!   are not recognised. Any name is rewritten, whether or not it is a
//!   versioned table: a view or an unversioned table gets the server's
//!   "has no history" error (55000), a CTE named in an explicit clause
//!   "type does not exist" (42704).
//! - Names of more than three parts, `FROM ONLY (t)` and `FROM t *` are
//!   not recognised.
//! - In a session, a CTE name hides a table of the same name anywhere in
//!   the statement (scopes are not tracked); fully qualified column
//!   references (`public.t.id`) stop working, since the wrapped table is
//!   known by its alias only; locking clauses (`FOR UPDATE`) on wrapped
//!   tables lock nothing of the live table; `CREATE VIEW ... AS SELECT` is
//!   wrapped too (the view is pinned to the session's time).
//! - GRANT, REVOKE and ALTER DEFAULT PRIVILEGES statements are skipped.
//! - Dynamic SQL (`EXECUTE`, function bodies in strings or dollar quotes)
//!   is text and never rewritten.

use std::ops::Range;

use super::lexer::{Lexer, Token, TokenKind};
pub use super::rewrite::Rewritten;
use super::rewrite::Splice;

/// How deep clauses may nest inside each other's expressions.
const MAX_NESTING: usize = 32;

/// PostgreSQL's reserved and type/function-name keywords: never a table
/// name or a bare alias.
const RESERVED: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "column",
    "constraint",
    "create",
    "current_catalog",
    "current_date",
    "current_role",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "from",
    "grant",
    "group",
    "having",
    "in",
    "initially",
    "intersect",
    "into",
    "lateral",
    "leading",
    "limit",
    "localtime",
    "localtimestamp",
    "not",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "placing",
    "primary",
    "references",
    "returning",
    "select",
    "session_user",
    "some",
    "symmetric",
    "system_user",
    "table",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "when",
    "where",
    "window",
    "with",
    // type_func_name_keyword
    "authorization",
    "binary",
    "collation",
    "concurrently",
    "cross",
    "current_schema",
    "freeze",
    "full",
    "ilike",
    "inner",
    "is",
    "isnull",
    "join",
    "left",
    "like",
    "natural",
    "notnull",
    "outer",
    "overlaps",
    "right",
    "similar",
    "tablesample",
    "verbose",
];

/// Words ending a FROM clause at its own parenthesis level.
const FROM_END: &[&str] = &[
    "where",
    "group",
    "having",
    "window",
    "order",
    "limit",
    "offset",
    "fetch",
    "for",
    "union",
    "intersect",
    "except",
    "returning",
    "when",
    "conflict",
    "into",
];

/// Words ending an expression at depth 0, whatever precedes them.
const EXPR_END: &[&str] = &[
    "where",
    "group",
    "having",
    "order",
    "limit",
    "offset",
    "fetch",
    "window",
    "union",
    "intersect",
    "except",
    "join",
    "inner",
    "left",
    "right",
    "full",
    "cross",
    "natural",
    "on",
    "using",
    "returning",
    "for",
    "as",
    "when",
    "then",
    "else",
    "end",
    "tablesample",
    "into",
];

/// Operator words: after them an operand is expected.
const EXPR_OPERATORS: &[&str] = &[
    "and",
    "or",
    "not",
    "is",
    "in",
    "like",
    "ilike",
    "similar",
    "between",
    "symmetric",
    "asymmetric",
    "at",
    "time",
    "collate",
    "escape",
    "distinct",
    "from",
    "to",
    "operator",
    "with",
    "without",
    "any",
    "some",
    "all",
    "overlaps",
];

/// Words that complete an operand (`IS NULL`, `x ISNULL`, `AT TIME ZONE`).
const EXPR_COMPLETE: &[&str] = &[
    "isnull", "notnull", "null", "true", "false", "unknown", "zone",
];

/// Fields of an interval literal (`interval '1' day`).
const INTERVAL_FIELDS: &[&str] = &["year", "month", "day", "hour", "minute", "second"];

fn is_word_in(t: &Token<'_>, words: &[&str]) -> bool {
    t.kind == TokenKind::Word
        && words
            .iter()
            .any(|w| t.text.eq_ignore_ascii_case(w.as_bytes()))
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn is_ident_cont(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// A time-travel clause the rewriter cannot turn into a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TimeTravelError {
    pub message: String,
    /// Byte offset in the input.
    pub position: usize,
}

/// Cheap pre-check without allocation: could `sql` contain a time-travel
/// clause?
///
/// True when `system_time` appears (any case), or `as` is followed by
/// whitespace and `of` (any case), or by a comment (which could hide the
/// `of` from this check). Never false when [`rewrite`] would rewrite
/// something; false positives are fine.
pub fn mentions_time_travel(sql: &[u8]) -> bool {
    if super::contains_ignore_ascii_case(sql, b"system_time") {
        return true;
    }
    let mut i = 0;
    while i + 2 <= sql.len() {
        if !sql[i..i + 2].eq_ignore_ascii_case(b"as") {
            i += 1;
            continue;
        }
        let mut j = i + 2;
        while sql.get(j).copied().is_some_and(is_space) {
            j += 1;
        }
        let rest = &sql[j..];
        if rest.starts_with(b"--") || rest.starts_with(b"/*") {
            return true;
        }
        if j > i + 2
            && rest.len() >= 2
            && rest[..2].eq_ignore_ascii_case(b"of")
            && !rest.get(2).copied().is_some_and(is_ident_cont)
        {
            return true;
        }
        // No `as` starts inside the whitespace just skipped.
        i = j;
    }
    false
}

/// Rewrites every time-travel clause of `sql` (one or several statements;
/// see the module documentation). `Ok(None)`: none found.
///
/// Never panics, whatever the bytes.
pub fn rewrite(
    sql: &[u8],
    standard_conforming_strings: bool,
) -> Result<Option<Rewritten>, TimeTravelError> {
    if !mentions_time_travel(sql) {
        return Ok(None);
    }
    run(sql, standard_conforming_strings, None)
}

/// For as-of sessions: [`rewrite`], and every plain table reference in a
/// FROM clause becomes `pgbranch_history.as_of(NULL::<name>,
/// (<at>)::pg_catalog.timestamptz, true) AS <alias or last name part>`; `at` is SQL
/// text (e.g. a quoted literal the caller built) inserted as it is. See
/// the module documentation for what is left alone. `Ok(None)` when
/// nothing was rewritten.
///
/// Never panics, whatever the bytes.
pub fn rewrite_session(
    sql: &[u8],
    standard_conforming_strings: bool,
    at: &str,
) -> Result<Option<Rewritten>, TimeTravelError> {
    // Every rewritten reference follows FROM, USING or TABLE.
    if !super::contains_ignore_ascii_case(sql, b"from")
        && !super::contains_ignore_ascii_case(sql, b"table")
        && !super::contains_ignore_ascii_case(sql, b"using")
    {
        return Ok(None);
    }
    run(sql, standard_conforming_strings, Some(at))
}

fn run(
    sql: &[u8],
    standard_conforming_strings: bool,
    at: Option<&str>,
) -> Result<Option<Rewritten>, TimeTravelError> {
    let toks: Vec<Token<'_>> =
        Lexer::with_standard_conforming_strings(sql, standard_conforming_strings).collect();
    let mut rw = Rewriter {
        src: sql,
        toks: &toks,
        at,
        ctes: Vec::new(),
        splice: Splice::new(sql),
    };
    let mut start = 0;
    let mut depth = 0u32;
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
        } else if t.is_punct(b';') && depth == 0 {
            rw.statement(start, i)?;
            start = i + 1;
        }
    }
    rw.statement(start, toks.len())?;
    Ok(rw.splice.finish())
}

/// What governs a parenthesis level: which keyword, if any, makes a FROM
/// or USING there start a list of FROM items.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Verb {
    #[default]
    None,
    Select,
    Update,
    Delete,
    Merge,
    /// INSERT, VALUES: no FROM clause of their own.
    Other,
}

/// The state of one parenthesis level.
#[derive(Debug, Default, Clone, Copy)]
struct Level {
    verb: Verb,
    /// Inside a FROM (or DELETE/MERGE USING) clause.
    in_from: bool,
    /// The next token starts a FROM item.
    expect_item: bool,
}

/// The time bounds of a clause, as token index ranges.
#[derive(Debug, Clone)]
enum Bounds {
    AsOf(Range<usize>),
    Versions {
        from: Range<usize>,
        to: Range<usize>,
        inclusive: bool,
    },
    All,
}

#[derive(Debug, Clone)]
struct Clause {
    bounds: Bounds,
    /// Index of the first token after the clause.
    end: usize,
}

/// A user alias after a table reference or its clause.
#[derive(Debug, Clone, Copy)]
struct Alias {
    /// Index of the alias token itself.
    tok: usize,
    /// Index of the first token after it.
    end: usize,
    /// Written with `AS`.
    with_as: bool,
}

/// Which of the two expression shapes ends at a depth-0 `AND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Until {
    Any,
    /// The lower bound of `BETWEEN a AND b`.
    And,
}

struct Rewriter<'a> {
    src: &'a [u8],
    toks: &'a [Token<'a>],
    /// The session's time, for [`rewrite_session`].
    at: Option<&'a str>,
    /// Normalised names of the current statement's CTEs (sessions only).
    ctes: Vec<Vec<u8>>,
    splice: Splice<'a>,
}

impl<'a> Rewriter<'a> {
    /// Replaces `range` of the original text with `text`. Ranges come in
    /// order and never overlap.
    fn replace(&mut self, range: Range<usize>, text: &[u8]) {
        let copied = self.splice.copied();
        debug_assert!(copied <= range.start && range.start <= range.end);
        let range = range.start.max(copied)..range.end.min(self.src.len());
        let range = range.start..range.end.max(range.start);
        self.splice
            .replace_with(range, |out| out.extend_from_slice(text));
    }

    /// Byte offset of token `i`, or the end of the input.
    fn pos(&self, i: usize) -> usize {
        self.toks.get(i).map_or(self.src.len(), |t| t.start)
    }

    fn error(&self, i: usize, message: impl Into<String>) -> TimeTravelError {
        TimeTravelError {
            message: message.into(),
            position: self.pos(i),
        }
    }

    /// The statement made of tokens `a..b`.
    fn statement(&mut self, a: usize, b: usize) -> Result<(), TimeTravelError> {
        let toks = self.toks;
        let Some(first) = toks.get(a).filter(|_| a < b) else {
            return Ok(());
        };
        // Privilege lists (`GRANT SELECT, UPDATE ON t`, `REVOKE ... FROM
        // role`) hold no queries.
        if first.is_word("grant")
            || first.is_word("revoke")
            || (first.is_word("alter") && toks.get(a + 1).is_some_and(|t| t.is_word("default")))
        {
            return Ok(());
        }
        self.ctes = if self.at.is_some() {
            cte_names(&toks[..b], a)
        } else {
            Vec::new()
        };
        self.scan(a, b, 0)
    }

    /// Finds and rewrites the FROM items among tokens `from..to`.
    fn scan(&mut self, from: usize, to: usize, nesting: usize) -> Result<(), TimeTravelError> {
        if nesting > MAX_NESTING {
            return Err(self.error(from, "time travel: clauses are nested too deeply"));
        }
        let toks = self.toks;
        let v = &toks[..to.min(toks.len())];
        let mut levels = vec![Level::default()];
        let mut i = from;
        while let Some(t) = v.get(i) {
            let Some(level) = levels.last_mut() else {
                break;
            };
            if std::mem::take(&mut level.expect_item) {
                if t.is_word("lateral") {
                    level.expect_item = true;
                    i += 1;
                    continue;
                }
                if t.is_word("rows") && v.get(i + 1).is_some_and(|n| n.is_word("from")) {
                    // ROWS FROM (f(...), ...): functions, not tables.
                    i += 2;
                    continue;
                }
                if t.is_punct(b'(') {
                    // A subquery (its SELECT resets the level) or a
                    // parenthesised join.
                    levels.push(Level {
                        verb: Verb::None,
                        in_from: true,
                        expect_item: true,
                    });
                    i += 1;
                    continue;
                }
                if let Some(next) = self.table_ref(i, i, to, nesting, false)? {
                    i = next;
                    continue;
                }
            }
            if t.is_punct(b')') {
                // A stray `)` does not leave the statement's level.
                if levels.len() > 1 {
                    levels.pop();
                }
                i += 1;
                continue;
            }
            match t.kind {
                TokenKind::Punct => match t.text.first() {
                    Some(b'(') => levels.push(Level::default()),
                    Some(b';') => *level = Level::default(),
                    Some(b',') if level.in_from => level.expect_item = true,
                    _ => {}
                },
                TokenKind::Word => {
                    if let Some(verb) = verb_at(toks, i) {
                        *level = Level {
                            verb,
                            ..Level::default()
                        };
                    } else if t.is_word("from") {
                        if matches!(level.verb, Verb::Select | Verb::Update)
                            && !after_is_distinct(toks, i)
                        {
                            level.in_from = true;
                            level.expect_item = true;
                        }
                    } else if t.is_word("using") {
                        if matches!(level.verb, Verb::Delete | Verb::Merge) && !level.in_from {
                            level.in_from = true;
                            level.expect_item = true;
                        }
                    } else if t.is_word("join") {
                        if level.in_from {
                            level.expect_item = true;
                        }
                    } else if level.in_from && is_word_in(t, FROM_END) {
                        level.in_from = false;
                    } else if t.is_word("table") && is_table_command(toks, i) {
                        if let Some(next) = self.table_ref(i, i + 1, to, nesting, true)? {
                            i = next;
                            continue;
                        }
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    /// A FROM item starting at token `i` (`start` is `i`, or the `TABLE`
    /// of a `TABLE name` command when `command`). Returns the index to
    /// continue from, or `None` when `i` does not start a table name.
    fn table_ref(
        &mut self,
        start: usize,
        i: usize,
        to: usize,
        nesting: usize,
        command: bool,
    ) -> Result<Option<usize>, TimeTravelError> {
        let toks = self.toks;
        let v = &toks[..to.min(toks.len())];
        let mut j = i;
        if v.get(j).is_some_and(|t| t.is_word("only")) {
            j += 1;
        }
        let first = j;
        if !v.get(j).is_some_and(is_name) {
            return Ok(None);
        }
        j += 1;
        let mut parts = 1;
        while parts < 3
            && v.get(j).is_some_and(|t| t.is_punct(b'.'))
            && v.get(j + 1).is_some_and(Token::is_identifier)
        {
            j += 2;
            parts += 1;
        }
        if v.get(j)
            .is_some_and(|t| t.is_punct(b'.') || t.is_punct(b'('))
        {
            // A function call (or something else than a table).
            return Ok(Some(j));
        }
        let last = j - 1;
        let name = toks[first].start..toks[last].end();
        let item_start = toks[start].start;

        if let Some(clause) = self.clause(j, to)? {
            let alias = if command {
                None
            } else {
                alias_at(v, clause.end)
            };
            let func = match clause.bounds {
                Bounds::AsOf(_) => "as_of",
                Bounds::Versions { .. } | Bounds::All => "versions",
            };
            self.prefix(item_start, name.start, command, func);
            match clause.bounds {
                Bounds::AsOf(e) => {
                    let (e_start, e_end) = (toks[e.start].start, toks[e.end - 1].end());
                    self.replace(name.end..e_start, b", (");
                    self.scan(e.start, e.end, nesting + 1)?;
                    let mut text = b")::pg_catalog.timestamptz, false)".to_vec();
                    text.extend(self.alias_suffix(e_end, alias, last));
                    self.replace(e_end..e_end, &text);
                }
                Bounds::Versions {
                    from: a,
                    to: b,
                    inclusive,
                } => {
                    let (a_start, a_end) = (toks[a.start].start, toks[a.end - 1].end());
                    let (b_start, b_end) = (toks[b.start].start, toks[b.end - 1].end());
                    self.replace(name.end..a_start, b", (");
                    self.scan(a.start, a.end, nesting + 1)?;
                    self.replace(a_end..b_start, b")::pg_catalog.timestamptz, (");
                    self.scan(b.start, b.end, nesting + 1)?;
                    let mut text = format!(")::pg_catalog.timestamptz, {inclusive})").into_bytes();
                    text.extend(self.alias_suffix(b_end, alias, last));
                    self.replace(b_end..b_end, &text);
                }
                Bounds::All => {
                    let end = toks[clause.end - 1].end();
                    let mut text =
                        b", '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true)".to_vec();
                    text.extend(self.alias_suffix(end, alias, last));
                    self.replace(name.end..end, &text);
                }
            }
            return Ok(Some(alias.map_or(clause.end, |a| a.end)));
        }

        let alias = if command { None } else { alias_at(v, j) };
        let next = alias.map_or(j, |a| a.end);
        let Some(at) = self.at else {
            return Ok(Some(next));
        };
        if self.excluded(first, last) {
            return Ok(Some(next));
        }
        if let Some(t) = v.get(next).filter(|t| t.is_word("tablesample")) {
            return Err(TimeTravelError {
                message: "time travel: TABLESAMPLE cannot be used in an as-of session".into(),
                position: t.start,
            });
        }
        self.prefix(item_start, name.start, command, "as_of");
        let mut text = format!(", ({at})::pg_catalog.timestamptz, true)").into_bytes();
        text.extend(self.alias_suffix(name.end, alias, last));
        self.replace(name.end..name.end, &text);
        Ok(Some(next))
    }

    /// Replaces `[TABLE] [ONLY]` before the name with the function call's
    /// opening.
    fn prefix(&mut self, item_start: usize, name_start: usize, command: bool, func: &str) {
        let mut text = Vec::with_capacity(64);
        if item_start > 0 && is_ident_cont(self.src[item_start - 1]) {
            text.push(b' ');
        }
        if command {
            text.extend_from_slice(b"SELECT * FROM ");
        }
        text.extend_from_slice(b"pgbranch_history.");
        text.extend_from_slice(func.as_bytes());
        text.extend_from_slice(b"(NULL::");
        self.replace(item_start..name_start, &text);
    }

    /// What follows the call's closing parenthesis, inserted at byte `p`:
    /// nothing before `AS alias`, `AS` before a bare alias, else `AS` and
    /// the name's last part (token `last`).
    fn alias_suffix(&self, p: usize, alias: Option<Alias>, last: usize) -> Vec<u8> {
        match alias {
            Some(a) if a.with_as => Vec::new(),
            Some(a) if self.toks[a.tok].start == p => b" AS ".to_vec(),
            Some(_) => b" AS".to_vec(),
            None => {
                let mut text = b" AS ".to_vec();
                text.extend_from_slice(self.toks[last].text);
                if self
                    .src
                    .get(p)
                    .is_some_and(|&b| is_ident_cont(b) || b == b'"')
                {
                    text.push(b' ');
                }
                text
            }
        }
    }

    /// Whether the plain name in tokens `first..=last` stays as it is in a
    /// session: a CTE, a catalog or pgbranch table.
    fn excluded(&self, first: usize, last: usize) -> bool {
        let toks = self.toks;
        let Some(name) = toks[last].identifier() else {
            return true;
        };
        if first == last {
            return name.starts_with(b"pg_") || self.ctes.iter().any(|c| **c == *name);
        }
        let Some(schema) = toks[last - 2].identifier() else {
            return true;
        };
        schema.starts_with(b"pg_")
            || *schema == *b"information_schema"
            || *schema == *b"pgbranch_history"
    }

    /// A time-travel clause starting at token `j`, if any.
    fn clause(&self, j: usize, to: usize) -> Result<Option<Clause>, TimeTravelError> {
        let toks = self.toks;
        let v = &toks[..to.min(toks.len())];
        let word = |k: usize, w: &str| v.get(k).is_some_and(|t| t.is_word(w));
        if word(j, "as") && word(j + 1, "of") {
            return self.as_of(v, j + 2, "AS OF").map(Some);
        }
        if !(word(j, "for") && word(j + 1, "system_time")) {
            return Ok(None);
        }
        let k = j + 2;
        if word(k, "as") && word(k + 1, "of") {
            return self.as_of(v, k + 2, "FOR SYSTEM_TIME AS OF").map(Some);
        }
        if word(k, "all") {
            return Ok(Some(Clause {
                bounds: Bounds::All,
                end: k + 1,
            }));
        }
        if word(k, "from") {
            let a = self.expression(v, k + 1, Until::Any, "FOR SYSTEM_TIME FROM")?;
            if !word(a.end, "to") {
                return Err(self.error(
                    a.end,
                    "time travel: expected TO after FOR SYSTEM_TIME FROM <timestamp>",
                ));
            }
            let b = self.expression(v, a.end + 1, Until::Any, "TO")?;
            let end = b.end;
            return Ok(Some(Clause {
                bounds: Bounds::Versions {
                    from: a,
                    to: b,
                    inclusive: false,
                },
                end,
            }));
        }
        if word(k, "between") {
            let mut s = k + 1;
            if word(s, "symmetric") {
                return Err(self.error(
                    s,
                    "time travel: FOR SYSTEM_TIME BETWEEN SYMMETRIC is not supported",
                ));
            }
            if word(s, "asymmetric") {
                s += 1;
            }
            let a = self.expression(v, s, Until::And, "FOR SYSTEM_TIME BETWEEN")?;
            if !word(a.end, "and") {
                return Err(self.error(
                    a.end,
                    "time travel: expected AND after FOR SYSTEM_TIME BETWEEN <timestamp>",
                ));
            }
            let b = self.expression(v, a.end + 1, Until::Any, "AND")?;
            let end = b.end;
            return Ok(Some(Clause {
                bounds: Bounds::Versions {
                    from: a,
                    to: b,
                    inclusive: true,
                },
                end,
            }));
        }
        Err(self.error(
            k,
            "time travel: FOR SYSTEM_TIME must be followed by AS OF, FROM ... TO, BETWEEN ... AND or ALL",
        ))
    }

    /// `[TIMESTAMP] expr` from token `k`, after `AS OF`.
    fn as_of(&self, v: &[Token<'_>], mut k: usize, what: &str) -> Result<Clause, TimeTravelError> {
        if v.get(k).is_some_and(|t| t.is_word("timestamp")) {
            k += 1;
        }
        let e = self.expression(v, k, Until::Any, what)?;
        let end = e.end;
        Ok(Clause {
            bounds: Bounds::AsOf(e),
            end,
        })
    }

    /// The non-empty expression starting at token `k`.
    fn expression(
        &self,
        v: &[Token<'_>],
        k: usize,
        until: Until,
        after: &str,
    ) -> Result<Range<usize>, TimeTravelError> {
        let end = expression_end(v, k, until);
        if end <= k {
            return Err(self.error(
                k,
                format!("time travel: expected a timestamp expression after {after}"),
            ));
        }
        Ok(k..end)
    }
}

/// Whether `t` can be (the first part of) a table name.
fn is_name(t: &Token<'_>) -> bool {
    match t.kind {
        TokenKind::QuotedIdent => true,
        TokenKind::Word => !is_word_in(t, RESERVED),
        _ => false,
    }
}

/// A user alias at token `j`: `AS name`, a quoted identifier, or a word
/// that is not a reserved keyword.
fn alias_at(v: &[Token<'_>], j: usize) -> Option<Alias> {
    let t = v.get(j)?;
    if t.is_word("as") {
        return v.get(j + 1).filter(|n| n.is_identifier()).map(|_| Alias {
            tok: j + 1,
            end: j + 2,
            with_as: true,
        });
    }
    is_name(t).then_some(Alias {
        tok: j,
        end: j + 1,
        with_as: false,
    })
}

/// Whether the word at `i` starts a command with (or resetting) a FROM
/// clause, and which.
fn verb_at(toks: &[Token<'_>], i: usize) -> Option<Verb> {
    let t = &toks[i];
    let prev = i.checked_sub(1).map(|k| &toks[k]);
    let prev2 = i.checked_sub(2).map(|k| &toks[k]);
    let after = |w: &str| prev.is_some_and(|p| p.is_word(w));
    let after_comma = prev.is_some_and(|p| p.is_punct(b','));
    if t.is_word("select") {
        // CREATE POLICY ... FOR SELECT, CREATE RULE ... ON SELECT; but
        // DECLARE c CURSOR [WITH HOLD] FOR SELECT.
        let cursor = prev2.is_some_and(|p| p.is_word("cursor") || p.is_word("hold"));
        let not = (after("for") && !cursor) || after("on") || after_comma;
        return (!not).then_some(Verb::Select);
    }
    if t.is_word("update") || t.is_word("delete") {
        // FOR [NO KEY] UPDATE, ON DELETE CASCADE, BEFORE UPDATE OR DELETE,
        // INSTEAD OF UPDATE.
        let not = ["for", "key", "on", "or", "before", "after", "of"]
            .iter()
            .any(|w| after(w))
            || after_comma;
        if not {
            return None;
        }
        return Some(if t.is_word("update") {
            Verb::Update
        } else {
            Verb::Delete
        });
    }
    if t.is_word("merge") {
        return Some(Verb::Merge);
    }
    if t.is_word("insert") || t.is_word("values") {
        return Some(Verb::Other);
    }
    None
}

/// Whether the FROM at `i` is the one of `IS [NOT] DISTINCT FROM`.
fn after_is_distinct(toks: &[Token<'_>], i: usize) -> bool {
    i >= 2
        && toks[i - 1].is_word("distinct")
        && (toks[i - 2].is_word("is") || toks[i - 2].is_word("not"))
}

/// Whether the `TABLE` at `i` is the `TABLE name` command (not `CREATE
/// TABLE`, `LOCK TABLE`, `RETURNS TABLE`, ...).
fn is_table_command(toks: &[Token<'_>], i: usize) -> bool {
    let Some(prev) = i.checked_sub(1).map(|k| &toks[k]) else {
        return true;
    };
    if prev.is_punct(b';') || prev.is_punct(b'(') || prev.is_punct(b')') {
        return true;
    }
    if prev.is_word("for") {
        return i >= 2 && (toks[i - 2].is_word("cursor") || toks[i - 2].is_word("hold"));
    }
    is_word_in(
        prev,
        &[
            "union",
            "intersect",
            "except",
            "all",
            "distinct",
            "as",
            "explain",
            "analyze",
            "analyse",
            "verbose",
            "instead",
            "also",
        ],
    )
}

/// Index just past the parenthesised group opening at `k`.
fn skip_group(v: &[Token<'_>], k: usize) -> usize {
    let mut depth = 0usize;
    for (j, t) in v.iter().enumerate().skip(k) {
        if t.is_punct(b'(') {
            depth += 1;
        } else if t.is_punct(b')') {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return j + 1;
            }
        }
    }
    v.len()
}

/// The normalised names of the CTEs defined in the statement starting at
/// token `a` (to the end of `v`).
fn cte_names(v: &[Token<'_>], a: usize) -> Vec<Vec<u8>> {
    let word = |k: usize, w: &str| v.get(k).is_some_and(|t| t.is_word(w));
    let punct = |k: usize, c: u8| v.get(k).is_some_and(|t| t.is_punct(c));
    let mut names = Vec::new();
    for i in a..v.len() {
        if !v[i].is_word("with") {
            continue;
        }
        let mut j = i + 1;
        if word(j, "recursive") {
            j += 1;
        }
        while let Some(name) = v.get(j).filter(|t| t.is_identifier()) {
            let mut k = j + 1;
            if punct(k, b'(') {
                k = skip_group(v, k);
            }
            if !word(k, "as") {
                break;
            }
            k += 1;
            if word(k, "not") {
                k += 1;
            }
            if word(k, "materialized") {
                k += 1;
            }
            if !punct(k, b'(') {
                break;
            }
            k = skip_group(v, k);
            if let Some(n) = name.identifier() {
                names.push(n.into_owned());
            }
            // SEARCH ... SET col, CYCLE ... USING col
            for (clause, last) in [("search", "set"), ("cycle", "using")] {
                if word(k, clause) {
                    while k < v.len() && !word(k, last) {
                        k += 1;
                    }
                    k += 2;
                }
            }
            if !punct(k, b',') {
                break;
            }
            j = k + 1;
        }
    }
    names
}

/// Index just past a type name after `::` at `i` (`timestamptz`,
/// `pg_catalog.timestamp(3) with time zone`, `double precision`, `int[]`).
fn skip_type(v: &[Token<'_>], mut i: usize) -> usize {
    let word = |k: usize, w: &str| v.get(k).is_some_and(|t| t.is_word(w));
    let punct = |k: usize, c: u8| v.get(k).is_some_and(|t| t.is_punct(c));
    let Some(first) = v.get(i).filter(|t| t.is_identifier()) else {
        return i;
    };
    i += 1;
    while punct(i, b'.') && v.get(i + 1).is_some_and(Token::is_identifier) {
        i += 2;
    }
    if first.is_word("double") && word(i, "precision") {
        i += 1;
    }
    if word(i, "varying") {
        i += 1;
    }
    if punct(i, b'(') {
        i = skip_group(v, i);
    }
    if (word(i, "with") || word(i, "without")) && word(i + 1, "time") && word(i + 2, "zone") {
        i += 3;
    }
    loop {
        if punct(i, b'[') {
            let mut k = i + 1;
            if v.get(k).is_some_and(|t| t.kind == TokenKind::Number) {
                k += 1;
            }
            if !punct(k, b']') {
                break;
            }
            i = k + 1;
        } else if word(i, "array") {
            i += 1;
        } else {
            break;
        }
    }
    i
}

/// Index of the first token after the expression starting at `k`; `k`
/// itself when it is empty. See the module documentation for the rules.
fn expression_end(v: &[Token<'_>], k: usize, until: Until) -> usize {
    // Nesting of ( [ and CASE relative to the start.
    let mut depth = 0usize;
    // A complete operand precedes, at depth 0.
    let mut operand = false;
    // That operand is an interval literal (`interval '1' day`).
    let mut interval = false;
    let mut i = k;
    while let Some(t) = v.get(i) {
        if depth > 0 {
            if t.is_punct(b'(') || t.is_punct(b'[') || t.is_word("case") {
                depth += 1;
            } else if t.is_punct(b')') || t.is_punct(b']') || t.is_word("end") {
                depth -= 1;
                if depth == 0 {
                    operand = true;
                    interval = false;
                }
            }
            i += 1;
            continue;
        }
        let next = v.get(i + 1);
        match t.kind {
            TokenKind::Punct => match t.text.first() {
                Some(b',' | b')' | b';') => break,
                Some(b'(' | b'[') => depth = 1,
                Some(b']') => operand = true,
                Some(b':') if next.is_some_and(|n| n.is_punct(b':') && n.start == t.end()) => {
                    i = skip_type(v, i + 2);
                    operand = true;
                    interval = false;
                    continue;
                }
                _ => operand = false,
            },
            TokenKind::Word => {
                let prev_is = |w: &str| i > 0 && v[i - 1].is_word(w);
                let stops = is_word_in(t, EXPR_END)
                    || (t.is_word("from") && !after_is_distinct(v, i))
                    || (t.is_word("to")
                        && !prev_is("similar")
                        && !(interval && i > 0 && is_word_in(&v[i - 1], INTERVAL_FIELDS)))
                    || (until == Until::And && t.is_word("and"));
                if stops {
                    break;
                }
                if operand {
                    if is_word_in(t, EXPR_OPERATORS) {
                        operand = false;
                        interval = interval && t.is_word("to");
                    } else if is_word_in(t, EXPR_COMPLETE) {
                        interval = false;
                    } else if interval && is_word_in(t, INTERVAL_FIELDS) {
                        // still the interval literal
                    } else {
                        // An identifier after a complete operand: an alias.
                        break;
                    }
                } else if next.is_some_and(|n| n.kind == TokenKind::String) {
                    // A typed literal: `interval '1 hour'`.
                    operand = true;
                    interval = t.is_word("interval");
                    i += 2;
                    continue;
                } else if is_word_in(t, EXPR_OPERATORS) {
                    // A prefix (`NOT x`) or the middle of an operator
                    // (`IS DISTINCT FROM`, `AT TIME ZONE`).
                    if !(interval && t.is_word("to")) {
                        interval = false;
                    }
                } else if t.is_word("case") {
                    depth = 1;
                } else if next.is_some_and(|n| n.is_punct(b'(')) {
                    // A function call: the group completes it.
                } else if interval && is_word_in(t, INTERVAL_FIELDS) {
                    // `interval '1' day to hour`
                    operand = true;
                } else {
                    operand = true;
                    interval = false;
                }
            }
            TokenKind::QuotedIdent => {
                if operand {
                    break;
                }
                operand = !next.is_some_and(|n| n.is_punct(b'('));
                interval = false;
            }
            TokenKind::String | TokenKind::DollarString | TokenKind::Number | TokenKind::Param => {
                operand = true;
                interval = false;
            }
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks that applying `r.edits` to `input` gives `r.sql`.
    fn check_edits(input: &[u8], r: &Rewritten) {
        let mut out = 0;
        let mut last = 0;
        for &(at, removed, inserted) in &r.edits {
            assert!(at >= last, "edits out of order: {:?}", r.edits);
            let kept = &input[last..at];
            assert_eq!(&r.sql[out..out + kept.len()], kept, "{:?}", r.edits);
            out += kept.len() + inserted;
            last = at + removed;
        }
        assert_eq!(&r.sql[out..], &input[last..], "{:?}", r.edits);
    }

    fn rw(sql: &str) -> String {
        let r = rewrite(sql.as_bytes(), true)
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .unwrap_or_else(|| panic!("no rewrite: {sql}"));
        check_edits(sql.as_bytes(), &r);
        String::from_utf8(r.sql).unwrap()
    }

    fn unchanged(sql: &str) {
        assert_eq!(rewrite(sql.as_bytes(), true), Ok(None), "{sql}");
    }

    fn err(sql: &str) -> TimeTravelError {
        match rewrite(sql.as_bytes(), true) {
            Err(e) => e,
            other => panic!("{sql}: expected an error, got {other:?}"),
        }
    }

    const AT: &str = "'2026-01-01 00:00:00+00'";

    fn session(sql: &str) -> String {
        match rewrite_session(sql.as_bytes(), true, AT).unwrap_or_else(|e| panic!("{sql}: {e:?}")) {
            Some(r) => {
                check_edits(sql.as_bytes(), &r);
                String::from_utf8(r.sql).unwrap()
            }
            None => sql.to_string(),
        }
    }

    #[test]
    fn as_of_forms() {
        let want = "SELECT * FROM pgbranch_history.as_of(NULL::orders, ('2026-01-01')::pg_catalog.timestamptz, false) AS orders WHERE id = 1";
        for sql in [
            "SELECT * FROM orders AS OF TIMESTAMP '2026-01-01' WHERE id = 1",
            "SELECT * FROM orders AS OF '2026-01-01' WHERE id = 1",
            "SELECT * FROM orders FOR SYSTEM_TIME AS OF '2026-01-01' WHERE id = 1",
            "SELECT * FROM orders FOR SYSTEM_TIME AS OF TIMESTAMP '2026-01-01' WHERE id = 1",
            "SELECT * FROM orders as of timestamp '2026-01-01' WHERE id = 1",
            "SELECT * FROM orders for system_time as of '2026-01-01' WHERE id = 1",
        ] {
            assert_eq!(rw(sql), want, "{sql}");
        }
    }

    #[test]
    fn from_to() {
        assert_eq!(
            rw("SELECT * FROM orders FOR SYSTEM_TIME FROM '2026-01-01' TO now() ORDER BY 1"),
            "SELECT * FROM pgbranch_history.versions(NULL::orders, ('2026-01-01')::pg_catalog.timestamptz, (now())::pg_catalog.timestamptz, false) AS orders ORDER BY 1"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR SYSTEM_TIME FROM $1 TO $2"),
            "SELECT * FROM pgbranch_history.versions(NULL::t, ($1)::pg_catalog.timestamptz, ($2)::pg_catalog.timestamptz, false) AS t"
        );
    }

    #[test]
    fn between_and() {
        assert_eq!(
            rw("SELECT * FROM orders FOR SYSTEM_TIME BETWEEN now() - interval '1 day' AND now() h"),
            "SELECT * FROM pgbranch_history.versions(NULL::orders, (now() - interval '1 day')::pg_catalog.timestamptz, (now())::pg_catalog.timestamptz, true) AS h"
        );
        assert_eq!(
            rw("SELECT * FROM t FOR SYSTEM_TIME BETWEEN ASYMMETRIC (1 AND 2) AND '2026-01-01' AND x"),
            "SELECT * FROM pgbranch_history.versions(NULL::t, ((1 AND 2))::pg_catalog.timestamptz, ('2026-01-01' AND x)::pg_catalog.timestamptz, true) AS t"
        );
    }

    #[test]
    fn all() {
        assert_eq!(
            rw("SELECT * FROM orders FOR SYSTEM_TIME ALL WHERE id = 1"),
            "SELECT * FROM pgbranch_history.versions(NULL::orders, '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true) AS orders WHERE id = 1"
        );
        assert_eq!(
            rw("SELECT * FROM orders FOR SYSTEM_TIME ALL AS h"),
            "SELECT * FROM pgbranch_history.versions(NULL::orders, '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true) AS h"
        );
    }

    #[test]
    fn qualified_and_quoted_names() {
        assert_eq!(
            rw("SELECT orders.id FROM public.orders AS OF $1"),
            "SELECT orders.id FROM pgbranch_history.as_of(NULL::public.orders, ($1)::pg_catalog.timestamptz, false) AS orders"
        );
        assert_eq!(
            rw(r#"SELECT * FROM "Sales"."Mixed" AS OF '2026-01-01'"#),
            r#"SELECT * FROM pgbranch_history.as_of(NULL::"Sales"."Mixed", ('2026-01-01')::pg_catalog.timestamptz, false) AS "Mixed""#
        );
        assert_eq!(
            rw(r#"SELECT * FROM "Mixed" FOR SYSTEM_TIME ALL"#),
            r#"SELECT * FROM pgbranch_history.versions(NULL::"Mixed", '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true) AS "Mixed""#
        );
        assert_eq!(
            rw("SELECT * FROM ONLY public.orders AS OF $1"),
            "SELECT * FROM pgbranch_history.as_of(NULL::public.orders, ($1)::pg_catalog.timestamptz, false) AS orders"
        );
        assert_eq!(
            rw("SELECT * FROM db.s.t AS OF $1"),
            "SELECT * FROM pgbranch_history.as_of(NULL::db.s.t, ($1)::pg_catalog.timestamptz, false) AS t"
        );
    }

    #[test]
    fn user_alias_with_and_without_as() {
        assert_eq!(
            rw("SELECT o.id FROM orders AS OF $1 AS o WHERE o.id = 1"),
            "SELECT o.id FROM pgbranch_history.as_of(NULL::orders, ($1)::pg_catalog.timestamptz, false) AS o WHERE o.id = 1"
        );
        assert_eq!(
            rw("SELECT o.id FROM orders AS OF $1 o WHERE o.id = 1"),
            "SELECT o.id FROM pgbranch_history.as_of(NULL::orders, ($1)::pg_catalog.timestamptz, false) AS o WHERE o.id = 1"
        );
        assert_eq!(
            rw(r#"SELECT * FROM orders AS OF $1 "O""#),
            r#"SELECT * FROM pgbranch_history.as_of(NULL::orders, ($1)::pg_catalog.timestamptz, false) AS "O""#
        );
        // A column alias list stays after the alias.
        assert_eq!(
            rw("SELECT * FROM t AS OF $1 AS x(a, b)"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS x(a, b)"
        );
    }

    #[test]
    fn two_tables_with_different_times() {
        assert_eq!(
            rw("SELECT * FROM a AS OF TIMESTAMP '2026-01-01' JOIN b FOR SYSTEM_TIME AS OF now() - interval '1 day' ON a.id = b.id, c AS OF $1 x LEFT JOIN d ON true"),
            "SELECT * FROM pgbranch_history.as_of(NULL::a, ('2026-01-01')::pg_catalog.timestamptz, false) AS a JOIN pgbranch_history.as_of(NULL::b, (now() - interval '1 day')::pg_catalog.timestamptz, false) AS b ON a.id = b.id, pgbranch_history.as_of(NULL::c, ($1)::pg_catalog.timestamptz, false) AS x LEFT JOIN d ON true"
        );
    }

    #[test]
    fn subquery_and_cte() {
        assert_eq!(
            rw("SELECT * FROM (SELECT id FROM orders AS OF $1) s WHERE s.id IN (SELECT id FROM t AS OF $2)"),
            "SELECT * FROM (SELECT id FROM pgbranch_history.as_of(NULL::orders, ($1)::pg_catalog.timestamptz, false) AS orders) s WHERE s.id IN (SELECT id FROM pgbranch_history.as_of(NULL::t, ($2)::pg_catalog.timestamptz, false) AS t)"
        );
        assert_eq!(
            rw("WITH old AS (SELECT * FROM orders AS OF '2026-01-01') SELECT * FROM old JOIN orders USING (id)"),
            "WITH old AS (SELECT * FROM pgbranch_history.as_of(NULL::orders, ('2026-01-01')::pg_catalog.timestamptz, false) AS orders) SELECT * FROM old JOIN orders USING (id)"
        );
        // A parenthesised join.
        assert_eq!(
            rw("SELECT * FROM (a AS OF $1 JOIN b ON true)"),
            "SELECT * FROM (pgbranch_history.as_of(NULL::a, ($1)::pg_catalog.timestamptz, false) AS a JOIN b ON true)"
        );
    }

    #[test]
    fn other_statements() {
        assert_eq!(
            rw("INSERT INTO t SELECT * FROM t AS OF $1 WHERE id = 1"),
            "INSERT INTO t SELECT * FROM pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS t WHERE id = 1"
        );
        assert_eq!(
            rw("UPDATE t SET a = o.a FROM t AS OF $1 o WHERE o.id = t.id"),
            "UPDATE t SET a = o.a FROM pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS o WHERE o.id = t.id"
        );
        assert_eq!(
            rw("DELETE FROM t USING t AS OF $1 AS o WHERE o.id = t.id"),
            "DELETE FROM t USING pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS o WHERE o.id = t.id"
        );
        assert_eq!(
            rw("SELECT 1; TABLE t AS OF $1; SELECT * FROM u AS OF $2"),
            "SELECT 1; SELECT * FROM pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS t; SELECT * FROM pgbranch_history.as_of(NULL::u, ($2)::pg_catalog.timestamptz, false) AS u"
        );
    }

    #[test]
    fn expression_extent() {
        let base = "SELECT * FROM t AS OF now() - interval '1 hour'";
        let call =
            "pgbranch_history.as_of(NULL::t, (now() - interval '1 hour')::pg_catalog.timestamptz, false)";
        assert_eq!(
            rw(&format!("{base} WHERE x = 1")),
            format!("SELECT * FROM {call} AS t WHERE x = 1")
        );
        assert_eq!(
            rw(&format!("{base} o WHERE o.x = 1")),
            format!("SELECT * FROM {call} AS o WHERE o.x = 1")
        );
        assert_eq!(
            rw(&format!("{base}, u")),
            format!("SELECT * FROM {call} AS t, u")
        );
        assert_eq!(
            rw(&format!("SELECT * FROM ({base}) s")),
            format!("SELECT * FROM (SELECT * FROM {call} AS t) s")
        );
        assert_eq!(
            rw(&format!("{base};")),
            format!("SELECT * FROM {call} AS t;")
        );
        // Casts, AT TIME ZONE, CASE, typed literals, IS DISTINCT FROM.
        assert_eq!(
            rw("SELECT * FROM t AS OF '2026-01-01'::timestamp with time zone AT TIME ZONE 'UTC' x"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, ('2026-01-01'::timestamp with time zone AT TIME ZONE 'UTC')::pg_catalog.timestamptz, false) AS x"
        );
        assert_eq!(
            rw("SELECT * FROM t AS OF CASE WHEN $1 IS NULL THEN now() ELSE $1 END x"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, (CASE WHEN $1 IS NULL THEN now() ELSE $1 END)::pg_catalog.timestamptz, false) AS x"
        );
        assert_eq!(
            rw("SELECT * FROM t AS OF $1::timestamptz(3) + interval '1' day x"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, ($1::timestamptz(3) + interval '1' day)::pg_catalog.timestamptz, false) AS x"
        );
        assert_eq!(
            rw("SELECT * FROM t AS OF (SELECT max(ts) FROM log AS OF $1)"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, ((SELECT max(ts) FROM pgbranch_history.as_of(NULL::log, ($1)::pg_catalog.timestamptz, false) AS log))::pg_catalog.timestamptz, false) AS t"
        );
        // No space between the expression and what follows.
        assert_eq!(
            rw("SELECT * FROM t AS OF '2026-01-01'o"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, ('2026-01-01')::pg_catalog.timestamptz, false) AS o"
        );
        assert_eq!(
            rw("SELECT * FROM\"t\" AS OF $1)"),
            "SELECT * FROM pgbranch_history.as_of(NULL::\"t\", ($1)::pg_catalog.timestamptz, false) AS \"t\")"
        );
    }

    #[test]
    fn comments_and_strings_are_kept() {
        // Comments between the clause's keywords go with them; the others
        // stay.
        assert_eq!(
            rw("SELECT '--AS OF x' /* AS OF y */ FROM t /* c */ AS OF /* when */ $1 -- AS OF\n WHERE 1=1"),
            "SELECT '--AS OF x' /* AS OF y */ FROM pgbranch_history.as_of(NULL::t, ($1)::pg_catalog.timestamptz, false) AS t -- AS OF\n WHERE 1=1"
        );
        assert_eq!(
            rw("SELECT * FROM t AS OF now() /* a */ - /* b */ interval '1 day' -- c\n x"),
            "SELECT * FROM pgbranch_history.as_of(NULL::t, (now() /* a */ - /* b */ interval '1 day')::pg_catalog.timestamptz, false) AS -- c\n x"
        );
    }

    #[test]
    fn text_in_strings_comments_dollar_quotes_is_unchanged() {
        unchanged("SELECT 'FROM t AS OF now()' FROM t");
        unchanged("SELECT 1 FROM t -- FROM t AS OF now()\n");
        unchanged("SELECT 1 FROM t /* FROM u FOR SYSTEM_TIME ALL */");
        unchanged("SELECT $$ FROM t AS OF now() $$ FROM t");
        unchanged("DO $body$ BEGIN PERFORM * FROM t AS OF now(); END $body$");
        unchanged("SELECT E'\\' FROM t AS OF now()' FROM t");
        unchanged("SELECT \"FROM t AS OF now()\" FROM t");
    }

    #[test]
    fn as_of_elsewhere_is_unchanged() {
        unchanged("SELECT 1 AS of");
        unchanged("SELECT x AS \"of\" FROM t");
        unchanged("SELECT CAST(x AS of) FROM t");
        unchanged("CREATE TABLE t2 AS SELECT 1 AS of");
        unchanged("SELECT a AS of, b FROM t");
        unchanged("SELECT * FROM f(1) AS OF");
        unchanged("SELECT * FROM (SELECT 1) AS of");
        // An alias before the clause is not supported: left alone.
        unchanged("SELECT * FROM t x AS OF now()");
        unchanged("SELECT * FROM t AS x FOR SYSTEM_TIME ALL");
        // FOR UPDATE is a locking clause.
        unchanged("SELECT * FROM t FOR UPDATE");
    }

    #[test]
    fn errors_have_positions() {
        let e = err("SELECT * FROM t AS OF WHERE x");
        assert_eq!(e.position, 22);
        assert!(e.message.contains("AS OF"), "{e}");
        let e = err("SELECT * FROM t AS OF TIMESTAMP");
        assert_eq!(e.position, 31);
        let e = err("SELECT * FROM t FOR SYSTEM_TIME CONTAINED IN (1)");
        assert_eq!(e.position, 32);
        assert!(
            e.message.contains("FOR SYSTEM_TIME must be followed"),
            "{e}"
        );
        let e = err("SELECT * FROM t FOR SYSTEM_TIME BETWEEN SYMMETRIC a AND b");
        assert_eq!(e.position, 40);
        assert!(e.message.contains("SYMMETRIC"), "{e}");
        let e = err("SELECT * FROM t FOR SYSTEM_TIME FROM now() WHERE x");
        assert_eq!(e.position, 43);
        assert!(e.message.contains("expected TO"), "{e}");
        let e = err("SELECT * FROM t FOR SYSTEM_TIME BETWEEN now() ");
        assert_eq!(e.position, 46);
        assert!(e.message.contains("expected AND"), "{e}");
        let e = err("SELECT * FROM t FOR SYSTEM_TIME FROM now() TO ;");
        assert_eq!(e.position, 46);
        assert!(e.message.contains("after TO"), "{e}");
        let e = err("SELECT 1; SELECT * FROM t AS OF )");
        assert_eq!(e.position, 32);
        assert_eq!(e.to_string(), e.message);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut sql = String::new();
        for _ in 0..100 {
            sql.push_str("SELECT * FROM t AS OF (");
        }
        sql.push_str("now()");
        for _ in 0..100 {
            sql.push(')');
        }
        let e = err(&sql);
        assert!(e.message.contains("nested"), "{e}");
    }

    #[test]
    fn precheck() {
        assert!(mentions_time_travel(b"select * from t as of now()"));
        assert!(mentions_time_travel(b"select * from t AS\n\tOF now()"));
        assert!(mentions_time_travel(b"select * from t As/**/Of now()"));
        assert!(mentions_time_travel(b"select * from t for System_Time all"));
        assert!(!mentions_time_travel(b"select * from t as offset"));
        assert!(!mentions_time_travel(b"select * from t"));
        assert!(!mentions_time_travel(b"select 1 asof"));
        assert!(!mentions_time_travel(b""));
        assert!(!mentions_time_travel(b"as"));
        // The pre-check and the rewrite agree.
        for sql in [
            "SELECT * FROM t AS -- x\n OF now()",
            "SELECT * FROM t AS/*x*/OF now()",
        ] {
            assert!(mentions_time_travel(sql.as_bytes()));
            assert!(rewrite(sql.as_bytes(), true).unwrap().is_some(), "{sql}");
        }
    }

    #[test]
    fn standard_conforming_strings_off() {
        // With backslash escapes the string swallows the clause.
        let sql = b"SELECT 'a\\' FROM t AS OF now() '";
        assert_eq!(rewrite(sql, false), Ok(None));
        assert!(rewrite(sql, true).unwrap().is_some());
    }

    #[test]
    fn session_wraps_plain_tables() {
        let at = "('2026-01-01 00:00:00+00')::pg_catalog.timestamptz, true)";
        assert_eq!(
            session("SELECT * FROM orders WHERE id = 1"),
            format!(
                "SELECT * FROM pgbranch_history.as_of(NULL::orders, {at} AS orders WHERE id = 1"
            )
        );
        assert_eq!(
            session("SELECT * FROM public.orders o JOIN \"Items\" AS i ON i.o = o.id, x"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::public.orders, {at} AS o JOIN pgbranch_history.as_of(NULL::\"Items\", {at} AS i ON i.o = o.id, pgbranch_history.as_of(NULL::x, {at} AS x")
        );
        assert_eq!(
            session("SELECT * FROM ONLY t"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::t, {at} AS t")
        );
        // Subqueries at any depth, UPDATE ... FROM, DELETE ... USING; not
        // the targets.
        assert_eq!(
            session("UPDATE t SET a = (SELECT max(a) FROM u) FROM v WHERE t.id = v.id"),
            format!("UPDATE t SET a = (SELECT max(a) FROM pgbranch_history.as_of(NULL::u, {at} AS u) FROM pgbranch_history.as_of(NULL::v, {at} AS v WHERE t.id = v.id")
        );
        assert_eq!(
            session("DELETE FROM t USING u WHERE t.id = u.id"),
            format!(
                "DELETE FROM t USING pgbranch_history.as_of(NULL::u, {at} AS u WHERE t.id = u.id"
            )
        );
        assert_eq!(
            session("TABLE t; TABLE pg_class"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::t, {at} AS t; TABLE pg_class")
        );
        assert_eq!(
            session("SELECT * FROM a NATURAL JOIN b CROSS JOIN LATERAL (SELECT * FROM c) s"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::a, {at} AS a NATURAL JOIN pgbranch_history.as_of(NULL::b, {at} AS b CROSS JOIN LATERAL (SELECT * FROM pgbranch_history.as_of(NULL::c, {at} AS c) s")
        );
    }

    #[test]
    fn session_leaves_ctes_functions_and_catalogs() {
        for sql in [
            "WITH x AS (SELECT 1), y (a) AS MATERIALIZED (SELECT 2) SELECT * FROM x, y",
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) SELECT * FROM r",
            "SELECT * FROM generate_series(1, 3) g, public.f(2), LATERAL unnest(ARRAY[1]) u",
            "SELECT * FROM ROWS FROM (generate_series(1, 2), f(3)) AS r(a, b)",
            "SELECT * FROM pg_catalog.pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace",
            "SELECT * FROM information_schema.tables",
            "SELECT * FROM (VALUES (1, 2), (3, 4)) v(a, b)",
            "SELECT extract(epoch FROM ts), a IS DISTINCT FROM b, substring(s FROM 1 FOR 2)",
            "GRANT SELECT, UPDATE ON t TO r",
            "REVOKE SELECT ON t FROM bob",
            "COPY t FROM stdin",
            "CREATE TABLE t (a int)",
            "SELECT 1",
            "DELETE FROM t WHERE id = 1",
            "CREATE STATISTICS s ON a, b FROM t",
            "LOCK TABLE t",
        ] {
            assert_eq!(session(sql), sql, "{sql}");
        }
        let at = "('2026-01-01 00:00:00+00')::pg_catalog.timestamptz, true)";
        assert_eq!(
            session("WITH x AS (SELECT * FROM t) SELECT * FROM x JOIN y USING (id)"),
            format!("WITH x AS (SELECT * FROM pgbranch_history.as_of(NULL::t, {at} AS t) SELECT * FROM x JOIN pgbranch_history.as_of(NULL::y, {at} AS y USING (id)")
        );
        assert_eq!(
            session("SELECT * FROM t WHERE a IS DISTINCT FROM b AND c IN (SELECT c FROM u)"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::t, {at} AS t WHERE a IS DISTINCT FROM b AND c IN (SELECT c FROM pgbranch_history.as_of(NULL::u, {at} AS u)")
        );
    }

    #[test]
    fn session_other_commands() {
        let at = "('2026-01-01 00:00:00+00')::pg_catalog.timestamptz, true)";
        let w = |n: &str| format!("pgbranch_history.as_of(NULL::{n}, {at} AS {n}");
        for (sql, want) in [
            (
                "INSERT INTO t (a) SELECT a FROM u ON CONFLICT (a) DO UPDATE SET b = excluded.b, c = 1",
                format!("INSERT INTO t (a) SELECT a FROM {} ON CONFLICT (a) DO UPDATE SET b = excluded.b, c = 1", w("u")),
            ),
            (
                "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a",
                format!("MERGE INTO t USING {} ON t.id = s.id WHEN MATCHED THEN UPDATE SET a = s.a", w("s")),
            ),
            (
                "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t",
                format!("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM {}", w("t")),
            ),
            (
                "DELETE FROM t USING a JOIN b USING (id) WHERE t.id = a.id",
                format!("DELETE FROM t USING {} JOIN {} USING (id) WHERE t.id = a.id", w("a"), w("b")),
            ),
            (
                "SELECT a, b FROM t GROUP BY a, b ORDER BY a, b LIMIT 1",
                format!("SELECT a, b FROM {} GROUP BY a, b ORDER BY a, b LIMIT 1", w("t")),
            ),
            (
                "SELECT 1 UNION ALL TABLE t; CREATE TABLE c AS TABLE ONLY t",
                format!("SELECT 1 UNION ALL SELECT * FROM {}; CREATE TABLE c AS SELECT * FROM {}", w("t"), w("t")),
            ),
            (
                "SELECT * FROM t FOR SHARE",
                format!("SELECT * FROM {} FOR SHARE", w("t")),
            ),
        ] {
            assert_eq!(session(sql), want, "{sql}");
        }
        for sql in [
            "CREATE POLICY p ON t FOR SELECT USING (a = current_user)",
            "CREATE POLICY p ON t FOR DELETE USING (owner = current_user)",
            "CREATE TRIGGER tr BEFORE UPDATE OR DELETE ON t FOR EACH ROW EXECUTE FUNCTION f()",
            "ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES u ON DELETE CASCADE ON UPDATE SET NULL",
            "CREATE FUNCTION f() RETURNS TABLE (a int) LANGUAGE sql AS $$ SELECT * FROM t $$",
            "FETCH 10 FROM c",
            "ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM r",
        ] {
            assert_eq!(session(sql), sql, "{sql}");
        }
    }

    #[test]
    fn session_keeps_explicit_times() {
        let at = "('2026-01-01 00:00:00+00')::pg_catalog.timestamptz, true)";
        assert_eq!(
            session("SELECT * FROM a AS OF $1 JOIN b ON true JOIN c FOR SYSTEM_TIME ALL h ON true"),
            format!("SELECT * FROM pgbranch_history.as_of(NULL::a, ($1)::pg_catalog.timestamptz, false) AS a JOIN pgbranch_history.as_of(NULL::b, {at} AS b ON true JOIN pgbranch_history.versions(NULL::c, '-infinity'::pg_catalog.timestamptz, 'infinity'::pg_catalog.timestamptz, true) AS h ON true")
        );
    }

    #[test]
    fn session_errors() {
        let e = rewrite_session(b"SELECT * FROM t TABLESAMPLE system (10)", true, AT).unwrap_err();
        assert_eq!(e.position, 16);
        let e = rewrite_session(b"SELECT * FROM t AS OF", true, AT).unwrap_err();
        assert_eq!(e.position, 21);
        assert_eq!(rewrite_session(b"SELECT 1", true, AT), Ok(None));
    }

    /// A tiny deterministic generator (xorshift), so the test needs no
    /// dependency and always runs the same cases.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn pick<'x>(&mut self, items: &[&'x str]) -> &'x str {
            items[(self.next() % items.len() as u64) as usize]
        }
    }

    #[test]
    fn random_sql_fragments_never_panic() {
        // Single tokens, and whole clauses so that many cases rewrite.
        const FRAGMENTS: &str = "SELECT|FROM|t|\"T\"|s.|AS|OF|TIMESTAMP|FOR|SYSTEM_TIME|ALL|\
            BETWEEN|SYMMETRIC|AND|TO|(|)|,|;|JOIN|ON|WHERE|now()|$1|'x'|interval|::|\
            timestamptz|CASE|END|WITH|TABLE|ONLY|LATERAL|ROWS|USING|DELETE|UPDATE|SET|IS|\
            DISTINCT|[|]|-|--|/*|*/|$$|\n|x|1|.|TABLESAMPLE|VALUES|GRANT|e'\\'|U&\"a\"|\u{e9}|\
            FROM t AS OF now()|FROM s.t FOR SYSTEM_TIME ALL x|\
            JOIN u FOR SYSTEM_TIME BETWEEN $1 AND $2 ON|, v FOR SYSTEM_TIME FROM 'a' TO 'b'|\
            (SELECT * FROM w AS OF TIMESTAMP $1 - interval '1 day') q|FROM a, b";
        let fragments: Vec<&str> = FRAGMENTS.split('|').collect();
        let mut rewritten = 0;
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for case in 0..600 {
            let n = (rng.next() % 40) as usize;
            let mut sql = String::new();
            for _ in 0..n {
                sql.push_str(rng.pick(&fragments));
                if rng.next() % 4 != 0 {
                    sql.push(' ');
                }
            }
            let bytes = sql.as_bytes();
            for scs in [true, false] {
                match rewrite(bytes, scs) {
                    Ok(Some(r)) => {
                        check_edits(bytes, &r);
                        rewritten += 1;
                    }
                    Ok(None) => {}
                    Err(e) => assert!(e.position <= bytes.len(), "{case}: {sql:?} {e:?}"),
                }
                match rewrite_session(bytes, scs, "now()") {
                    Ok(Some(r)) => check_edits(bytes, &r),
                    Ok(None) => {}
                    Err(e) => assert!(e.position <= bytes.len(), "{case}: {sql:?} {e:?}"),
                }
            }
        }
        assert!(rewritten > 100, "only {rewritten} cases rewrote something");
        // Raw bytes, including non-UTF-8.
        for _ in 0..300 {
            let n = (rng.next() % 64) as usize;
            let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = rewrite(&bytes, true);
            if let Ok(Some(r)) = rewrite_session(&bytes, true, "now()") {
                check_edits(&bytes, &r);
            }
        }
    }
}
