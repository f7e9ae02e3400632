//! Micro-benchmark of what the DDL history hook runs on every simple Query
//! before forwarding it (`src/history/hook.rs`, `on_query`):
//!
//! 1. `history::commands::parse` (is it `SHOW SCHEMA ...`?),
//! 2. `sql::classify::may_contain_ddl` (the lexical screen),
//! 3. only when the screen says yes: `split_statements` and `classify` of
//!    each statement.
//!
//! Prints nanoseconds per call for a set of typical statements, plus what
//! splitting and classifying every statement would cost without the
//! screen. Timing: `std::time::Instant` around batches of calls sized to
//! about `BENCH_BATCH_MS` milliseconds (default 20); the median of
//! `BENCH_BATCHES` batches (default 9) is reported, so a burst of machine
//! noise moves one batch, not the figure.
//!
//! Usage: cargo run --release --bin pgbranch-bench-classify

use std::hint::black_box;
use std::time::{Duration, Instant};

use pgbranch::history::commands;
use pgbranch::sql::classify::{classify, may_contain_ddl};
use pgbranch::sql::lexer::split_statements;

/// What the hook runs on a Query before deciding to forward it unchanged
/// (or to rewrite it). Returns the number of DDL statements found.
fn hook_path(sql: &[u8]) -> usize {
    if commands::parse(sql).is_some() {
        return usize::MAX;
    }
    if !may_contain_ddl(sql) {
        return 0;
    }
    split_and_classify(sql)
}

/// Splits the Query and classifies every statement, as the hook does once
/// the screen has said yes.
fn split_and_classify(sql: &[u8]) -> usize {
    split_statements(sql)
        .into_iter()
        .filter(|r| classify(&sql[r.clone()]).is_some_and(|d| !d.temporary))
        .count()
}

/// Whether `sql` holds one of the words that make `may_contain_ddl` lex
/// the Query (a whole word anywhere, even in a string): a label for the
/// table only, mirroring the screen's first step.
fn has_ddl_word(sql: &[u8]) -> bool {
    const WORDS: [&str; 9] = [
        "create", "alter", "drop", "comment", "grant", "revoke", "import", "reassign", "into",
    ];
    String::from_utf8_lossy(sql)
        .to_ascii_lowercase()
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .any(|w| WORDS.contains(&w))
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&v| v > 0)
        .unwrap_or(default)
}

/// Median nanoseconds per call of `f(sql)`.
fn measure<R>(sql: &[u8], batch: Duration, batches: u64, f: impl Fn(&[u8]) -> R) -> f64 {
    // Calibrate: double the iteration count until one batch takes at least
    // a tenth of the target, then scale to the target.
    let mut n: u64 = 1;
    let per_call = loop {
        let t = Instant::now();
        for _ in 0..n {
            black_box(f(black_box(sql)));
        }
        let e = t.elapsed();
        if e >= batch / 10 {
            break e.as_secs_f64() / n as f64;
        }
        n *= 2;
    };
    let iters = ((batch.as_secs_f64() / per_call) as u64).max(1);
    let mut samples: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..iters {
                black_box(f(black_box(sql)));
            }
            t.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// `INSERT INTO ... VALUES (...), (...), ...` of at least `min_len` bytes.
fn big_insert(min_len: usize) -> String {
    let mut sql =
        String::from("INSERT INTO orders (id, customer_id, amount, status, note) VALUES ");
    let mut i = 1;
    while sql.len() < min_len {
        if i > 1 {
            sql.push_str(", ");
        }
        sql.push_str(&format!(
            "({i}, {}, {}.{:02}, 'open', 'order {i}')",
            1000 + i * 7,
            i * 13 % 500,
            i % 100
        ));
        i += 1;
    }
    sql.push(';');
    sql
}

fn main() {
    let batch = Duration::from_millis(env_u64("BENCH_BATCH_MS", 20));
    let batches = env_u64("BENCH_BATCHES", 9);

    let join = "SELECT o.id, o.created_at, o.amount, c.name, c.email, p.title, p.price \
         FROM orders o JOIN customers c ON c.id = o.customer_id \
         JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id \
         WHERE o.created_at >= now() - interval '7 days' AND c.country = 'DE' \
         ORDER BY o.created_at DESC LIMIT 50;"
        .to_string();
    let statements: Vec<(&str, String)> = vec![
        (
            "pgbench -S SELECT",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 48213;".into(),
        ),
        (
            "pgbench UPDATE",
            "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 48213;".into(),
        ),
        (
            "pgbench INSERT",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) \
             VALUES (7, 1, 48213, -4321, CURRENT_TIMESTAMP);"
                .into(),
        ),
        ("BEGIN", "BEGIN;".into()),
        ("SHOW search_path", "SHOW search_path;".into()),
        ("300-char join", join),
        ("2 KB INSERT ... VALUES", big_insert(2048)),
        (
            "literal with 'create'",
            "SELECT id, body FROM notes WHERE body LIKE '%please create a new account%' \
             ORDER BY id LIMIT 20;"
                .into(),
        ),
        (
            "DDL: ALTER ... SET DEFAULT",
            "ALTER TABLE ddl_bench ALTER COLUMN x SET DEFAULT 123456;".into(),
        ),
        (
            "DDL: CREATE TABLE",
            "CREATE TABLE public.accounts (id bigint PRIMARY KEY, \
             email text NOT NULL UNIQUE, created_at timestamptz DEFAULT now());"
                .into(),
        ),
        (
            "DDL: CREATE INDEX",
            "CREATE INDEX accounts_created_at_idx ON public.accounts (created_at);".into(),
        ),
        (
            "DDL: COMMENT ON",
            "COMMENT ON TABLE public.accounts IS 'customer accounts';".into(),
        ),
    ];

    println!("pgbranch-bench-classify: ns per call of the history hook's screen on a simple Query");
    println!(
        "timing: median of {batches} batches of ~{} ms each (std::time::Instant, black_box)",
        batch.as_millis()
    );
    println!("hook path   = commands::parse + may_contain_ddl (+ split_statements + classify when it says yes)");
    println!(
        "split+class = split_statements + classify of every statement (no screen), for comparison"
    );
    println!();
    println!(
        "{:<27} {:>5} {:>5} {:>4} {:>7} {:>9} {:>10} {:>12}",
        "statement", "bytes", "word", "DDL", "parse", "may_ddl", "hook path", "split+class"
    );
    for (label, sql) in &statements {
        let sql = sql.as_bytes();
        let word = if has_ddl_word(sql) { "yes" } else { "no" };
        let ddl = if hook_path(sql) > 0 { "yes" } else { "no" };
        let parse = measure(sql, batch, batches, commands::parse);
        let may = measure(sql, batch, batches, may_contain_ddl);
        let hook = measure(sql, batch, batches, hook_path);
        let full = measure(sql, batch, batches, split_and_classify);
        println!(
            "{label:<27} {:>5} {word:>5} {ddl:>4} {parse:>7.1} {may:>9.1} {hook:>10.1} {full:>12.1}",
            sql.len()
        );
    }
    println!();
    println!("word: holds CREATE/ALTER/DROP/COMMENT/GRANT/REVOKE/IMPORT/REASSIGN/INTO somewhere (even in a");
    println!(
        "      string), so may_contain_ddl lexes it to decide; otherwise one byte scan says no."
    );
    println!("DDL:  the hook rewrites it to record the change (the recording itself is measured by bench/history.sh).");
}
