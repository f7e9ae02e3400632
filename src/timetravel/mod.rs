//! Time travel, proxy side: the system-versioning commands
//! ([`commands`]). The row history itself lives in the database
//! (`src/history/sql/0003_time_travel.sql`); AS OF clauses are rewritten
//! by [`crate::sql::timetravel`].

pub mod commands;
pub mod retention;

use crate::sql::lexer::{Lexer, TokenKind};

/// What an as-of session refuses in a statement: the command, when the
/// statement writes (INSERT, UPDATE, DELETE, MERGE, TRUNCATE, COPY ...
/// FROM, REFRESH, and schema changes). PostgreSQL's own read-only
/// transaction is the backstop for the rest (functions that write, a
/// data-modifying WITH).
pub fn write_command(stmt: &[u8]) -> Option<String> {
    let mut tokens = Lexer::new(stmt);
    let first = tokens.next()?;
    if first.kind != TokenKind::Word {
        return None;
    }
    let word = String::from_utf8_lossy(first.text).to_ascii_uppercase();
    match word.as_str() {
        "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "TRUNCATE" | "REFRESH" => Some(word),
        // Leaving read-only: BEGIN / START TRANSACTION / SET TRANSACTION
        // ... READ WRITE, or the read-only settings themselves.
        "BEGIN" | "START" | "SET"
            if crate::sql::contains_ignore_ascii_case(stmt, b"read write")
                || crate::sql::contains_ignore_ascii_case(stmt, b"read_only") =>
        {
            Some(format!("{word} (read-write)"))
        }
        "COPY" => {
            // COPY name [(columns)] FROM ... writes; COPY (query) TO and
            // COPY name TO read.
            let mut depth = 0usize;
            for t in tokens {
                if t.is_punct(b'(') {
                    depth += 1;
                } else if t.is_punct(b')') {
                    depth = depth.saturating_sub(1);
                } else if depth == 0 && t.is_word("from") {
                    return Some("COPY FROM".into());
                } else if depth == 0 && t.is_word("to") {
                    return None;
                }
            }
            None
        }
        _ if crate::sql::classify::is_ddl(stmt) => {
            Some(crate::sql::classify::classify(stmt).map_or(word, |d| d.tag))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_named_and_reads_pass() {
        for (sql, refused) in [
            ("insert into t values (1)", Some("INSERT")),
            ("UPDATE t SET a = 1", Some("UPDATE")),
            ("delete from t", Some("DELETE")),
            (
                "MERGE INTO t USING s ON true WHEN MATCHED THEN DELETE",
                Some("MERGE"),
            ),
            ("truncate t", Some("TRUNCATE")),
            ("COPY t (a, b) FROM STDIN", Some("COPY FROM")),
            ("CREATE TABLE x (a int)", Some("CREATE TABLE")),
            ("SELECT * INTO newt FROM t", Some("SELECT")),
            ("COPY t TO STDOUT", None),
            ("COPY (SELECT * FROM t) TO STDOUT", None),
            ("SELECT * FROM t", None),
            ("SHOW search_path", None),
            ("BEGIN", None),
            ("BEGIN READ ONLY", None),
            ("begin read write", Some("BEGIN (read-write)")),
            (
                "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
                Some("SET (read-write)"),
            ),
            (
                "set default_transaction_read_only = off",
                Some("SET (read-write)"),
            ),
            ("SET search_path = x", None),
        ] {
            assert_eq!(write_command(sql.as_bytes()).as_deref(), refused, "{sql}");
        }
    }
}
