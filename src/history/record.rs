//! The statements the proxy injects to record DDL (no I/O).
//!
//! Simple protocol: SQL text spliced into the client's Query string, with
//! every value dollar-quoted (see [`dollar_quote`]); extended protocol:
//! Parse/Bind/Execute/Close of a named statement and portal with the values
//! as text parameters, so the client's unnamed statement and portal are
//! left alone. Values stay in the client's encoding either way: the server
//! converts them with the rest of the message, exactly as it converts the
//! DDL statement itself.

use crate::protocol::put_message;
use crate::sql::classify::Ddl;

/// Name of the injected prepared statement and portal.
const INJECTED: &[u8] = b"pgbranch_record";

/// What a recorded statement carries besides the statement itself.
#[derive(Debug, Clone)]
pub struct Origin {
    pub branch: String,
    pub client_addr: String,
}

/// `bytes` as a dollar-quoted literal whose tag cannot end it early: a
/// dollar-quoted string has no escapes, so it is the same under every
/// `standard_conforming_strings` setting and client encoding (no encoding
/// PostgreSQL accepts uses `$` inside a multibyte character).
pub fn dollar_quote(bytes: &[u8]) -> Vec<u8> {
    let mut n = 0usize;
    loop {
        let tag = if n == 0 {
            b"$pgb$".to_vec()
        } else {
            format!("$pgb{n}$").into_bytes()
        };
        // The first occurrence of the tag in body+tag must be the closing one.
        let mut joined = bytes.to_vec();
        joined.extend_from_slice(&tag);
        let first = joined
            .windows(tag.len())
            .position(|w| w == tag.as_slice())
            .unwrap_or(bytes.len());
        if first == bytes.len() {
            let mut out = tag.clone();
            out.extend_from_slice(&joined);
            return out;
        }
        n += 1;
    }
}

/// A schema-qualified name safe to re-quote: parts of lowercase letters,
/// digits, `_` and `$`, as the classifier normalises unquoted names.
fn simple_path(identity: &str) -> Option<String> {
    let parts: Vec<&str> = identity.split('.').collect();
    if parts.len() > 3 {
        return None;
    }
    let ok = parts.iter().all(|p| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
    });
    ok.then(|| {
        parts
            .iter()
            .map(|p| format!("\"{p}\""))
            .collect::<Vec<_>>()
            .join(".")
    })
}

/// For a statement whose tag carries a row count (`CREATE TABLE AS`,
/// `SELECT INTO`): a subquery counting the new table's rows, evaluated as
/// the client's role right after the statement in its transaction.
fn rows_expr(ddl: &Ddl) -> Option<String> {
    if ddl.tag != "SELECT" {
        return None;
    }
    simple_path(&ddl.identity).map(|t| format!("(SELECT count(*) FROM {t})"))
}

/// SQL for the statement that locks the branch before a change.
pub fn begin_sql(origin: &Origin) -> Vec<u8> {
    let mut sql = b"SELECT pgbranch.ddl_begin(".to_vec();
    sql.extend_from_slice(&dollar_quote(origin.branch.as_bytes()));
    sql.push(b',');
    sql.extend_from_slice(&dollar_quote(origin.client_addr.as_bytes()));
    sql.push(b')');
    sql
}

/// SQL run before `ddl` on a versioned database, if any:
/// - a statement that drops tables or views: the AS OF functions of
///   versioned tables and of views over them depend on their row types and
///   step aside (the record after the statement remakes those of the ones
///   that remain; a dropped table keeps its history);
/// - ALTER TABLE: the table's rekey trigger (if it is versioned) steps
///   aside, since its column list makes PostgreSQL refuse a type change
///   of a key column; the record after the statement makes it again.
pub fn before_sql(origin: &Origin, ddl: &Ddl) -> Option<Vec<u8>> {
    use crate::sql::classify::{Action, ObjectType};
    if !matches!(ddl.object_type, ObjectType::Table | ObjectType::View) {
        return None;
    }
    let branch = dollar_quote(origin.branch.as_bytes());
    match ddl.action {
        Action::Drop => {
            let mut sql = b"SELECT pgbranch.versioning_before_drop(".to_vec();
            sql.extend_from_slice(&branch);
            sql.push(b')');
            Some(sql)
        }
        Action::Alter if ddl.tag == "ALTER TABLE" && !ddl.identity.is_empty() => {
            // The name as the statement resolves it (the caller's
            // search_path); NULL when it names no table.
            let path = ddl
                .identity
                .split('.')
                .map(|p| format!("\"{}\"", p.replace('"', "\"\"")))
                .collect::<Vec<_>>()
                .join(".");
            let mut sql = b"SELECT pgbranch.versioning_before_alter(".to_vec();
            sql.extend_from_slice(&branch);
            sql.extend_from_slice(b", pg_catalog.to_regclass(");
            sql.extend_from_slice(&dollar_quote(path.as_bytes()));
            sql.extend_from_slice(b"))");
            Some(sql)
        }
        _ => None,
    }
}

/// Which recording function a record calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorder {
    /// `record_ddl`: in the statement's transaction, after `ddl_begin`.
    InTransaction,
    /// `record_ddl_late`: after a statement that ran outside a
    /// transaction block (and committed already).
    Late,
}

impl Recorder {
    fn function(self) -> &'static str {
        match self {
            Recorder::InTransaction => "pgbranch.record_ddl",
            Recorder::Late => "pgbranch.record_ddl_late",
        }
    }
}

