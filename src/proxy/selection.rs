//! Branch and as-of selection carried in the StartupMessage.
//!
//! A client selects a branch (and later an as-of time) in one of these ways
//! (`DESIGN.md`, "Connection lifecycle"):
//! - startup parameter `pgbranch.branch` / `pgbranch.as_of`;
//! - inside `options`: `-c branch=NAME`, `-cbranch=NAME`, `--branch=NAME`,
//!   `-c pgbranch.branch=NAME` (and the same for `as_of`);
//! - a database name `app/NAME`.
//!
//! The selection is removed from what is forwarded: everything else in
//! `options` reaches the server byte for byte, in its original order.

use crate::protocol::backend::PgError;
use crate::protocol::startup::StartupMessage;

/// Name of the branch selected when the client names none.
pub const DEFAULT_BRANCH: &str = "main";
/// Longest accepted branch name.
pub const MAX_BRANCH_NAME: usize = 40;

/// What the client selected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub branch: String,
    /// Where the branch came from, for messages (`None` = default).
    pub branch_source: Option<&'static str>,
    pub as_of: Option<String>,
}

/// Which of the two selectable settings a key names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Setting {
    Branch,
    AsOf,
}

fn setting_for(key: &str) -> Option<Setting> {
    // PostgreSQL folds GUC names to lower case and turns '-' into '_' in
    // `--name=value` options; accept what it would.
    let key = key.to_ascii_lowercase().replace('-', "_");
    match key.as_str() {
        "branch" | "pgbranch.branch" => Some(Setting::Branch),
        "as_of" | "pgbranch.as_of" => Some(Setting::AsOf),
        _ => None,
    }
}

/// Splits an `options` string into tokens as PostgreSQL does
/// (`pg_split_opts`): whitespace separates, a backslash escapes the next
/// character. Each token keeps its raw text (for forwarding) and its
/// unescaped value (for reading).
fn split_options(options: &[u8]) -> Vec<(std::ops::Range<usize>, Vec<u8>)> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < options.len() {
        while i < options.len() && options[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= options.len() {
            break;
        }
        let start = i;
        let mut value = Vec::new();
        while i < options.len() && !options[i].is_ascii_whitespace() {
            if options[i] == b'\\' && i + 1 < options.len() {
                i += 1;
            }
            value.push(options[i]);
            i += 1;
        }
        tokens.push((start..i, value));
    }
    tokens
}

/// One `name=value` found in `options`, and the tokens it occupied.
struct Found {
    setting: Setting,
    value: String,
    tokens: std::ops::Range<usize>,
}

/// Finds the settings pgbranch owns in an `options` string.
fn find_in_options(tokens: &[(std::ops::Range<usize>, Vec<u8>)]) -> Result<Vec<Found>, PgError> {
    let mut found = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let tok = &tokens[i].1;
        // `-c name=value`, `-cname=value`, `--name=value`.
        let (assignment, used) = if tok.as_slice() == b"-c" {
            match tokens.get(i + 1) {
                Some((_, next)) => (Some(next.as_slice()), 2),
                None => (None, 1),
            }
        } else if let Some(rest) = tok.strip_prefix(b"--") {
            (Some(rest), 1)
        } else if let Some(rest) = tok.strip_prefix(b"-c") {
            (Some(rest), 1)
        } else {
            (None, 1)
        };
        if let Some(assignment) = assignment {
            if let Some(eq) = assignment.iter().position(|&b| b == b'=') {
                let key = String::from_utf8_lossy(&assignment[..eq]);
                if let Some(setting) = setting_for(&key) {
                    let value = std::str::from_utf8(&assignment[eq + 1..])
                        .map_err(|_| {
                            PgError::fatal(
                                "22021",
                                "pgbranch selection in options is not valid UTF-8",
                            )
                        })?
                        .to_string();
                    found.push(Found {
                        setting,
                        value,
                        tokens: i..i + used,
                    });
                }
            }
        }
        i += used;
    }
    Ok(found)
}

