//! Branch commands run through the proxy as SQL:
//!
//! - `CREATE BRANCH name [FROM parent] [WITH DATA]` (parent: the session's
//!   branch when not given)
//! - `DROP BRANCH [IF EXISTS] name [FORCE]`
//! - `SHOW BRANCHES`
//! - `DIFF BRANCH name [AGAINST other]` (other: the branch's parent)
//! - `MERGE BRANCH name [INTO parent] [DRY RUN]`
//! - `SHOW pgbranch.branch`: the session's branch
//! - `SET pgbranch.branch = name` / `RESET pgbranch.branch`: switch an idle
//!   session (the hook runs them: see `history::hook`)
//!
//! Each becomes a `SELECT` over a `pgbranch` function, preceded by the
//! metadata check, run in-band as the connected role: PostgreSQL's
//! privileges decide (a role that may not create schemas cannot create a
//! branch). A malformed command becomes a statement that raises the
//! error, so it fails in the client's transaction like any other error.

use crate::history::migrate::migrate_sql;
use crate::history::record::dollar_quote;
use crate::proxy::selection::MAX_BRANCH_NAME;

/// A parsed branch command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Create {
        name: String,
        parent: Option<String>,
        with_data: bool,
        /// `AS OF [TIMESTAMP] expr`: the expression's SQL text.
        as_of: Option<String>,
    },
    Drop {
        name: String,
        if_exists: bool,
        force: bool,
    },
    List,
    Diff {
        name: String,
        against: Option<String>,
    },
    Merge {
        name: String,
        into: Option<String>,
        dry_run: bool,
    },
    Current,
    /// `SET pgbranch.branch = name`; `None`: `RESET pgbranch.branch` (back
    /// to the branch selected at connect time).
    Switch(Option<String>),
}

/// A command the proxy answers with an error: SQLSTATE and message.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
    pub hint: Option<String>,
}

/// Words of a command: whitespace-separated, `"..."` and `'...'` kept
/// whole (quotes included); `None` when a `;` ends a statement before the
/// end (only a trailing one is allowed) or a quote is not closed.
fn words(sql: &str) -> Option<Vec<&str>> {
    let text = sql.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() {
            match b[i] {
                q @ (b'"' | b'\'') => {
                    i += 1;
                    loop {
                        if i >= b.len() {
                            return None;
                        }
                        if b[i] == q {
                            if b.get(i + 1) == Some(&q) {
                                i += 2;
                                continue;
                            }
                            break;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                b';' => return None,
                _ => i += 1,
            }
        }
        out.push(&text[start..i]);
    }
    Some(out)
}

/// A branch name as written: bare, `"quoted"` or `'quoted'`; checked
/// against the allowed characters before it goes anywhere near SQL.
fn branch_name(word: &str) -> Result<String, Invalid> {
    let name = match word.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) if word.len() >= 2 && word.ends_with(*q as char) => {
            let q = *q as char;
            word[1..word.len() - 1].replace(&format!("{q}{q}"), &q.to_string())
        }
        _ => word.to_string(),
    };
    let ok = !name.is_empty()
        && name.len() <= MAX_BRANCH_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(name)
    } else {
        Err(Invalid {
            code: "42602",
            message: format!("invalid branch name {}", word.escape_default()),
            hint: Some(
                "Branch names use letters, digits, '-', '_', '.' and '/', at most 40 characters."
                    .into(),
            ),
        })
    }
}

fn syntax(usage: &str) -> Invalid {
    Invalid {
        code: "42601",
        message: format!("syntax error in branch command; usage: {usage}"),
        hint: None,
    }
}

const CREATE_USAGE: &str =
    "CREATE BRANCH name [FROM parent] [AS OF [TIMESTAMP] time WITH DATA] [WITH DATA]";
const DROP_USAGE: &str = "DROP BRANCH [IF EXISTS] name [FORCE]";
const DIFF_USAGE: &str = "DIFF BRANCH name [AGAINST other]";
const MERGE_USAGE: &str = "MERGE BRANCH name [INTO parent] [DRY RUN]";

