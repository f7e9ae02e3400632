//! Schema branches, the proxy's part (`docs/branches.md`).
//!
//! A branch is a set of schemas in the upstream database: branch `main` is
//! the versioned schemas themselves (`public` by default), branch `b` owns
//! `public@b` and so on; `pgbranch.branch_schemas` records the mapping and
//! the SQL functions of migration 2 (`src/history/sql/0002_branches.sql`)
//! create, list, diff and drop branches, in-band, as the caller.
//!
//! This module holds what the proxy itself does for a branch session:
//! the `search_path` it puts in the upstream startup packet, the query that
//! checks the branch at connect time, and the branch commands' SQL.

pub mod commands;

use crate::protocol::query_message;

/// The schema that holds logical schema `logical` on branch `branch`.
pub fn physical_name(logical: &str, branch: &str) -> String {
    format!("{logical}@{branch}")
}

/// `name` quoted as an SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as an SQL literal that means the same under every
/// `standard_conforming_strings` (a dollar quote).
fn literal(value: &str) -> String {
    String::from_utf8(crate::history::record::dollar_quote(value.as_bytes()))
        .expect("UTF-8 in, UTF-8 out")
}

/// The server's default `search_path`.
pub const DEFAULT_SEARCH_PATH: &str = "\"$user\", public";

/// Splits a `search_path` value into its elements, unquoted.
pub fn path_elements(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => {
                quoted = !quoted;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur));
                was_quoted = false;
            }
            c if c.is_whitespace() && !quoted => {}
            c if quoted || was_quoted => cur.push(c),
            c => cur.push(c.to_ascii_lowercase()),
        }
    }
    if !cur.is_empty() || !out.is_empty() {
        out.push(cur);
    }
    out.retain(|e| !e.is_empty());
    out
}

/// The schemas a branch session assumes before the database has said:
/// `logical` each mapped to its `<logical>@<branch>` copy.
pub fn assumed_schemas(logical: &[String], branch: &str) -> Vec<(String, String)> {
    logical
        .iter()
        .map(|l| (l.clone(), physical_name(l, branch)))
        .collect()
}

/// The `search_path` of a branch session: the client's path (or the
/// server default) with each versioned schema replaced by the branch's
/// copy (`schemas`: logical, physical). A versioned schema of `main` never
/// stays on the path.
pub fn branch_search_path(client_path: Option<&str>, schemas: &[(String, String)]) -> String {
    path_elements(client_path.unwrap_or(DEFAULT_SEARCH_PATH))
        .iter()
        .map(|e| match schemas.iter().find(|(l, _)| l == e) {
            Some((_, physical)) => quote_ident(physical),
            None => quote_ident(e),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Query that checks a branch at connect time and marks the session
/// as using it (a shared advisory lock that DROP BRANCH respects); its
/// rows are the branch's (logical, physical) schema pairs, each with the
/// search_path configured for the role and database (or NULL).
pub fn enter_query(branch: &str) -> Vec<u8> {
    query_message(&format!(
        "SELECT logical, physical, pgbranch.configured_search_path() FROM pgbranch.enter_branch({})",
        literal(branch)
    ))
}

/// The statement that sets the session's `search_path` to `path`.
pub fn set_path_sql(path: &str) -> String {
    format!(
        "SELECT pg_catalog.set_config('search_path', {}, false)",
        literal(path)
    )
}

/// [`set_path_sql`] as a Query message.
pub fn set_path_query(path: &str) -> Vec<u8> {
    query_message(&set_path_sql(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_path_points_at_the_branch() {
        assert_eq!(
            branch_search_path(None, &assumed_schemas(&["public".into()], "feature")),
            "\"$user\", \"public@feature\""
        );
    }

    #[test]
    fn client_paths_keep_their_shared_schemas() {
        assert_eq!(
            branch_search_path(
                Some("extensions, PUBLIC,\"Mixed\""),
                &assumed_schemas(&["public".into(), "Mixed".into()], "b/1")
            ),
            "\"extensions\", \"public@b/1\", \"Mixed@b/1\""
        );
        assert_eq!(
            path_elements(" \"a\"\"b\" , c "),
            vec!["a\"b".to_string(), "c".to_string()]
        );
    }

    #[test]
    fn literals_are_escaped() {
        let q = set_path_query("\"it's\", a\\b");
        assert!(
            String::from_utf8_lossy(&q).contains("$pgb$\"it's\", a\\b$pgb$"),
            "{q:?}"
        );
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
