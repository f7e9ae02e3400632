//! What the history CLI reads and prints: the log, an object's definition
//! at a version, the diff between two versions, drift, and the export of
//! recorded statements as numbered migration files.
//!
//! Everything is read with plain SQL from the `pgbranch` schema, so the
//! same answers are available without pgbranch.

use std::fmt::Write as _;

use tokio_postgres::Client;

/// One row of the log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub version: i64,
    pub recorded_at: String,
    pub role: String,
    pub command_tag: String,
    pub object_type: String,
    pub identity: String,
    pub action: String,
    pub statement: String,
}

/// Filters of `pgbranch log`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub branch: String,
    pub object: Option<String>,
    /// A timestamp PostgreSQL understands (`2026-01-01`, `now() - ...` is
    /// not accepted: it is a value, not an expression).
    pub since: Option<String>,
    pub limit: Option<i64>,
}

/// The branch's history, oldest first.
pub async fn log(client: &Client, f: &LogFilter) -> Result<Vec<LogEntry>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT h.version, h.recorded_at::text, h.role::text, h.command_tag, h.object_type, \
                    h.object_identity, h.action, h.statement \
             FROM pgbranch.schema_history h \
             WHERE h.branch = $1 \
               AND ($2::text IS NULL OR h.object_identity = $2 \
                    OR EXISTS (SELECT 1 FROM pgbranch.object_versions o \
                               WHERE o.branch = h.branch AND o.version = h.version \
                                 AND o.identity = $2)) \
               AND ($3::text IS NULL OR h.recorded_at >= $3::timestamptz) \
             ORDER BY h.version \
             LIMIT $4",
            &[&f.branch, &f.object, &f.since, &f.limit.unwrap_or(i64::MAX)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| LogEntry {
            version: r.get(0),
            recorded_at: r.get(1),
            role: r.get(2),
            command_tag: r.get(3),
            object_type: r.get(4),
            identity: r.get(5),
            action: r.get(6),
            statement: r.get(7),
        })
        .collect())
}

/// Prints log entries, one block per version.
pub fn format_log(entries: &[LogEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let _ = writeln!(
            out,
            "version {}  {}  {}  {} {} {}",
            e.version, e.recorded_at, e.role, e.action, e.object_type, e.identity
        );
        let _ = writeln!(out, "    {}", e.command_tag);
        for line in e.statement.lines() {
            let _ = writeln!(out, "    | {line}");
        }
    }
    out
}

/// An object's definition as of a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    pub object_type: String,
    pub identity: String,
    pub definition: String,
}

/// The latest version of the branch.
pub async fn current_version(client: &Client, branch: &str) -> Result<i64, tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT coalesce(max(version), 0) FROM pgbranch.schema_history WHERE branch = $1",
            &[&branch],
        )
        .await?;
    Ok(row.get(0))
}

/// Every object's definition at `version` (objects absent then are left
/// out), ordered by type and identity.
pub async fn definitions_at(
    client: &Client,
    branch: &str,
    version: i64,
) -> Result<Vec<Definition>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT object_type, identity, definition FROM ( \
                 SELECT DISTINCT ON (object_type, identity) object_type, identity, definition \
                 FROM pgbranch.object_versions \
                 WHERE branch = $1 AND version <= $2 \
                 ORDER BY object_type, identity, version DESC) d \
             WHERE definition IS NOT NULL ORDER BY object_type, identity",
            &[&branch, &version],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Definition {
            object_type: r.get(0),
            identity: r.get(1),
            definition: r.get(2),
        })
        .collect())
}

/// Whether `d` is the object the user named: its identity exactly, or
/// without quotes, or without its schema.
pub fn names(d: &Definition, object: &str) -> bool {
    let plain = d.identity.replace('"', "");
    d.identity == object
        || plain == object
        || plain
            .split_once('.')
            .is_some_and(|(_, rest)| rest == object)
}

/// A unified diff of two texts (`diff -u` format, 3 lines of context);
/// empty when they are equal.
pub fn unified_diff(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    // Longest common subsequence table, from the end.
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Edit script: (kind, line in a, line in b).
    let mut ops: Vec<(char, usize, usize)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, j));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            // Deletions first, as diff -u prints them.
            ops.push(('-', i, j));
            i += 1;
        } else {
            ops.push(('+', i, j));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    let mut k = 0;
    while k < ops.len() {
        if ops[k].0 == ' ' {
            k += 1;
            continue;
        }
        // A hunk: from CONTEXT before this change to CONTEXT after the
        // last change closer than 2*CONTEXT lines.
        let start = k.saturating_sub(CONTEXT);
        let mut end = k;
        let mut last_change = k;
        while end < ops.len() {
            if ops[end].0 != ' ' {
                last_change = end;
            } else if end - last_change > 2 * CONTEXT {
                break;
            }
            end += 1;
        }
        let end = (last_change + CONTEXT + 1).min(ops.len());
        let hunk = &ops[start..end];
        let a_start = hunk[0].1;
        let b_start = hunk[0].2;
        let a_len = hunk.iter().filter(|o| o.0 != '+').count();
        let b_len = hunk.iter().filter(|o| o.0 != '-').count();
        let range = |s: usize, n: usize| {
            if n == 0 {
                format!("{s},0")
            } else if n == 1 {
                format!("{}", s + 1)
            } else {
                format!("{},{n}", s + 1)
            }
        };
        let _ = writeln!(
            out,
            "@@ -{} +{} @@",
            range(a_start, a_len),
            range(b_start, b_len)
        );
        for &(kind, ai, bj) in hunk {
            let line = if kind == '+' { b[bj] } else { a[ai] };
            let _ = writeln!(out, "{kind}{line}");
        }
        k = end;
    }
    out
}