/// SQL for the statement that records `statement` (the client's text).
pub fn record_sql(origin: &Origin, statement: &[u8], ddl: &Ddl) -> Vec<u8> {
    record_sql_with(Recorder::InTransaction, origin, statement, ddl)
}

/// [`record_sql`] calling `recorder`'s function.
pub fn record_sql_with(
    recorder: Recorder,
    origin: &Origin,
    statement: &[u8],
    ddl: &Ddl,
) -> Vec<u8> {
    let mut sql = format!("SELECT {}(", recorder.function()).into_bytes();
    let values: [&[u8]; 7] = [
        origin.branch.as_bytes(),
        statement,
        ddl.tag.as_bytes(),
        ddl.object_type.as_str().as_bytes(),
        ddl.identity.as_bytes(),
        ddl.action.as_str().as_bytes(),
        origin.client_addr.as_bytes(),
    ];
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            sql.push(b',');
        }
        sql.extend_from_slice(&dollar_quote(v));
    }
    if let Some(rows) = rows_expr(ddl) {
        sql.push(b',');
        sql.extend_from_slice(rows.as_bytes());
    }
    sql.push(b')');
    sql
}

/// Parse/Bind/Execute/Close frames running `sql` with text `params` on
/// the proxy's own named statement and portal.
///
/// A Close of the statement goes first: when an earlier injected Execute
/// failed, the server skipped the Closes after it (up to the Sync), and the
/// statement would still exist. Closing a statement that does not exist is
/// not an error.
pub fn extended_frames(sql: &[u8], params: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut close = vec![b'S'];
    close.extend_from_slice(INJECTED);
    close.push(0);
    put_message(&mut out, b'C', &close);
    let mut parse = INJECTED.to_vec();
    parse.push(0);
    parse.extend_from_slice(sql);
    parse.extend_from_slice(&[0, 0, 0]);
    put_message(&mut out, b'P', &parse);
    let mut bind = Vec::new();
    for _ in 0..2 {
        bind.extend_from_slice(INJECTED);
        bind.push(0);
    }
    bind.extend_from_slice(&[0, 0]);
    bind.extend_from_slice(&(params.len() as u16).to_be_bytes());
    for p in params {
        bind.extend_from_slice(&(p.len() as u32).to_be_bytes());
        bind.extend_from_slice(p);
    }
    bind.extend_from_slice(&[0, 0]);
    put_message(&mut out, b'B', &bind);
    let mut execute = INJECTED.to_vec();
    execute.extend_from_slice(&[0, 0, 0, 0, 0]);
    put_message(&mut out, b'E', &execute);
    for kind in [b'P', b'S'] {
        let mut close = vec![kind];
        close.extend_from_slice(INJECTED);
        close.push(0);
        put_message(&mut out, b'C', &close);
    }
    out
}

/// Extended-protocol form of [`begin_sql`].
pub fn begin_frames(origin: &Origin) -> Vec<u8> {
    extended_frames(
        b"SELECT pgbranch.ddl_begin($1, $2)",
        &[origin.branch.as_bytes(), origin.client_addr.as_bytes()],
    )
}

/// Extended-protocol form of [`record_sql`].
pub fn record_frames(origin: &Origin, statement: &[u8], ddl: &Ddl) -> Vec<u8> {
    record_frames_with(Recorder::InTransaction, origin, statement, ddl)
}

/// [`record_frames`] calling `recorder`'s function.
pub fn record_frames_with(
    recorder: Recorder,
    origin: &Origin,
    statement: &[u8],
    ddl: &Ddl,
) -> Vec<u8> {
    let mut sql = format!("SELECT {}($1, $2, $3, $4, $5, $6, $7", recorder.function()).into_bytes();
    if let Some(rows) = rows_expr(ddl) {
        sql.extend_from_slice(b", ");
        sql.extend_from_slice(rows.as_bytes());
    }
    sql.push(b')');
    extended_frames(
        &sql,
        &[
            origin.branch.as_bytes(),
            statement,
            ddl.tag.as_bytes(),
            ddl.object_type.as_str().as_bytes(),
            ddl.identity.as_bytes(),
            ddl.action.as_str().as_bytes(),
            origin.client_addr.as_bytes(),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollar_quote_picks_a_tag_the_text_cannot_close() {
        assert_eq!(dollar_quote(b"abc"), b"$pgb$abc$pgb$");
        assert_eq!(dollar_quote(b"a $pgb$ b"), b"$pgb1$a $pgb$ b$pgb1$");
        // Text ending in a prefix of the tag would join with the closing tag.
        assert_eq!(dollar_quote(b"x$pgb"), b"$pgb1$x$pgb$pgb1$");
        assert_eq!(dollar_quote(b"x$"), b"$pgb$x$$pgb$");
        assert_eq!(dollar_quote(b""), b"$pgb$$pgb$");
    }

    #[test]
    fn only_plain_names_are_re_quoted_for_the_row_count() {
        assert_eq!(
            simple_path("public.t1").as_deref(),
            Some("\"public\".\"t1\"")
        );
        assert_eq!(simple_path("t"), Some("\"t\"".into()));
        assert_eq!(simple_path("Sales.t"), None);
        assert_eq!(simple_path("a.b.c.d"), None);
        assert_eq!(simple_path(""), None);
        assert_eq!(simple_path("x\"y"), None);
    }
}
