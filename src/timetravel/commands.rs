//! `ALTER TABLE name ADD SYSTEM VERSIONING` and `ALTER TABLE name DROP
//! SYSTEM VERSIONING` (MariaDB's syntax), answered by pgbranch's SQL
//! functions `pgbranch.enable_versioning` / `pgbranch.disable_versioning`,
//! run in-band as the connected role (who must own the table).

use crate::history::record::dollar_quote;
use crate::sql::lexer::{Lexer, TokenKind};

/// A versioning command: the table as written, and whether to enable.
#[derive(Debug, PartialEq, Eq)]
pub struct Versioning {
    pub table: String,
    pub enable: bool,
}

/// Parses a versioning command; `None` for any other statement (cheap for
/// ordinary traffic: the text must mention "versioning").
pub fn parse(sql: &[u8]) -> Option<Versioning> {
    if !crate::sql::contains_ignore_ascii_case(sql, b"versioning") {
        return None;
    }
    let tokens: Vec<_> = Lexer::new(sql).collect();
    let mut t = tokens.as_slice();
    // A trailing semicolon is allowed.
    if let [rest @ .., last] = t {
        if last.is_punct(b';') {
            t = rest;
        }
    }
    let [alter, table, rest @ ..] = t else {
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
    let well_formed = !name.is_empty()
        && name.len() % 2 == 1
        && name.iter().enumerate().all(|(i, tok)| {
            if i % 2 == 0 {
                matches!(tok.kind, TokenKind::Word | TokenKind::QuotedIdent)
            } else {
                tok.is_punct(b'.')
            }
        });
    if !well_formed {
        return None;
    }
    let (first, last) = (name.first()?, name.last()?);
    let table = String::from_utf8_lossy(&sql[first.start..last.end()]).into_owned();
    Some(Versioning { table, enable })
}

/// The SQL that carries the command out (its one row says what happened).
pub fn to_sql(v: &Versioning) -> String {
    let function = if v.enable {
        "enable_versioning"
    } else {
        "disable_versioning"
    };
    let literal = String::from_utf8_lossy(&dollar_quote(v.table.as_bytes())).into_owned();
    format!("SELECT pgbranch.{function}({literal}::regclass) AS system_versioning")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(sql: &str) -> Option<(String, bool)> {
        parse(sql.as_bytes()).map(|v| (v.table, v.enable))
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
        let sql = to_sql(&Versioning {
            table: "x'); DROP TABLE y; --".into(),
            enable: true,
        });
        assert!(
            sql.starts_with("SELECT pgbranch.enable_versioning($"),
            "{sql}"
        );
        assert!(sql.contains("$x'); DROP TABLE y; --$"), "{sql}");
    }
}
