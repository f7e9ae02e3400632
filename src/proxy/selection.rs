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
        while i < options.len() && is_c_space(options[i]) {
            i += 1;
        }
        if i >= options.len() {
            break;
        }
        let start = i;
        let mut value = Vec::new();
        let mut escaped = false;
        while i < options.len() && (escaped || !is_c_space(options[i])) {
            if !escaped && options[i] == b'\\' {
                // A trailing backslash escapes nothing and is dropped, as
                // PostgreSQL's pg_split_opts does.
                escaped = true;
            } else {
                escaped = false;
                value.push(options[i]);
            }
            i += 1;
        }
        tokens.push((start..i, value));
    }
    tokens
}

/// C's `isspace` in the C locale, which PostgreSQL uses to split `options`
/// (it includes vertical tab, unlike `u8::is_ascii_whitespace`).
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// One `name=value` found in `options`, and the tokens it occupied.
struct Found {
    setting: Setting,
    value: String,
    tokens: std::ops::Range<usize>,
}

/// The `name=value` assignments of an `options` string (`-c name=value`,
/// `-cname=value`, `--name=value`), with the tokens each occupies.
fn assignments(
    tokens: &[(std::ops::Range<usize>, Vec<u8>)],
) -> Vec<(&[u8], &[u8], std::ops::Range<usize>)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let tok = &tokens[i].1;
        let (assignment, used) = if tok.as_slice() == b"-c" {
            (tokens.get(i + 1).map(|t| t.1.as_slice()), 2)
        } else if let Some(rest) = tok.strip_prefix(b"--") {
            (Some(rest), 1)
        } else if let Some(rest) = tok.strip_prefix(b"-c") {
            (Some(rest), 1)
        } else {
            (None, 1)
        };
        if let Some(a) = assignment {
            if let Some(eq) = a.iter().position(|&b| b == b'=') {
                out.push((&a[..eq], &a[eq + 1..], i..(i + used).min(tokens.len())));
            }
        }
        i += used;
    }
    out
}

/// Finds the settings pgbranch owns in an `options` string.
fn find_in_options(tokens: &[(std::ops::Range<usize>, Vec<u8>)]) -> Result<Vec<Found>, PgError> {
    let mut found = Vec::new();
    for (key, value, range) in assignments(tokens) {
        if let Some(setting) = setting_for(&String::from_utf8_lossy(key)) {
            let value = std::str::from_utf8(value)
                .map_err(|_| {
                    PgError::fatal("22021", "pgbranch selection in options is not valid UTF-8")
                })?
                .to_string();
            found.push(Found {
                setting,
                value,
                tokens: range,
            });
        }
    }
    Ok(found)
}

