//! `ALTER TABLE name ADD SYSTEM VERSIONING` and `ALTER TABLE name DROP
//! SYSTEM VERSIONING` (MariaDB's syntax), answered by pgbranch's SQL
//! functions `pgbranch.enable_versioning` / `pgbranch.disable_versioning`,
//! run in-band as the connected role (who must own the table); and
//! `RESTORE TABLE name TO [TIMESTAMP] expr`, by `pgbranch.restore_table`
//! with the role's own privileges on the table.

use crate::history::record::dollar_quote;
use crate::sql::lexer::{Lexer, Token, TokenKind};

/// A versioning command: the table as written, and whether to enable.
#[derive(Debug, PartialEq, Eq)]
pub struct Versioning {
    pub table: String,
    pub enable: bool,
}

/// A time-travel command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Versioning(Versioning),
    /// `RESTORE TABLE table TO [TIMESTAMP] at` (`at`: SQL text).
    Restore {
        table: String,
        at: String,
    },
}

/// Parses a time-travel command; `None` for any other statement (cheap
/// for ordinary traffic).
pub fn parse(sql: &[u8]) -> Option<Command> {
    let start = sql.iter().position(|b| !b.is_ascii_whitespace())?;
    if sql[start..].len() >= 7 && sql[start..start + 7].eq_ignore_ascii_case(b"restore") {
        return parse_restore(sql);
    }
    parse_versioning(sql).map(Command::Versioning)
}

/// The tokens of `sql` as a single statement, a final `;` dropped;
/// `None` when a `;` separates several statements.
fn one_statement(sql: &[u8]) -> Option<Vec<Token<'_>>> {
    let mut tokens: Vec<_> = Lexer::new(sql).collect();
    if tokens.last().is_some_and(|t| t.is_punct(b';')) {
        tokens.pop();
    }
    (!tokens.iter().any(|t| t.is_punct(b';'))).then_some(tokens)
}

/// `RESTORE TABLE name TO [TIMESTAMP] expr [;]`.
fn parse_restore(sql: &[u8]) -> Option<Command> {
    let tokens = one_statement(sql)?;
    let [restore, table, rest @ ..] = tokens.as_slice() else {
        return None;
    };
    if !restore.is_word("restore") || !table.is_word("table") {
        return None;
    }
    let to = rest.iter().position(|t| t.is_word("to"))?;
    let name = &rest[..to];
    if !well_formed_name(name) {
        return None;
    }
    let mut expr = &rest[to + 1..];
    if let [ts, more @ ..] = expr {
        if ts.is_word("timestamp") && !more.is_empty() && more[0].kind != TokenKind::String {
            expr = more;
        }
    }
    let (first, last) = (expr.first()?, expr.last()?);
    let at = String::from_utf8_lossy(&sql[first.start..last.end()]).into_owned();
    let table =
        String::from_utf8_lossy(&sql[name[0].start..name[name.len() - 1].end()]).into_owned();
    Some(Command::Restore { table, at })
}