/// Parses a branch command; `None` for any other statement.
pub fn parse(sql: &[u8]) -> Option<Result<Command, Invalid>> {
    // Cheap exit for ordinary traffic: the first word decides.
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    let first = sql[start..].get(..4)?;
    // Every branch command names a branch: ordinary SET, SHOW, CREATE and
    // MERGE statements leave here without allocating.
    if !crate::sql::contains_ignore_ascii_case(sql, b"branch") {
        return None;
    }
    if first.eq_ignore_ascii_case(b"set ")
        || first.eq_ignore_ascii_case(b"set\t")
        || first.eq_ignore_ascii_case(b"rese")
    {
        return parse_switch(sql);
    }
    if !(first.eq_ignore_ascii_case(b"crea")
        || first.eq_ignore_ascii_case(b"drop")
        || first.eq_ignore_ascii_case(b"show")
        || first.eq_ignore_ascii_case(b"diff")
        || first.eq_ignore_ascii_case(b"merg"))
    {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?;
    // CREATE BRANCH ... AS OF <expression>: the expression may hold
    // quotes and spaces, so it is cut out before the words are read.
    let (without_as_of, as_of) = split_as_of(text);
    let text = without_as_of.as_deref().unwrap_or(text);
    let w = words(text)?;
    let is = |i: usize, k: &str| w.get(i).is_some_and(|x| x.eq_ignore_ascii_case(k));
    if is(0, "show") && w.len() == 2 {
        if is(1, "branches") {
            return Some(Ok(Command::List));
        }
        if is(1, "pgbranch.branch") || w[1] == "\"pgbranch.branch\"" {
            return Some(Ok(Command::Current));
        }
        return None;
    }
    if !is(1, "branch") {
        return None;
    }
    let parsed = if is(0, "create") {
        parse_create(&w, &is).and_then(|c| with_as_of(c, as_of))
    } else if is(0, "drop") {
        parse_drop(&w, &is)
    } else if is(0, "diff") {
        parse_diff(&w, &is)
    } else if is(0, "merge") {
        parse_merge(&w, &is)
    } else {
        return None;
    };
    Some(parsed)
}

/// The text without an `AS OF [TIMESTAMP] expr` clause (up to a final
/// `WITH DATA`), and the clause's expression; `(None, None)` without one.
fn split_as_of(text: &str) -> (Option<String>, Option<String>) {
    use crate::sql::lexer::{Lexer, TokenKind};
    let tokens: Vec<_> = Lexer::new(text.as_bytes()).collect();
    let Some(at) = tokens
        .windows(2)
        .position(|w| w[0].is_word("as") && w[1].is_word("of"))
    else {
        return (None, None);
    };
    let mut start = at + 2;
    if tokens.get(start).is_some_and(|t| t.is_word("timestamp"))
        && tokens
            .get(start + 1)
            .is_some_and(|t| t.kind != TokenKind::String)
    {
        start += 1;
    }
    let mut end = tokens.len();
    if end > start && tokens[end - 1].is_punct(b';') {
        end -= 1;
    }
    let with_data =
        end >= start + 2 && tokens[end - 2].is_word("with") && tokens[end - 1].is_word("data");
    if with_data {
        end -= 2;
    }
    if end <= start {
        return (None, Some(String::new()));
    }
    let expr = text[tokens[start].start..tokens[end - 1].end()].to_string();
    let mut rest = text[..tokens[at].start].to_string();
    if with_data {
        rest.push_str(" WITH DATA");
    }
    (Some(rest), Some(expr))
}

/// Adds the AS OF time to a parsed CREATE BRANCH (it needs WITH DATA).
fn with_as_of(c: Command, as_of: Option<String>) -> Result<Command, Invalid> {
    let Some(expr) = as_of else {
        return Ok(c);
    };
    match c {
        Command::Create {
            name,
            parent,
            with_data: true,
            ..
        } if !expr.is_empty() => Ok(Command::Create {
            name,
            parent,
            with_data: true,
            as_of: Some(expr),
        }),
        Command::Create { .. } if expr.is_empty() => Err(syntax(CREATE_USAGE)),
        Command::Create { .. } => Err(Invalid {
            code: "0A000",
            message: "CREATE BRANCH ... AS OF copies rows of the past: add WITH DATA".into(),
            hint: Some(CREATE_USAGE.into()),
        }),
        other => Ok(other),
    }
}

fn parse_create(w: &[&str], is: &dyn Fn(usize, &str) -> bool) -> Result<Command, Invalid> {
    let name = branch_name(w.get(2).ok_or_else(|| syntax(CREATE_USAGE))?)?;
    let mut i = 3;
    let mut parent = None;
    if is(i, "from") {
        parent = Some(branch_name(
            w.get(i + 1).ok_or_else(|| syntax(CREATE_USAGE))?,
        )?);
        i += 2;
    }
    let mut with_data = false;
    if is(i, "with") && is(i + 1, "data") {
        with_data = true;
        i += 2;
    }
    if i != w.len() {
        return Err(syntax(CREATE_USAGE));
    }
    Ok(Command::Create {
        name,
        parent,
        with_data,
        as_of: None,
    })
}

fn parse_drop(w: &[&str], is: &dyn Fn(usize, &str) -> bool) -> Result<Command, Invalid> {
    let mut i = 2;
    let mut if_exists = false;
    if is(i, "if") && is(i + 1, "exists") {
        if_exists = true;
        i += 2;
    }
    let name = branch_name(w.get(i).ok_or_else(|| syntax(DROP_USAGE))?)?;
    i += 1;
    let mut force = false;
    if is(i, "force") {
        force = true;
        i += 1;
    }
    if i != w.len() {
        return Err(syntax(DROP_USAGE));
    }
    Ok(Command::Drop {
        name,
        if_exists,
        force,
    })
}

fn parse_diff(w: &[&str], is: &dyn Fn(usize, &str) -> bool) -> Result<Command, Invalid> {
    let name = branch_name(w.get(2).ok_or_else(|| syntax(DIFF_USAGE))?)?;
    let mut against = None;
    let mut i = 3;
    if is(i, "against") {
        against = Some(branch_name(
            w.get(i + 1).ok_or_else(|| syntax(DIFF_USAGE))?,
        )?);
        i += 2;
    }
    if i != w.len() {
        return Err(syntax(DIFF_USAGE));
    }
    Ok(Command::Diff { name, against })
}

/// `SET [SESSION] pgbranch.branch {TO | =} name`, `RESET pgbranch.branch`.
fn parse_switch(sql: &[u8]) -> Option<Result<Command, Invalid>> {
    let text = std::str::from_utf8(sql).ok()?;
    // `SET pgbranch.branch='x'`: the `=` may touch the words around it.
    let spaced = text.replacen('=', " = ", 1);
    let w = words(&spaced)?;
    let is = |i: usize, k: &str| w.get(i).is_some_and(|x| x.eq_ignore_ascii_case(k));
    let is_name = |i: usize| {
        w.get(i).is_some_and(|x| {
            x.eq_ignore_ascii_case("pgbranch.branch") || *x == "\"pgbranch.branch\""
        })
    };
    if is(0, "reset") {
        return (is_name(1) && w.len() == 2).then_some(Ok(Command::Switch(None)));
    }
    let mut i = 1;
    if is(i, "session") {
        i += 1;
    }
    if is(i, "local") && is_name(i + 1) {
        return Some(Err(Invalid {
            code: "0A000",
            message:
                "SET LOCAL pgbranch.branch is not supported: a branch is chosen for the session"
                    .into(),
            hint: Some("Use SET pgbranch.branch outside a transaction block.".into()),
        }));
    }
    if !is_name(i) {
        return None;
    }
    if !(is(i + 1, "to") || is(i + 1, "=")) || w.len() != i + 3 {
        return Some(Err(syntax("SET pgbranch.branch = 'name'")));
    }
    Some(branch_name(w[i + 2]).map(|n| Command::Switch(Some(n))))
}

fn parse_merge(w: &[&str], is: &dyn Fn(usize, &str) -> bool) -> Result<Command, Invalid> {
    let name = branch_name(w.get(2).ok_or_else(|| syntax(MERGE_USAGE))?)?;
    let mut into = None;
    let mut i = 3;
    if is(i, "into") {
        into = Some(branch_name(
            w.get(i + 1).ok_or_else(|| syntax(MERGE_USAGE))?,
        )?);
        i += 2;
    }
    let mut dry_run = false;
    if is(i, "dry") && is(i + 1, "run") {
        dry_run = true;
        i += 2;
    }
    if i != w.len() {
        return Err(syntax(MERGE_USAGE));
    }
    Ok(Command::Merge {
        name,
        into,
        dry_run,
    })
}

fn lit(s: &str) -> String {
    String::from_utf8(dollar_quote(s.as_bytes())).expect("UTF-8 in, UTF-8 out")
}

fn opt_lit(s: Option<&str>) -> String {
    s.map_or_else(|| "NULL".to_string(), lit)
}

/// Where a command is run from: the session's branch and client address,
/// and the statement as the client sent it (recorded in the history).
pub struct Context<'a> {
    pub branch: &'a str,
    pub client_addr: Option<&'a str>,
    pub statement: &'a str,
}