/// The value the server will give GUC `name` (lower case) from an
/// `options` string (`-c name=v`, `-cname=v`, `--name=v`; the last wins).
pub fn option_value(options: &[u8], name: &str) -> Option<String> {
    let tokens = split_options(options);
    assignments(&tokens)
        .into_iter()
        .rev()
        .find(|(key, _, _)| {
            String::from_utf8_lossy(key)
                .to_ascii_lowercase()
                .replace('-', "_")
                == name
        })
        .map(|(_, value, _)| String::from_utf8_lossy(value).into_owned())
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
    // Read the parameters as PostgreSQL will: the last occurrence wins.
    startup.keep_last_occurrences();
    let mut branch: Option<(String, &'static str)> = None;
    let mut as_of: Option<(String, &'static str)> = None;

    // Startup parameters.
    // Any other startup parameter is a GUC to PostgreSQL, whose names are
    // case-insensitive: match ours the same way.
    let mut i = 0;
    while i < startup.params.len() {
        let name = String::from_utf8_lossy(&startup.params[i].0).to_ascii_lowercase();
        let (slot, what) = match name.as_str() {
            "pgbranch.branch" => (&mut branch, "branch"),
            "pgbranch.as_of" => (&mut as_of, "as_of"),
            _ => {
                i += 1;
                continue;
            }
        };
        let (_, value) = startup.params.remove(i);
        let v = String::from_utf8(value)
            .map_err(|_| PgError::fatal("22021", format!("{name} is not valid UTF-8")))?;
        merge(slot, what, v, "startup parameter")?;
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
    fn option_values_are_read_as_the_server_reads_them() {
        assert_eq!(
            option_value(b"-c search_path=a,b --search-path=c\\ d", "search_path").as_deref(),
            Some("c d")
        );
        assert_eq!(
            option_value(b"-csearch_path=x", "search_path").as_deref(),
            Some("x")
        );
        assert_eq!(option_value(b"-c datestyle=iso", "search_path"), None);
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
    fn parameters_are_read_as_postgresql_reads_them() {
        // The last occurrence wins, as in PostgreSQL.
        let (sel, s) = run(&[
            ("options", "-c work_mem=1MB"),
            ("options", "-c pgbranch.branch=feat"),
        ]);
        assert_eq!(sel.unwrap().branch, "feat");
        assert_eq!(s.get("options"), None);
        // Setting names are case-insensitive.
        let (sel, s) = run(&[("PGBRANCH.BRANCH", "feat"), ("user", "u")]);
        assert_eq!(sel.unwrap().branch, "feat");
        assert_eq!(s.params.len(), 1);
        // Vertical tab separates options, as C's isspace does.
        let (sel, _) = run(&[("options", "-c\x0bpgbranch.branch=feat")]);
        assert_eq!(sel.unwrap().branch, "feat");
        // A trailing backslash escapes nothing and is dropped.
        let (sel, _) = run(&[("options", "--branch=feat\\")]);
        assert_eq!(sel.unwrap().branch, "feat");
        // An escaped space belongs to the value.
        let (sel, _) = run(&[("options", "--branch=a\\ b")]);
        assert_eq!(sel.unwrap_err().code, "42602");
    }

    #[test]
    fn dangling_dash_c_is_left_alone() {
        let (sel, s) = run(&[("options", "-c")]);
        assert_eq!(sel.unwrap().branch, "main");
        assert_eq!(s.get("options"), Some(&b"-c"[..]));
    }
}

#[cfg(test)]
mod proptests {
    //! `extract` reads client-controlled bytes before authentication: it
    //! must never panic, must leave a message without a selection exactly
    //! as sent, and must remove exactly the selection tokens from `options`.

    use super::*;
    use crate::protocol::PROTOCOL_3_0;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::Index;

    /// What `setting_for` must never see in the "no selection" inputs.
    fn is_selection_key(key: &str) -> bool {
        matches!(
            key.to_ascii_lowercase().replace('-', "_").as_str(),
            "branch" | "pgbranch.branch" | "as_of" | "pgbranch.as_of"
        )
    }

    /// A GUC-like name that is not one of pgbranch's settings.
    fn other_key() -> impl Strategy<Value = String> {
        "[a-zA-Z_][a-zA-Z0-9_.-]{0,15}".prop_filter("not a selection key", |k| !is_selection_key(k))
    }

    /// A value without `=` or unescaped whitespace; may hold escapes.
    fn value() -> BoxedStrategy<String> {
        vec(
            prop_oneof![
                4 => "[a-zA-Z0-9,:;._/+'\"()é-]{1,6}",
                1 => Just("\\ ".to_string()),
                1 => Just("\\\\".to_string()),
                1 => "\\\\[a-z]",
            ],
            0..4,
        )
        .prop_map(|parts| parts.concat())
        .boxed()
    }

    /// A bare word: no `=` even escaped, so it never forms a setting even
    /// as the argument of a preceding `-c`.
    fn word() -> impl Strategy<Value = String> {
        vec(
            prop_oneof![
                4 => "[a-zA-Z0-9,:;._/'é-]{1,6}",
                1 => Just("\\ ".to_string()),
                1 => Just("-c".to_string()),
            ],
            1..4,
        )
        .prop_map(|parts| parts.concat())
    }

    /// One option that is not a selection, as its tokens. A bare word may
    /// be a lone `-c`, which takes the next token as its argument.
    fn plain_option() -> impl Strategy<Value = Vec<String>> {
        prop_oneof![
            (other_key(), value()).prop_map(|(k, v)| vec!["-c".into(), format!("{k}={v}")]),
            (other_key(), value()).prop_map(|(k, v)| vec![format!("-c{k}={v}")]),
            (other_key(), value()).prop_map(|(k, v)| vec![format!("--{k}={v}")]),
            word().prop_map(|w| vec![w]),
        ]
    }

    /// [`plain_option`] without a lone `-c`, which would swallow a
    /// following selection token as its argument.
    fn complete_option() -> impl Strategy<Value = Vec<String>> {
        plain_option().prop_filter("no lone -c", |t| t.len() != 1 || t[0] != "-c")
    }

    /// Whitespace `pg_split_opts` and `split_options` both split on.
    fn sep() -> impl Strategy<Value = String> {
        vec(
            prop_oneof![Just(' '), Just('\t'), Just('\n'), Just('\r'), Just('\x0c')],
            1..3,
        )
        .prop_map(|cs| cs.into_iter().collect())
    }

    /// Joins tokens with random whitespace (and random leading/trailing).
    fn join_randomly(tokens: &[String], seps: &[String], lead: &str, trail: &str) -> String {
        let mut s = lead.to_string();
        for (i, t) in tokens.iter().enumerate() {
            if i > 0 {
                s.push_str(&seps[i % seps.len()]);
            }
            s.push_str(t);
        }
        s.push_str(trail);
        s
    }

    /// Anything, including selections with invalid, conflicting or
    /// non-UTF-8 values, dangling `-c`, stray backslashes.
    fn any_token() -> impl Strategy<Value = Vec<u8>> {
        let key = prop_oneof![
            Just("branch".to_string()),
            Just("BRANCH".to_string()),
            Just("pgbranch.branch".to_string()),
            Just("as-of".to_string()),
            Just("as_of".to_string()),
            Just("pgbranch.as_of".to_string()),
            other_key(),
        ];
        let prefix = prop_oneof![Just("-c "), Just("-c"), Just("--")];
        let raw = vec(any::<u8>(), 0..8);
        prop_oneof![
            (prefix, key, any_value())
                .prop_map(|(p, k, v)| [p.as_bytes(), k.as_bytes(), b"=", &v].concat()),
            Just(b"-c".to_vec()),
            Just(b"\\".to_vec()),
            Just(b"\\ ".to_vec()),
            "[a-z=\\\\-]{1,8}".prop_map(String::into_bytes),
            raw,
        ]
    }

    /// Mostly plausible branch names (so that selections often succeed),
    /// sometimes arbitrary bytes.
    fn any_value() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            2 => "[a-z0-9/]{1,6}".prop_map(String::into_bytes),
            1 => vec(any::<u8>(), 0..8),
        ]
    }

    fn any_options() -> impl Strategy<Value = Vec<u8>> {
        vec((any_token(), sep()), 0..8).prop_map(|parts| {
            parts
                .into_iter()
                .flat_map(|(t, s)| [t, s.into_bytes()].concat())
                .collect()
        })
    }

    fn any_params() -> impl Strategy<Value = Vec<(Vec<u8>, Vec<u8>)>> {
        let database = prop_oneof![
            vec(1u8..=255, 0..12),
            "[a-z]{0,6}/[a-zA-Z0-9/._-]{0,10}".prop_map(String::into_bytes),
        ];
        let param = prop_oneof![
            3 => any_options().prop_map(|v| (b"options".to_vec(), v)),
            1 => database.prop_map(|v| (b"database".to_vec(), v)),
            1 => any_value().prop_map(|v| (b"pgbranch.branch".to_vec(), v)),
            1 => any_value().prop_map(|v| (b"pgbranch.as_of".to_vec(), v)),
            1 => (vec(1u8..=255, 1..12), vec(1u8..=255, 0..12)),
        ];
        vec(param, 0..6)
    }

    fn startup(params: Vec<(Vec<u8>, Vec<u8>)>) -> StartupMessage {
        StartupMessage {
            version: PROTOCOL_3_0,
            params,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Never panics; on success the branch is valid and what is left
        /// carries no selection any more (extracting again changes nothing,
        /// also with repeated names: the last copy wins, as in PostgreSQL).
        #[test]
        fn extract_never_panics(params in any_params()) {
            let mut s = startup(params);
            if let Ok(sel) = extract(&mut s) {
                prop_assert!(validate_branch_name(&sel.branch).is_ok());
                prop_assert_eq!(s.get("pgbranch.branch"), None);
                prop_assert_eq!(s.get("pgbranch.as_of"), None);
                let before = s.clone();
                let again = extract(&mut s).expect("a cleaned message extracts");
                prop_assert_eq!(again.branch, DEFAULT_BRANCH);
                prop_assert_eq!(again.branch_source, None);
                prop_assert_eq!(again.as_of, None);
                prop_assert_eq!(s, before);
            }
        }

        /// No selection anywhere: the default branch, and not one byte of
        /// the message changes (options keep their exact whitespace) beyond
        /// dropping earlier copies of repeated names, which PostgreSQL
        /// ignores anyway.
        #[test]
        fn without_selection_nothing_changes(
            options in vec(plain_option(), 0..8),
            seps in vec(sep(), 1..4),
            lead in prop_oneof![Just(String::new()), sep()],
            trail in prop_oneof![Just(String::new()), sep()],
            database in "[a-zA-Z0-9_.-]{1,12}",
            others in vec((other_key(), vec(1u8..=255, 0..12)), 0..4),
        ) {
            let tokens: Vec<String> = options.concat();
            let mut params = vec![
                (b"user".to_vec(), b"u".to_vec()),
                (b"database".to_vec(), database.into_bytes()),
                (
                    b"options".to_vec(),
                    join_randomly(&tokens, &seps, &lead, &trail).into_bytes(),
                ),
            ];
            params.extend(others.into_iter().map(|(k, v)| (k.into_bytes(), v)));
            let mut original = startup(params);
            let mut s = original.clone();
            original.keep_last_occurrences();
            let sel = extract(&mut s).expect("no selection is never an error");
            prop_assert_eq!(sel.branch, DEFAULT_BRANCH);
            prop_assert_eq!(sel.branch_source, None);
            prop_assert_eq!(sel.as_of, None);
            prop_assert_eq!(s, original);
        }

        /// A branch (and maybe an as_of) inserted anywhere among other
        /// options is selected, and exactly its tokens are removed: the rest
        /// is the other tokens, raw, in order, joined by single spaces.
        #[test]
        fn selection_tokens_are_removed_and_nothing_else(
            options in vec(complete_option(), 0..6),
            name in "[a-zA-Z0-9._/-]{1,40}",
            form in 0usize..6,
            at in any::<Index>(),
            as_of in proptest::option::of(("[0-9a-z:.+-]{1,20}", any::<Index>(), any::<bool>())),
            seps in vec(sep(), 1..4),
            lead in prop_oneof![Just(String::new()), sep()],
            trail in prop_oneof![Just(String::new()), sep()],
        ) {
            let expected_rest = options.concat().join(" ");
            let branch: Vec<String> = match form {
                0 => vec!["-c".into(), format!("branch={name}")],
                1 => vec![format!("-cbranch={name}")],
                2 => vec![format!("--branch={name}")],
                3 => vec!["-c".into(), format!("pgbranch.branch={name}")],
                4 => vec!["-c".into(), format!("Branch={name}")],
                _ => vec![format!("--pgbranch.BRANCH={name}")],
            };
            let mut units = options;
            units.insert(at.index(units.len() + 1), branch);
            if let Some((value, pos, dashed)) = &as_of {
                let t = if *dashed {
                    vec![format!("--as-of={value}")]
                } else {
                    vec!["-c".into(), format!("as_of={value}")]
                };
                units.insert(pos.index(units.len() + 1), t);
            }
            let options_str = join_randomly(&units.concat(), &seps, &lead, &trail);
            let mut s = startup(vec![
                (b"user".to_vec(), b"u".to_vec()),
                (b"options".to_vec(), options_str.clone().into_bytes()),
                (b"database".to_vec(), b"app".to_vec()),
            ]);
            let sel = extract(&mut s).expect("a valid selection");
            prop_assert_eq!(&sel.branch, &name, "options {:?}", options_str);
            prop_assert_eq!(sel.branch_source, Some("options"));
            prop_assert_eq!(sel.as_of, as_of.map(|(v, _, _)| v));
            let mut expected = vec![(b"user".to_vec(), b"u".to_vec())];
            if !expected_rest.is_empty() {
                expected.push((b"options".to_vec(), expected_rest.into_bytes()));
            }
            expected.push((b"database".to_vec(), b"app".to_vec()));
            prop_assert_eq!(s.params, expected, "options {:?}", options_str);
        }
    }
}