/// `name [. name [. name]]`: identifiers separated by dots.
fn well_formed_name(name: &[Token<'_>]) -> bool {
    !name.is_empty()
        && name.len() % 2 == 1
        && name.iter().enumerate().all(|(i, tok)| {
            if i % 2 == 0 {
                matches!(tok.kind, TokenKind::Word | TokenKind::QuotedIdent)
            } else {
                tok.is_punct(b'.')
            }
        })
}

fn parse_versioning(sql: &[u8]) -> Option<Versioning> {
    if !crate::sql::contains_ignore_ascii_case(sql, b"versioning") {
        return None;
    }
    let tokens = one_statement(sql)?;
    let [alter, table, rest @ ..] = tokens.as_slice() else {
        return None;
    };
    if !alter.is_word("alter") || !table.is_word("table") {
        return None;
    }
    let rest = match rest {
        [only, rest @ ..] if only.is_word("only") => rest,
        _ => rest,
    };
    // name [. name [. name]] then ADD|DROP SYSTEM VERSIONING.
    let [name @ .., action, system, versioning] = rest else {
        return None;
    };
    if !system.is_word("system") || !versioning.is_word("versioning") {
        return None;
    }
    let enable = if action.is_word("add") {
        true
    } else if action.is_word("drop") {
        false
    } else {
        return None;
    };
    if !well_formed_name(name) {
        return None;
    }
    let (first, last) = (name.first()?, name.last()?);
    let table = String::from_utf8_lossy(&sql[first.start..last.end()]).into_owned();
    Some(Versioning { table, enable })
}

/// The SQL that carries the command out (its one row says what happened).
pub fn to_sql(command: &Command) -> String {
    let literal = |t: &str| String::from_utf8_lossy(&dollar_quote(t.as_bytes())).into_owned();
    match command {
        Command::Versioning(v) => {
            let function = if v.enable {
                "enable_versioning"
            } else {
                "disable_versioning"
            };
            format!(
                "SELECT pgbranch.{function}({}::regclass) AS system_versioning",
                literal(&v.table)
            )
        }
        // The time is the client's own expression, evaluated as the
        // client's statement would be.
        Command::Restore { table, at } => format!(
            "SELECT pgbranch.restore_table({}::regclass, ({at})::pg_catalog.timestamptz) AS restore",
            literal(table)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Option<(String, bool)> {
        match parse(sql.as_bytes())? {
            Command::Versioning(v) => Some((v.table, v.enable)),
            Command::Restore { .. } => None,
        }
    }

    #[test]
    fn restore_names_a_table_and_a_time() {
        let r = |sql: &str| match parse(sql.as_bytes()) {
            Some(Command::Restore { table, at }) => Some((table, at)),
            _ => None,
        };
        assert_eq!(
            r("RESTORE TABLE orders TO TIMESTAMP now() - interval '1 hour';"),
            Some(("orders".into(), "now() - interval '1 hour'".into()))
        );
        assert_eq!(
            r("restore table s.\"T\" to '2026-01-01'"),
            Some(("s.\"T\"".into(), "'2026-01-01'".into()))
        );
        assert_eq!(
            r("RESTORE TABLE t TO TIMESTAMP '2026-01-01 00:00'"),
            Some(("t".into(), "TIMESTAMP '2026-01-01 00:00'".into()))
        );
        assert_eq!(r("RESTORE TABLE t TO"), None);
        assert_eq!(r("RESTORE TABLE TO now()"), None);
        assert_eq!(r("RESTORE TABLE t TO now(); DROP TABLE t"), None);
    }

    #[test]
    fn the_two_forms_with_any_table_name() {
        assert_eq!(
            parsed("ALTER TABLE orders ADD SYSTEM VERSIONING"),
            Some(("orders".into(), true))
        );
        assert_eq!(
            parsed("alter table only public.\"Orders\" drop system versioning;"),
            Some(("public.\"Orders\"".into(), false))
        );
        assert_eq!(
            parsed("ALTER TABLE /* c */ s . t ADD SYSTEM VERSIONING"),
            Some(("s . t".into(), true))
        );
    }

    #[test]
    fn anything_else_is_not_a_versioning_command() {
        for sql in [
            "ALTER TABLE t ADD COLUMN versioning int",
            "ALTER TABLE ADD SYSTEM VERSIONING",
            "ALTER TABLE a b ADD SYSTEM VERSIONING",
            "ALTER TABLE IF EXISTS t ADD SYSTEM VERSIONING",
            "SELECT 'ALTER TABLE t ADD SYSTEM VERSIONING'",
            "ALTER TABLE t ADD SYSTEM VERSIONING; SELECT 1",
            "ALTER TABLE t. ADD SYSTEM VERSIONING",
        ] {
            assert_eq!(parsed(sql), None, "{sql}");
        }
    }

    #[test]
    fn the_table_name_reaches_sql_as_a_literal() {
        let sql = to_sql(&Command::Versioning(Versioning {
            table: "x'); DROP TABLE y; --".into(),
            enable: true,
        }));
        assert!(
            sql.starts_with("SELECT pgbranch.enable_versioning($"),
            "{sql}"
        );
        assert!(sql.contains("$x'); DROP TABLE y; --$"), "{sql}");
    }
}

/// A single `CREATE TABLE name ...` statement: the table's name as a
/// `regclass` input (each part double-quoted, exactly as stored), and
/// whether it ends with `WITH SYSTEM VERSIONING` — then also the text
/// without that clause. `None` for anything else (temporary tables too).
pub fn create_table(sql: &[u8]) -> Option<CreateTable> {
    // Cheap exit for ordinary traffic (a column called created_at
    // included): the first word must be CREATE.
    if !Lexer::new(sql).next().is_some_and(|t| t.is_word("create")) {
        return None;
    }
    let tokens = one_statement(sql)?;
    let t = tokens.as_slice();
    let [create, rest @ ..] = t else {
        return None;
    };
    if !create.is_word("create") {
        return None;
    }
    let rest = match rest {
        [u, rest @ ..] if u.is_word("unlogged") => rest,
        _ => rest,
    };
    let [table, rest @ ..] = rest else {
        return None;
    };
    if !table.is_word("table") {
        return None;
    }
    let rest = match rest {
        [i, n, e, rest @ ..] if i.is_word("if") && n.is_word("not") && e.is_word("exists") => rest,
        _ => rest,
    };
    let name_len = rest
        .iter()
        .take_while(|x| x.is_identifier() || x.is_punct(b'.'))
        .count();
    let name = &rest[..name_len];
    if !well_formed_name(name) {
        return None;
    }
    let regclass = name
        .iter()
        .filter_map(|x| x.identifier())
        .map(|part| {
            format!(
                "\"{}\"",
                String::from_utf8_lossy(&part).replace('"', "\"\"")
            )
        })
        .collect::<Vec<_>>()
        .join(".");
    let versioned = match t {
        [.., w, s, v] if w.is_word("with") && s.is_word("system") && v.is_word("versioning") => {
            let mut text = sql[..w.start].to_vec();
            text.extend_from_slice(&sql[v.end()..]);
            Some(text)
        }
        _ => None,
    };
    Some(CreateTable {
        regclass,
        without_versioning_clause: versioned,
    })
}

/// What [`create_table`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct CreateTable {
    /// `"schema"."table"` or `"table"`.
    pub regclass: String,
    /// With `WITH SYSTEM VERSIONING`: the statement without it.
    pub without_versioning_clause: Option<Vec<u8>>,
}

/// SQL that versions the table just created: always, or when its name
/// matches one of `patterns` (`schema.table` globs).
pub fn version_created_sql(regclass: &str, patterns: Option<&[String]>) -> String {
    let table = String::from_utf8_lossy(&dollar_quote(regclass.as_bytes())).into_owned();
    match patterns {
        // (CREATE TABLE IF NOT EXISTS on a table versioned already.)
        None => format!(
            "SELECT pgbranch.enable_versioning({table}::regclass) \
             WHERE NOT EXISTS (SELECT 1 FROM pgbranch.versioned_tables WHERE relid = {table}::regclass)"
        ),
        Some(p) => {
            let list = p
                .iter()
                .map(|g| String::from_utf8_lossy(&dollar_quote(g.as_bytes())).into_owned())
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "SELECT pgbranch.enable_versioning_matching({table}::regclass, ARRAY[{list}]::text[])"
            )
        }
    }
}

#[cfg(test)]
mod create_tests {
    use super::*;

    #[test]
    fn create_table_names_and_the_versioning_clause() {
        let c =
            create_table(b"CREATE TABLE s.\"Orders\" (id int PRIMARY KEY) WITH SYSTEM VERSIONING;")
                .unwrap();
        assert_eq!(c.regclass, "\"s\".\"Orders\"");
        assert_eq!(
            c.without_versioning_clause.as_deref(),
            Some(&b"CREATE TABLE s.\"Orders\" (id int PRIMARY KEY) ;"[..])
        );
        let c = create_table(b"create table if not exists t (a int)").unwrap();
        assert_eq!(c.regclass, "\"t\"");
        assert_eq!(c.without_versioning_clause, None);
        for sql in [
            "CREATE TEMP TABLE t (a int)",
            "CREATE TABLE t (a int); CREATE TABLE u (a int)",
            "CREATE VIEW v AS SELECT 1",
            "SELECT 'create table t'",
        ] {
            assert_eq!(create_table(sql.as_bytes()), None, "{sql}");
        }
    }

    #[test]
    fn the_generated_sql_quotes_names_and_patterns() {
        let sql = version_created_sql("\"t\"", Some(&["public.*".to_string()]));
        assert!(sql.contains("enable_versioning_matching($pgb$\"t\"$pgb$::regclass, ARRAY[$pgb$public.*$pgb$]::text[])"), "{sql}");
    }
}

/// `SET pgbranch.as_of = value` / `TO value`, `RESET pgbranch.as_of`,
/// `SHOW pgbranch.as_of`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AsOfSetting {
    /// The value's SQL text (a literal, as SET takes).
    Set(String),
    Reset,
    Show,
}