/// The SQL a command runs, and whether the metadata check
/// ([`migrate_sql`]) must run before it (as the proxy's own statement,
/// whose response the client must not see).
pub fn to_sql(command: &Command, ctx: &Context) -> (String, bool) {
    let body = match command {
        Command::Current => {
            return (
                format!("SELECT {} AS \"pgbranch.branch\"", lit(ctx.branch)),
                false,
            )
        }
        Command::Create {
            name,
            parent,
            with_data,
            as_of: None,
        } => format!(
            "SELECT * FROM pgbranch.create_branch({}, {}, {with_data}, {}, {})",
            lit(name),
            lit(parent.as_deref().unwrap_or(ctx.branch)),
            lit(ctx.statement),
            opt_lit(ctx.client_addr)
        ),
        // The time is the client's own expression.
        Command::Create {
            name,
            parent,
            as_of: Some(at),
            ..
        } => format!(
            "SELECT * FROM pgbranch.create_branch_as_of({}, {}, ({at})::pg_catalog.timestamptz, {}, {})",
            lit(name),
            lit(parent.as_deref().unwrap_or(ctx.branch)),
            lit(ctx.statement),
            opt_lit(ctx.client_addr)
        ),
        Command::Drop {
            name,
            if_exists,
            force,
        } => format!(
            "SELECT * FROM pgbranch.drop_branch({}, {if_exists}, {force})",
            lit(name)
        ),
        Command::List => "SELECT * FROM pgbranch.list_branches()".to_string(),
        Command::Switch(to) => switch_sql(to.as_deref().unwrap_or(ctx.branch), ctx.branch, true),
        Command::Merge {
            name,
            into,
            dry_run,
        } => format!(
            "SELECT * FROM pgbranch.merge_branch({}, {}, {dry_run}, {}, pg_catalog.current_setting('search_path'))",
            lit(name),
            opt_lit(into.as_deref()),
            opt_lit(ctx.client_addr)
        ),
        Command::Diff { name, against } => format!(
            "SELECT * FROM pgbranch.diff_branches({}, {})",
            lit(name),
            opt_lit(against.as_deref())
        ),
    };
    (body, true)
}