/// The diff of every object that differs between two versions.
pub fn diff_definitions(from: &[Definition], to: &[Definition], v_from: i64, v_to: i64) -> String {
    diff_named(
        from,
        to,
        &format!("version {v_from}"),
        &format!("version {v_to}"),
    )
}

/// Unified diff of two sets of definitions, each side labelled `name`
/// (e.g. `version 3`, or a branch name).
pub fn diff_named(
    from: &[Definition],
    to: &[Definition],
    from_name: &str,
    to_name: &str,
) -> String {
    use std::collections::BTreeMap;
    /// (type, identity) -> (definition at `from`, definition at `to`).
    type Pair<'a> = (Option<&'a str>, Option<&'a str>);
    let mut all: BTreeMap<(&str, &str), Pair> = BTreeMap::new();
    for d in from {
        all.entry((&d.object_type, &d.identity)).or_default().0 = Some(&d.definition);
    }
    for d in to {
        all.entry((&d.object_type, &d.identity)).or_default().1 = Some(&d.definition);
    }
    let mut out = String::new();
    for ((ty, id), (old, new)) in all {
        let label = |v: &str, present: bool| {
            if present {
                format!("{ty} {id} ({v})")
            } else {
                "/dev/null".to_string()
            }
        };
        let text = |s: Option<&str>| s.map(|s| format!("{s}\n")).unwrap_or_default();
        out.push_str(&unified_diff(
            &text(old),
            &text(new),
            &label(from_name, old.is_some()),
            &label(to_name, new.is_some()),
        ));
    }
    out
}

/// File name of an exported migration: `0007_create_table_users.sql`.
pub fn export_file_name(version: i64, action: &str, object_type: &str, identity: &str) -> String {
    let mut slug = String::new();
    for part in [action, object_type, identity] {
        for c in part.chars() {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() {
                slug.push(c);
            } else if !slug.ends_with('_') {
                slug.push('_');
            }
        }
        if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug: String = slug.trim_matches('_').chars().take(60).collect();
    format!("{version:04}_{}.sql", slug.trim_end_matches('_'))
}

/// The text of an exported migration file.
pub fn export_file_text(e: &LogEntry) -> String {
    let stmt = e.statement.trim_end();
    format!(
        "-- pgbranch version {} ({} {} {}), recorded {} by {}\n{}{}\n",
        e.version,
        e.action,
        e.object_type,
        e.identity,
        e.recorded_at,
        e.role,
        stmt,
        if stmt.ends_with(';') { "" } else { ";" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unified_diff_of_a_changed_line() {
        let old = "CREATE TABLE t (\n    a integer,\n    b text\n);\n";
        let new = "CREATE TABLE t (\n    a integer,\n    b text,\n    c date\n);\n";
        let d = unified_diff(old, new, "old", "new");
        assert_eq!(
            d,
            "--- old\n+++ new\n@@ -1,4 +1,5 @@\n CREATE TABLE t (\n     a integer,\n-    b text\n+    b text,\n+    c date\n );\n"
        );
        assert_eq!(unified_diff(old, old, "a", "b"), "");
    }

    #[test]
    fn unified_diff_of_new_and_removed_texts() {
        assert_eq!(
            unified_diff("", "x\n", "/dev/null", "b"),
            "--- /dev/null\n+++ b\n@@ -0,0 +1 @@\n+x\n"
        );
        assert_eq!(
            unified_diff("x\ny\n", "", "a", "/dev/null"),
            "--- a\n+++ /dev/null\n@@ -1,2 +0,0 @@\n-x\n-y\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old: String = (0..20).map(|i| format!("l{i}\n")).collect();
        let new = old.replace("l2\n", "L2\n").replace("l17\n", "L17\n");
        let d = unified_diff(&old, &new, "a", "b");
        assert_eq!(d.matches("@@ -").count(), 2, "{d}");
        assert!(d.contains("@@ -1,6 +1,6 @@"), "{d}");
        assert!(d.contains("@@ -15,6 +15,6 @@"), "{d}");
    }

    #[test]
    fn export_names_sort_by_version() {
        assert_eq!(
            export_file_name(7, "create", "table", "public.users"),
            "0007_create_table_public_users.sql"
        );
        assert_eq!(
            export_file_name(12, "alter", "materialized view", "\"Sales\".\"Big\""),
            "0012_alter_materialized_view_sales_big.sql"
        );
    }

    #[test]
    fn objects_are_named_with_or_without_schema_and_quotes() {
        let d = Definition {
            object_type: "table".into(),
            identity: "public.\"Users\"".into(),
            definition: String::new(),
        };
        assert!(names(&d, "public.\"Users\""));
        assert!(names(&d, "public.Users"));
        assert!(names(&d, "Users"));
        assert!(!names(&d, "users"));
    }
}