/// Records `value` from `source` for a setting, refusing disagreement.
fn merge(
    slot: &mut Option<(String, &'static str)>,
    what: &str,
    value: String,
    source: &'static str,
) -> Result<(), PgError> {
    match slot {
        Some((existing, existing_source)) if *existing != value => Err(PgError::fatal(
            "22023",
            format!(
                "conflicting {what} selections: {existing_source} says \"{existing}\", {source} says \"{value}\""
            ),
        )
        .with_hint(format!("select the {what} in one place only"))),
        Some(_) => Ok(()),
        None => {
            *slot = Some((value, source));
            Ok(())
        }
    }
}

/// Validates a branch name: letters, digits, `-`, `_`, `.`, `/`, at most
/// 40 characters. Checked here so that no other name ever reaches SQL.
pub fn validate_branch_name(name: &str) -> Result<(), PgError> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if name.is_empty() || name.len() > MAX_BRANCH_NAME || !ok_chars {
        return Err(PgError::fatal(
            "42602",
            format!("invalid branch name \"{}\"", name.escape_default()),
        )
        .with_hint(
            "branch names use letters, digits, '-', '_', '.' and '/', at most 40 characters",
        ));
    }
    Ok(())
}

/// Extracts the selection from `startup` and removes it, so that what
/// remains can be forwarded to the server.
pub fn extract(startup: &mut StartupMessage) -> Result<Selection, PgError> {
    let mut branch: Option<(String, &'static str)> = None;
    let mut as_of: Option<(String, &'static str)> = None;

    // Startup parameters.
    for (key, slot, what) in [
        ("pgbranch.branch", &mut branch, "branch"),
        ("pgbranch.as_of", &mut as_of, "as_of"),
    ] {
        if let Some(v) = startup.get(key) {
            let v = std::str::from_utf8(v)
                .map_err(|_| PgError::fatal("22021", format!("{key} is not valid UTF-8")))?
                .to_string();
            merge(slot, what, v, "startup parameter")?;
            startup.remove(key);
        }
    }

    // `options`.
    if let Some(options) = startup.get("options").map(<[u8]>::to_vec) {
        let tokens = split_options(&options);
        let found = find_in_options(&tokens)?;
        if !found.is_empty() {
            let mut drop_token = vec![false; tokens.len()];
            for f in found {
                let (slot, what) = match f.setting {
                    Setting::Branch => (&mut branch, "branch"),
                    Setting::AsOf => (&mut as_of, "as_of"),
                };
                merge(slot, what, f.value, "options")?;
                for t in f.tokens {
                    drop_token[t] = true;
                }
            }
            // Rebuild from the raw text of the tokens kept, so escapes and
            // every other option reach the server exactly as sent.
            let kept: Vec<&[u8]> = tokens
                .iter()
                .zip(&drop_token)
                .filter(|(_, d)| !**d)
                .map(|((range, _), _)| &options[range.clone()])
                .collect();
            if kept.is_empty() {
                startup.remove("options");
            } else {
                startup.set("options", kept.join(&b' '));
            }
        }
    }

    // `database=app/branch`.
    if let Some(db) = startup.get("database").map(<[u8]>::to_vec) {
        if let Some(slash) = db.iter().position(|&b| b == b'/') {
            let name = std::str::from_utf8(&db[slash + 1..])
                .map_err(|_| PgError::fatal("22021", "branch in database name is not valid UTF-8"))?
                .to_string();
            merge(&mut branch, "branch", name, "database name")?;
            startup.set("database", db[..slash].to_vec());
        }
    }

    let (branch, branch_source) = match branch {
        Some((b, s)) => (b, Some(s)),
        None => (DEFAULT_BRANCH.to_string(), None),
    };
    validate_branch_name(&branch)?;
    Ok(Selection {
        branch,
        branch_source,
        as_of: as_of.map(|(v, _)| v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PROTOCOL_3_0;

    fn startup(params: &[(&str, &str)]) -> StartupMessage {
        StartupMessage {
            version: PROTOCOL_3_0,
            params: params
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    fn run(params: &[(&str, &str)]) -> (Result<Selection, PgError>, StartupMessage) {
        let mut s = startup(params);
        let r = extract(&mut s);
        (r, s)
    }

    #[test]
    fn default_is_main_and_nothing_changes() {
        let params = [
            ("user", "u"),
            ("database", "d"),
            ("options", "-c datestyle=ISO"),
        ];
        let (sel, s) = run(&params);
        let sel = sel.unwrap();
        assert_eq!(sel.branch, "main");
        assert_eq!(sel.branch_source, None);
        assert_eq!(s, startup(&params));
    }

    #[test]
    fn every_options_form_selects_and_is_removed() {
        for opts in [
            "-c branch=feat",
            "-cbranch=feat",
            "--branch=feat",
            "-c pgbranch.branch=feat",
            "-cpgbranch.branch=feat",
            "--pgbranch.branch=feat",
            "-c BRANCH=feat",
        ] {
            let (sel, s) = run(&[("user", "u"), ("options", opts)]);
            assert_eq!(sel.unwrap().branch, "feat", "{opts}");
            assert_eq!(s.get("options"), None, "{opts}");
        }
    }

    #[test]
    fn other_options_are_kept_verbatim() {
        let (sel, s) = run(&[(
            "options",
            "-c datestyle=ISO,\\ DMY  -c branch=x --as-of=2024-01-01 -c\\ intervalstyle=iso_8601",
        )]);
        let sel = sel.unwrap();
        assert_eq!(sel.branch, "x");
        assert_eq!(sel.as_of.as_deref(), Some("2024-01-01"));
        assert_eq!(
            s.get("options"),
            Some(&b"-c datestyle=ISO,\\ DMY -c\\ intervalstyle=iso_8601"[..])
        );
    }

    #[test]
    fn startup_parameter_and_database_name() {
        let (sel, s) = run(&[("pgbranch.branch", "a"), ("database", "app")]);
        assert_eq!(sel.unwrap().branch, "a");
        assert_eq!(s.get("pgbranch.branch"), None);

        let (sel, s) = run(&[("database", "app/feature/x")]);
        let sel = sel.unwrap();
        assert_eq!(sel.branch, "feature/x");
        assert_eq!(sel.branch_source, Some("database name"));
        assert_eq!(s.get("database"), Some(&b"app"[..]));

        let (sel, _) = run(&[("pgbranch.as_of", "now()")]);
        assert_eq!(sel.unwrap().as_of.as_deref(), Some("now()"));
    }

    #[test]
    fn agreeing_sources_are_fine_and_conflicts_are_errors() {
        let (sel, _) = run(&[("database", "app/a"), ("options", "-c branch=a")]);
        assert_eq!(sel.unwrap().branch, "a");

        let (sel, _) = run(&[("database", "app/a"), ("options", "-c branch=b")]);
        let err = sel.unwrap_err();
        assert_eq!(err.code, "22023");
        assert!(
            err.message.contains("conflicting branch"),
            "{}",
            err.message
        );

        let (sel, _) = run(&[("pgbranch.branch", "a"), ("options", "--branch=b")]);
        assert_eq!(sel.unwrap_err().code, "22023");
    }

    #[test]
    fn invalid_branch_names_are_refused() {
        for bad in ["", "a b", "x;drop", "é", &"a".repeat(41), "a'b"] {
            let (sel, _) = run(&[("pgbranch.branch", bad)]);
            assert_eq!(sel.unwrap_err().code, "42602", "{bad:?}");
        }
        assert!(validate_branch_name(&"a".repeat(40)).is_ok());
        assert!(validate_branch_name("team/feat-1.2_x").is_ok());
    }

    #[test]
    fn dangling_dash_c_is_left_alone() {
        let (sel, s) = run(&[("options", "-c")]);
        assert_eq!(sel.unwrap().branch, "main");
        assert_eq!(s.get("options"), Some(&b"-c"[..]));
    }
}
