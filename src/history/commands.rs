//! History commands run through the proxy as SQL:
//!
//! - `SHOW SCHEMA HISTORY [FOR <object>] [LIMIT <n>]`: the branch's
//!   recorded changes, newest first; `FOR` keeps the versions that changed
//!   the object (named as in the statement: `users`, `public.users`,
//!   `"Mixed"."Case"`, or a function with its argument types).
//! - `SHOW SCHEMA DRIFT`: objects whose live definition differs from the
//!   recorded one (changed around the proxy).
//!
//! Each is rewritten into a plain `SELECT` over the `pgbranch` schema, run
//! in-band as the connected role: PostgreSQL's privileges decide who may
//! read the history. The result is an ordinary result set.

use super::record::dollar_quote;

/// Columns of `SHOW SCHEMA HISTORY`.
const HISTORY_COLUMNS: &str = "h.version, h.recorded_at, h.role, h.command_tag, \
     h.object_type, h.object_identity, h.action, h.statement, h.application_name, h.client_addr";

/// A parsed history command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    History {
        object: Option<String>,
        limit: Option<u64>,
    },
    Drift,
}

/// Splits on ASCII whitespace, keeping double-quoted parts together.
fn words(sql: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let bytes = sql.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let start = i;
        let mut quoted = false;
        while i < bytes.len() && (quoted || !bytes[i].is_ascii_whitespace()) {
            if bytes[i] == b'"' {
                quoted = !quoted;
            }
            i += 1;
        }
        if start < i {
            out.push(&sql[start..i]);
        }
    }
    out
}

/// Normalises an object name as the classifier does: unquoted parts
/// lowercased, quoted ones verbatim.
fn normalise(name: &str) -> String {
    let mut out = String::new();
    let mut chars = name.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                out.push('"');
            }
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {}
            c if quoted => out.push(c),
            c => out.push(c.to_ascii_lowercase()),
        }
    }
    out
}

/// Parses a history command; `None` for any other statement.
pub fn parse(sql: &[u8]) -> Option<Command> {
    // Cheap exit for ordinary traffic: the first word must be SHOW.
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    if sql.len() < start + 4
        || !sql[start..start + 4].eq_ignore_ascii_case(b"show")
        || !crate::sql::contains_ignore_ascii_case(sql, b"schema")
    {
        return None;
    }
    let text = std::str::from_utf8(sql).ok()?.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    // One statement only: a `;` outside a quoted name ends it, and what
    // follows must not become part of an object name.
    let mut quoted = false;
    for b in text.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b';' if !quoted => return None,
            _ => {}
        }
    }
    let w = words(text);
    let is = |i: usize, k: &str| w.get(i).is_some_and(|x| x.eq_ignore_ascii_case(k));
    if !(is(0, "show") && is(1, "schema")) {
        return None;
    }
    if is(2, "drift") && w.len() == 3 {
        return Some(Command::Drift);
    }
    if !is(2, "history") {
        return None;
    }
    let mut i = 3;
    let mut object = None;
    let mut limit = None;
    if is(i, "for") {
        let end = (i + 1..w.len())
            .find(|&j| is(j, "limit"))
            .unwrap_or(w.len());
        if end == i + 1 {
            return None;
        }
        object = Some(normalise(&w[i + 1..end].join(" ")));
        i = end;
    }
    if is(i, "limit") {
        limit = Some(w.get(i + 1)?.parse().ok()?);
        i += 2;
    }
    (i == w.len()).then_some(Command::History { object, limit })
}

/// The SQL a command runs.
pub fn to_sql(command: &Command, branch: &str) -> String {
    let branch = String::from_utf8(dollar_quote(branch.as_bytes())).expect("UTF-8 in, UTF-8 out");
    match command {
        Command::Drift => {
            format!("SELECT object_type, identity, change FROM pgbranch.drift({branch})")
        }
        Command::History { object, limit } => {
            let mut sql = format!(
                "SELECT {HISTORY_COLUMNS} FROM pgbranch.schema_history h WHERE h.branch = {branch}"
            );
            if let Some(object) = object {
                let o = String::from_utf8(dollar_quote(object.as_bytes()))
                    .expect("UTF-8 in, UTF-8 out");
                // Matches the recorded identity or any object the version
                // changed, with or without its schema, quoted or not.
                sql.push_str(&format!(
                    " AND EXISTS (SELECT 1 FROM (SELECT h.object_identity AS i \
                     UNION ALL SELECT o.identity FROM pgbranch.object_versions o \
                     WHERE o.branch = h.branch AND o.version = h.version) x \
                     WHERE replace(x.i, '\"', '') IN ({o}, 'public.' || {o}) \
                     OR split_part(replace(x.i, '\"', ''), '.', 2) = {o})"
                ));
            }
            sql.push_str(" ORDER BY h.version DESC");
            if let Some(n) = limit {
                sql.push_str(&format!(" LIMIT {n}"));
            }
            sql
        }
    }
}

/// The rewritten SQL when `sql` is a history command.
pub fn rewrite(sql: &[u8], branch: &str) -> Option<String> {
    parse(sql).map(|c| to_sql(&c, branch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_commands() {
        assert_eq!(
            parse(b"SHOW SCHEMA HISTORY"),
            Some(Command::History {
                object: None,
                limit: None
            })
        );
        assert_eq!(
            parse(b"  show schema history for Public.Users limit 5 ;"),
            Some(Command::History {
                object: Some("public.users".into()),
                limit: Some(5)
            })
        );
        assert_eq!(
            parse(b"SHOW SCHEMA HISTORY FOR \"Sales\".\"Big Orders\""),
            Some(Command::History {
                object: Some("Sales.Big Orders".into()),
                limit: None
            })
        );
        assert_eq!(parse(b"show schema drift"), Some(Command::Drift));
        assert_eq!(parse(b"SHOW search_path"), None);
        assert_eq!(parse(b"SHOW SCHEMA HISTORY LIMIT x"), None);
        assert_eq!(parse(b"SHOW SCHEMA HISTORY FOR"), None);
        assert_eq!(parse(b"SHOW SCHEMA DRIFT now"), None);
        assert_eq!(parse(b"SELECT 1"), None);
        assert_eq!(parse(b"SHOW SCHEMA HISTORY FOR a; DROP TABLE b"), None);
        assert_eq!(
            parse(b"SHOW SCHEMA HISTORY FOR \"a;b\";"),
            Some(Command::History {
                object: Some("a;b".into()),
                limit: None
            })
        );
    }

    #[test]
    fn values_are_quoted() {
        let sql = to_sql(
            &Command::History {
                object: Some("x'); DROP TABLE t; --".into()),
                limit: Some(3),
            },
            "main",
        );
        assert!(sql.contains("$pgb$x'); DROP TABLE t; --$pgb$"), "{sql}");
        assert!(sql.ends_with("LIMIT 3"));
    }
}