/// A command's text as one simple Query: the metadata check first when
/// it needs one (statement 0, swallowed).
pub fn to_query(command: &Command, ctx: &Context) -> (String, bool) {
    match to_sql(command, ctx) {
        (body, true) => (format!("{};\n{body}", migrate_sql()), true),
        other => other,
    }
}

/// The query that moves a session from branch `from` to `to`; its rows
/// are the new branch's (logical, physical, search_path). `check_idle`:
/// the server checks that no transaction block is open (valid in a simple
/// Query only; in the extended protocol the hook checks).
pub fn switch_sql(to: &str, from: &str, check_idle: bool) -> String {
    format!(
        "SELECT logical, physical, search_path FROM pgbranch.switch_branch({}, {}, pg_catalog.current_setting('search_path'), {check_idle})",
        lit(to),
        lit(from)
    )
}

/// A statement that fails with `e`.
pub fn raise_sql(e: &Invalid) -> String {
    let mut using = format!("ERRCODE = '{}', MESSAGE = {}", e.code, lit(&e.message));
    if let Some(h) = &e.hint {
        using.push_str(&format!(", HINT = {}", lit(h)));
    }
    let body = format!("BEGIN RAISE EXCEPTION USING {using}; END");
    format!(
        "DO {}",
        String::from_utf8(dollar_quote(body.as_bytes())).expect("UTF-8 in, UTF-8 out")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(sql: &str) -> Command {
        parse(sql.as_bytes()).unwrap().unwrap()
    }

    fn err(sql: &str) -> Invalid {
        parse(sql.as_bytes()).unwrap().unwrap_err()
    }

    #[test]
    fn create_branch_as_of_keeps_the_expression_whole() {
        assert_eq!(
            ok("CREATE BRANCH past FROM main AS OF TIMESTAMP now() - interval '1 hour' WITH DATA;"),
            Command::Create {
                name: "past".into(),
                parent: Some("main".into()),
                with_data: true,
                as_of: Some("now() - interval '1 hour'".into()),
            }
        );
        assert_eq!(
            ok("create branch p as of '2026-01-01 10:00' with data"),
            Command::Create {
                name: "p".into(),
                parent: None,
                with_data: true,
                as_of: Some("'2026-01-01 10:00'".into()),
            }
        );
        let e = parse(b"CREATE BRANCH p AS OF now()").unwrap().unwrap_err();
        assert_eq!(e.code, "0A000");
        let e = parse(b"CREATE BRANCH p AS OF WITH DATA")
            .unwrap()
            .unwrap_err();
        assert_eq!(e.code, "42601");
    }

    #[test]
    fn parses_the_commands() {
        assert_eq!(
            ok("create branch feature/x-1.2 from main with data;"),
            Command::Create {
                name: "feature/x-1.2".into(),
                parent: Some("main".into()),
                with_data: true,
                as_of: None,
            }
        );
        assert_eq!(
            ok("CREATE BRANCH \"f\""),
            Command::Create {
                name: "f".into(),
                parent: None,
                with_data: false,
                as_of: None,
            }
        );
        assert_eq!(
            ok("DROP BRANCH IF EXISTS 'f' FORCE"),
            Command::Drop {
                name: "f".into(),
                if_exists: true,
                force: true
            }
        );
        assert_eq!(ok("show branches"), Command::List);
        assert_eq!(ok("SHOW pgbranch.branch"), Command::Current);
        assert_eq!(
            ok("set pgbranch.branch='f/1'"),
            Command::Switch(Some("f/1".into()))
        );
        assert_eq!(
            ok("SET SESSION \"pgbranch.branch\" TO main;"),
            Command::Switch(Some("main".into()))
        );
        assert_eq!(ok("RESET pgbranch.branch"), Command::Switch(None));
        assert_eq!(err("SET LOCAL pgbranch.branch = x").code, "0A000");
        assert_eq!(err("SET pgbranch.branch x").code, "42601");
        assert!(parse(b"SET search_path = x").is_none());
        assert!(parse(b"RESET ALL").is_none());
        assert_eq!(
            ok("merge branch f into main dry run"),
            Command::Merge {
                name: "f".into(),
                into: Some("main".into()),
                dry_run: true
            }
        );
        assert_eq!(
            ok("DIFF BRANCH f AGAINST g"),
            Command::Diff {
                name: "f".into(),
                against: Some("g".into())
            }
        );
    }

    #[test]
    fn other_statements_are_not_commands() {
        for sql in [
            "SELECT 1",
            "CREATE TABLE branch (x int)",
            "DROP TABLE branch",
            "SHOW search_path",
            "show branches; drop table t",
            "CREATE BRANCH f; DROP TABLE t",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            "",
        ] {
            assert!(parse(sql.as_bytes()).is_none(), "{sql}");
        }
    }

    #[test]
    fn bad_commands_are_errors() {
        assert_eq!(err("CREATE BRANCH").code, "42601");
        assert_eq!(err("CREATE BRANCH a FROM").code, "42601");
        assert_eq!(err("CREATE BRANCH a WITH").code, "42601");
        assert_eq!(err("CREATE BRANCH \"a'b\"").code, "42602");
        assert_eq!(err("DROP BRANCH a b").code, "42601");
        assert_eq!(
            err(&format!("CREATE BRANCH {}", "x".repeat(41))).code,
            "42602"
        );
    }

    #[test]
    fn values_are_quoted_and_errors_raise() {
        let ctx = Context {
            branch: "main",
            client_addr: None,
            statement: "CREATE BRANCH f $pgb$",
        };
        let (sql, swallow) = to_query(
            &Command::Create {
                name: "f".into(),
                parent: None,
                with_data: false,
                as_of: None,
            },
            &ctx,
        );
        assert!(swallow);
        assert!(sql.contains("pgbranch.create_branch($pgb$f$pgb$, $pgb$main$pgb$, false"));
        assert!(!sql.contains("$pgb$CREATE BRANCH f $pgb$$pgb$"), "{sql}");
        let raise = raise_sql(&err("CREATE BRANCH"));
        assert!(raise.starts_with("DO "), "{raise}");
        assert!(raise.contains("ERRCODE = '42601'"));
    }
}