/// Parses an `as_of` setting command; `None` for anything else.
pub fn parse_as_of_setting(sql: &[u8]) -> Option<AsOfSetting> {
    if !crate::sql::contains_ignore_ascii_case(sql, b"as_of") {
        return None;
    }
    // One statement only (several are refused by the caller).
    let tokens = one_statement(sql)?;
    let t = tokens.as_slice();
    // The name: pgbranch.as_of, or "pgbranch.as_of" quoted whole.
    let name_at = |i: usize| -> Option<usize> {
        match t.get(i..)? {
            [p, dot, a, ..]
                if p.is_word("pgbranch") && dot.is_punct(b'.') && a.is_word("as_of") =>
            {
                Some(i + 3)
            }
            [q, ..] if q.kind == TokenKind::QuotedIdent && q.text == b"\"pgbranch.as_of\"" => {
                Some(i + 1)
            }
            _ => None,
        }
    };
    let first = t.first()?;
    if first.is_word("show") {
        return (name_at(1)? == t.len()).then_some(AsOfSetting::Show);
    }
    if first.is_word("reset") {
        return (name_at(1)? == t.len()).then_some(AsOfSetting::Reset);
    }
    if !first.is_word("set") {
        return None;
    }
    let mut i = 1;
    if t.get(1).is_some_and(|x| x.is_word("session")) {
        i = 2;
    }
    let after = name_at(i)?;
    let op = t.get(after)?;
    if !(op.is_punct(b'=') || op.is_word("to")) {
        return None;
    }
    let value = t.get(after + 1..)?;
    let (v0, v1) = (value.first()?, value.last()?);
    if value.len() == 1 && v0.is_word("default") {
        return Some(AsOfSetting::Reset);
    }
    Some(AsOfSetting::Set(
        String::from_utf8_lossy(&sql[v0.start..v1.end()]).into_owned(),
    ))
}

#[cfg(test)]
mod setting_tests {
    use super::*;

    #[test]
    fn as_of_settings() {
        let p = |s: &str| parse_as_of_setting(s.as_bytes());
        assert_eq!(
            p("SET pgbranch.as_of = '2026-01-01 10:00+00'"),
            Some(AsOfSetting::Set("'2026-01-01 10:00+00'".into()))
        );
        assert_eq!(
            p("set session \"pgbranch.as_of\" to 'yesterday';"),
            Some(AsOfSetting::Set("'yesterday'".into()))
        );
        assert_eq!(p("SET pgbranch.as_of TO DEFAULT"), Some(AsOfSetting::Reset));
        assert_eq!(p("RESET pgbranch.as_of"), Some(AsOfSetting::Reset));
        assert_eq!(p("SHOW pgbranch.as_of"), Some(AsOfSetting::Show));
        assert_eq!(p("SET LOCAL pgbranch.as_of = 'x'"), None);
        assert_eq!(p("SET pgbranch.as_of_x = 'x'"), None);
        assert_eq!(p("SELECT 'SET pgbranch.as_of = 1'"), None);
        assert_eq!(p("SET pgbranch.as_of = 'x'; DROP TABLE t"), None);
    }
}
