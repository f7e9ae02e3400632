//! Per-statement metrics: latency histograms by branch, kind and protocol,
//! the proxy's own overhead, transaction duration, bytes, errors by
//! SQLSTATE class, DDL by branch and action, client sessions by branch.
//!
//! Recording happens on every statement, so it uses only relaxed atomic
//! additions on memory allocated when a branch is first seen: no lock
//! shared between connections, no allocation. Sessions hold an
//! `Arc<BranchStats>` for their branch label; at most
//! `metrics.max_branch_labels` branches get their own label, the rest share
//! `other`. These metrics are rendered by this module (the exporter's
//! histograms allocate when they record) and appended to the exporter's
//! text.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use dashmap::DashMap;

use crate::proxy::hooks::rewrite;
use crate::sql::classify::Action;

/// Upper bounds (nanoseconds) of the statement latency buckets: 50 µs to
/// 10 s.
const LATENCY_BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Upper bounds (nanoseconds) of the proxy-overhead buckets: 1 µs to 10 ms.
const OVERHEAD_BOUNDS_NS: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// Upper bounds (nanoseconds) of the transaction-duration buckets: 100 µs
/// to 10 min.
const TX_BOUNDS_NS: [u64; 16] = [
    100_000,
    1_000_000,
    5_000_000,
    10_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    10_000_000_000,
    30_000_000_000,
    60_000_000_000,
    120_000_000_000,
    300_000_000_000,
    600_000_000_000,
    u64::MAX,
];

/// A histogram of fixed buckets updated with relaxed atomics.
pub struct AtomicHistogram<const N: usize> {
    bounds: &'static [u64; N],
    /// Per bucket (not cumulative); the last is +Inf.
    counts: [AtomicU64; N],
    over: AtomicU64,
    sum_ns: AtomicU64,
}

impl<const N: usize> AtomicHistogram<N> {
    fn new(bounds: &'static [u64; N]) -> Self {
        Self {
            bounds,
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            over: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn record_ns(&self, ns: u64) {
        match self.bounds.iter().position(|&b| ns <= b) {
            Some(i) => self.counts[i].fetch_add(1, Relaxed),
            None => self.over.fetch_add(1, Relaxed),
        };
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    /// Adds this histogram's counts into `into` (per bucket, then the
    /// +Inf bucket) and returns its sum of nanoseconds.
    fn add_to(&self, into: &mut [u64]) -> u64 {
        for (i, c) in self.counts.iter().enumerate() {
            into[i] += c.load(Relaxed);
        }
        into[N] += self.over.load(Relaxed);
        self.sum_ns.load(Relaxed)
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Relaxed)).sum::<u64>() + self.over.load(Relaxed)
    }

    /// Writes `name_bucket{labels,le=..}`, `name_sum`, `name_count` lines.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Relaxed);
            if *bound == u64::MAX {
                continue;
            }
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cumulative}",
                seconds(*bound)
            );
        }
        cumulative += self.over.load(Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = |s: &str| {
            if s.is_empty() {
                String::new()
            } else {
                format!("{{{s}}}")
            }
        };
        let _ = writeln!(
            out,
            "{name}_sum{} {}",
            braces(labels),
            self.sum_ns.load(Relaxed) as f64 / 1e9
        );
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// The `q` quantile (0..1) of bucket counts (`counts[N]` is +Inf), by
/// linear interpolation inside the bucket, as Prometheus's
/// `histogram_quantile` does; in the +Inf bucket, the highest bound.
fn quantile<const N: usize>(bounds: &[u64; N], counts: &[u64], q: f64) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &c) in counts.iter().enumerate() {
        if c > 0 && (below + c) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds[N - 1] as f64;
            };
            let lower = if i == 0 { 0 } else { bounds[i - 1] };
            let within = ((rank - below as f64) / c as f64).clamp(0.0, 1.0);
            return lower as f64 + (upper - lower) as f64 * within;
        }
        below += c;
    }
    bounds[N - 1] as f64
}

/// One line of the admin console's `SHOW STATS`.
#[derive(Debug, Clone, PartialEq)]
pub struct KindSummary {
    pub branch: String,
    pub kind: &'static str,
    pub count: u64,
    pub mean_ns: f64,
    /// p50, p95, p99.
    pub quantiles_ns: [f64; 3],
}

/// A bound in seconds as Prometheus writes it (`0.00005`, `1`, `2.5`).
fn seconds(ns: u64) -> String {
    let s = format!("{:.9}", ns as f64 / 1e9);
    let s = s.trim_end_matches('0');
    s.strip_suffix('.').unwrap_or(s).to_string()
}

/// What a statement does, for the latency labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Select,
    Insert,
    Update,
    Delete,
    Ddl,
    Transaction,
    Copy,
    TimeTravel,
    Command,
    Other,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Select,
        Kind::Insert,
        Kind::Update,
        Kind::Delete,
        Kind::Ddl,
        Kind::Transaction,
        Kind::Copy,
        Kind::TimeTravel,
        Kind::Command,
        Kind::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Kind::Select => "select",
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Ddl => "ddl",
            Kind::Transaction => "transaction",
            Kind::Copy => "copy",
            Kind::TimeTravel => "time_travel",
            Kind::Command => "pgbranch_command",
            Kind::Other => "other",
        }
    }
}

/// Which protocol carried a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
        }
    }
}

const ACTIONS: [Action; 7] = [
    Action::Create,
    Action::Alter,
    Action::Drop,
    Action::Rename,
    Action::Comment,
    Action::Grant,
    Action::Revoke,
];

/// Everything recorded for one branch label.
pub struct BranchStats {
    label: String,
    latency: [[AtomicHistogram<17>; 2]; 10],
    ddl: [AtomicU64; 7],
    sessions: AtomicI64,
}

impl BranchStats {
    fn new(label: String) -> Self {
        Self {
            label,
            latency: std::array::from_fn(|_| {
                std::array::from_fn(|_| AtomicHistogram::new(&LATENCY_BOUNDS_NS))
            }),
            ddl: std::array::from_fn(|_| AtomicU64::new(0)),
            sessions: AtomicI64::new(0),
        }
    }

    pub fn record(&self, kind: Kind, protocol: Protocol, ns: u64) {
        self.latency[kind as usize][protocol as usize].record_ns(ns);
    }

    pub fn ddl(&self, action: Action) {
        if let Some(i) = ACTIONS.iter().position(|a| *a == action) {
            self.ddl[i].fetch_add(1, Relaxed);
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }
}

/// Counts a session on a branch for as long as it holds the guard.
pub struct BranchSession(Arc<BranchStats>);

impl BranchSession {
    pub fn new(stats: Arc<BranchStats>) -> Self {
        stats.sessions.fetch_add(1, Relaxed);
        Self(stats)
    }

    pub fn stats(&self) -> &Arc<BranchStats> {
        &self.0
    }
}

impl Drop for BranchSession {
    fn drop(&mut self) {
        self.0.sessions.fetch_sub(1, Relaxed);
    }
}

/// SQLSTATE classes: two characters of `0-9A-Z`.
const CLASSES: usize = 36 * 36;

fn class_index(code: &[u8]) -> Option<usize> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some((b - b'0') as usize),
        b'A'..=b'Z' => Some((b - b'A') as usize + 10),
        _ => None,
    };
    Some(digit(*code.first()?)? * 36 + digit(*code.get(1)?)?)
}

fn class_name(i: usize) -> String {
    let ch = |d: usize| {
        if d < 10 {
            (b'0' + d as u8) as char
        } else {
            (b'A' + (d - 10) as u8) as char
        }
    };
    format!("{}{}", ch(i / 36), ch(i % 36))
}

/// The statement metrics of one proxy.
pub struct StatementMetrics {
    max_branch_labels: AtomicUsize,
    branches: DashMap<String, Arc<BranchStats>>,
    other: Arc<BranchStats>,
    pub overhead: AtomicHistogram<13>,
    pub transactions: AtomicHistogram<16>,
    pub bytes_from_clients: AtomicU64,
    pub bytes_to_clients: AtomicU64,
    errors: Box<[AtomicU64]>,
    /// Per kind of [`rewrite`] (the order of `rewrite::KINDS`).
    rewrites: [AtomicU64; 6],
    unparsed: AtomicU64,
}

impl StatementMetrics {
    pub fn new(max_branch_labels: usize) -> Self {
        Self {
            max_branch_labels: AtomicUsize::new(max_branch_labels),
            branches: DashMap::new(),
            other: Arc::new(BranchStats::new("other".into())),
            overhead: AtomicHistogram::new(&OVERHEAD_BOUNDS_NS),
            transactions: AtomicHistogram::new(&TX_BOUNDS_NS),
            bytes_from_clients: AtomicU64::new(0),
            bytes_to_clients: AtomicU64::new(0),
            errors: (0..CLASSES).map(|_| AtomicU64::new(0)).collect(),
            rewrites: std::array::from_fn(|_| AtomicU64::new(0)),
            unparsed: AtomicU64::new(0),
        }
    }

    /// The stats a session on `branch` records into (called when a session
    /// starts or switches branch, not per statement).
    pub fn branch(&self, branch: &str) -> Arc<BranchStats> {
        if let Some(s) = self.branches.get(branch) {
            return s.clone();
        }
        if self.branches.len() >= self.max_branch_labels.load(Relaxed) {
            return self.other.clone();
        }
        self.branches
            .entry(branch.to_string())
            .or_insert_with(|| Arc::new(BranchStats::new(branch.to_string())))
            .clone()
    }

    /// Statement counts and latency quantiles per branch label and kind
    /// (both protocols together), since the proxy started.
    pub fn summary(&self) -> Vec<KindSummary> {
        let mut all: Vec<Arc<BranchStats>> = self.branches.iter().map(|e| e.clone()).collect();
        all.push(self.other.clone());
        all.sort_by(|a, b| a.label.cmp(&b.label));
        let mut out = Vec::new();
        for b in &all {
            for kind in Kind::ALL {
                let mut counts = [0u64; 18];
                let mut sum_ns = 0;
                for h in &b.latency[kind as usize] {
                    sum_ns += h.add_to(&mut counts);
                }
                let count: u64 = counts.iter().sum();
                if count == 0 {
                    continue;
                }
                out.push(KindSummary {
                    branch: b.label.clone(),
                    kind: kind.label(),
                    count,
                    mean_ns: sum_ns as f64 / count as f64,
                    quantiles_ns: [0.5, 0.95, 0.99]
                        .map(|q| quantile(&LATENCY_BOUNDS_NS, &counts, q)),
                });
            }
        }
        out
    }

    /// A reload changed `metrics.max_branch_labels`: branches labelled
    /// already keep their label; new ones get one while the count is
    /// under the new cap.
    pub fn set_max_branch_labels(&self, max: usize) {
        self.max_branch_labels.store(max, Relaxed);
    }

    /// A client message was rewritten; `kinds`: [`rewrite`] flags.
    pub fn rewritten(&self, kinds: u8) {
        for (i, (flag, _)) in rewrite::KINDS.iter().enumerate() {
            if kinds & flag != 0 {
                self.rewrites[i].fetch_add(1, Relaxed);
            }
        }
    }

    /// A DDL statement whose object could not be read from its text.
    pub fn unparsed(&self) {
        self.unparsed.fetch_add(1, Relaxed);
    }

    /// An ErrorResponse with SQLSTATE `code` reached a client.
    pub fn error(&self, code: &[u8]) {
        if let Some(i) = class_index(code) {
            self.errors[i].fetch_add(1, Relaxed);
        }
    }

    /// Appends the Prometheus text of these metrics.
    pub fn render(&self, out: &mut String) {
        let mut all: Vec<Arc<BranchStats>> = self.branches.iter().map(|e| e.clone()).collect();
        all.push(self.other.clone());
        all.sort_by(|a, b| a.label.cmp(&b.label));

        out.push_str("# HELP pgbranch_statement_duration_seconds Time from forwarding a statement (a simple Query, or an Execute) to its result being complete (ReadyForQuery, or the Execute's CommandComplete), by branch, kind and protocol.\n");
        out.push_str("# TYPE pgbranch_statement_duration_seconds histogram\n");
        for b in &all {
            for kind in Kind::ALL {
                for protocol in [Protocol::Simple, Protocol::Extended] {
                    let h = &b.latency[kind as usize][protocol as usize];
                    if h.count() == 0 {
                        continue;
                    }
                    h.render(
                        out,
                        "pgbranch_statement_duration_seconds",
                        &format!(
                            "branch=\"{}\",kind=\"{}\",protocol=\"{}\"",
                            escape(&b.label),
                            kind.label(),
                            protocol.label()
                        ),
                    );
                }
            }
        }
        out.push_str("# HELP pgbranch_proxy_overhead_seconds Time spent inside pgbranch per statement: inspecting, classifying and rewriting its messages and their responses.\n");
        out.push_str("# TYPE pgbranch_proxy_overhead_seconds histogram\n");
        self.overhead
            .render(out, "pgbranch_proxy_overhead_seconds", "");
        out.push_str("# HELP pgbranch_transaction_duration_seconds Time from a session leaving idle (first statement of a transaction block) to idle again.\n");
        out.push_str("# TYPE pgbranch_transaction_duration_seconds histogram\n");
        self.transactions
            .render(out, "pgbranch_transaction_duration_seconds", "");

        out.push_str("# HELP pgbranch_client_bytes_received_total Bytes received from clients.\n");
        out.push_str("# TYPE pgbranch_client_bytes_received_total counter\n");
        let _ = writeln!(
            out,
            "pgbranch_client_bytes_received_total {}",
            self.bytes_from_clients.load(Relaxed)
        );
        out.push_str("# HELP pgbranch_client_bytes_sent_total Bytes sent to clients.\n");
        out.push_str("# TYPE pgbranch_client_bytes_sent_total counter\n");
        let _ = writeln!(
            out,
            "pgbranch_client_bytes_sent_total {}",
            self.bytes_to_clients.load(Relaxed)
        );

        out.push_str("# HELP pgbranch_errors_total ErrorResponses sent to clients, by SQLSTATE class (the first two characters).\n");
        out.push_str("# TYPE pgbranch_errors_total counter\n");
        for (i, c) in self.errors.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "pgbranch_errors_total{{class=\"{}\"}} {n}",
                    class_name(i)
                );
            }
        }

        out.push_str(
            "# HELP pgbranch_ddl_statements_total DDL statements that completed, by branch and action.\n",
        );
        out.push_str("# TYPE pgbranch_ddl_statements_total counter\n");
        for b in &all {
            for (i, action) in ACTIONS.iter().enumerate() {
                let n = b.ddl[i].load(Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "pgbranch_ddl_statements_total{{branch=\"{}\",action=\"{}\"}} {n}",
                        escape(&b.label),
                        action.as_str()
                    );
                }
            }
        }

        out.push_str("# HELP pgbranch_rewrites_total Client messages pgbranch changed before forwarding them, by kind: branch_names (schema names mapped to a branch's copies), command (pgbranch commands answered through its SQL functions), history (DDL wrapped with its recording), path_restore (a branch session's search_path restored after RESET/DISCARD), refused (DDL on a protected branch replaced by its refusal), time_travel (AS OF / FOR SYSTEM_TIME clauses turned into history functions).\n");
        out.push_str("# TYPE pgbranch_rewrites_total counter\n");
        for (i, (_, label)) in rewrite::KINDS.iter().enumerate() {
            let _ = writeln!(
                out,
                "pgbranch_rewrites_total{{kind=\"{label}\"}} {}",
                self.rewrites[i].load(Relaxed)
            );
        }
        out.push_str("# HELP pgbranch_unparsed_statements_total DDL statements whose object pgbranch could not read from the text; forwarded unchanged and recorded with an empty object identity.\n");
        out.push_str("# TYPE pgbranch_unparsed_statements_total counter\n");
        let _ = writeln!(
            out,
            "pgbranch_unparsed_statements_total {}",
            self.unparsed.load(Relaxed)
        );

        out.push_str("# HELP pgbranch_client_sessions Client sessions past authentication, now, by branch.\n");
        out.push_str("# TYPE pgbranch_client_sessions gauge\n");
        for b in &all {
            let n = b.sessions.load(Relaxed);
            if n != 0 || b.label == "main" {
                let _ = writeln!(
                    out,
                    "pgbranch_client_sessions{{branch=\"{}\"}} {n}",
                    escape(&b.label)
                );
            }
        }
    }
}

/// A label value escaped for the text format.
pub(crate) fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let m = StatementMetrics::new(2);
        let main = m.branch("main");
        main.record(Kind::Select, Protocol::Simple, 70_000);
        main.record(Kind::Select, Protocol::Simple, 2_000_000);
        main.record(Kind::Select, Protocol::Simple, 20_000_000_000);
        let mut out = String::new();
        m.render(&mut out);
        let l = "branch=\"main\",kind=\"select\",protocol=\"simple\"";
        for line in [
            format!("pgbranch_statement_duration_seconds_bucket{{{l},le=\"0.00005\"}} 0"),
            format!("pgbranch_statement_duration_seconds_bucket{{{l},le=\"0.0001\"}} 1"),
            format!("pgbranch_statement_duration_seconds_bucket{{{l},le=\"0.0025\"}} 2"),
            format!("pgbranch_statement_duration_seconds_bucket{{{l},le=\"10\"}} 2"),
            format!("pgbranch_statement_duration_seconds_bucket{{{l},le=\"+Inf\"}} 3"),
            format!("pgbranch_statement_duration_seconds_count{{{l}}} 3"),
            format!("pgbranch_statement_duration_seconds_sum{{{l}}} 20.00207"),
        ] {
            assert!(out.contains(&line), "{line}\n{out}");
        }
        assert!(
            !out.contains("kind=\"insert\""),
            "empty series are left out"
        );
    }

    #[test]
    fn branch_labels_are_capped() {
        let m = StatementMetrics::new(2);
        let a = m.branch("a");
        let b = m.branch("b");
        let c = m.branch("c");
        assert_eq!((a.label(), b.label(), c.label()), ("a", "b", "other"));
        assert_eq!(m.branch("a").label(), "a");
        let _s = BranchSession::new(c);
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("pgbranch_client_sessions{branch=\"other\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn errors_are_counted_by_class() {
        let m = StatementMetrics::new(1);
        m.error(b"42P01");
        m.error(b"42703");
        m.error(b"23505");
        m.error(b"x");
        let mut out = String::new();
        m.render(&mut out);
        assert!(
            out.contains("pgbranch_errors_total{class=\"42\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("pgbranch_errors_total{class=\"23\"} 1"),
            "{out}"
        );
        assert_eq!(class_name(class_index(b"0A").unwrap()), "0A");
    }

    #[test]
    fn summary_gives_counts_and_interpolated_quantiles() {
        let m = StatementMetrics::new(4);
        let main = m.branch("main");
        // 100 selects: 90 in (50 µs, 100 µs], 10 in (1 ms, 2.5 ms].
        for _ in 0..90 {
            main.record(Kind::Select, Protocol::Simple, 80_000);
        }
        for _ in 0..10 {
            main.record(Kind::Select, Protocol::Extended, 2_000_000);
        }
        main.record(Kind::Insert, Protocol::Simple, 20_000_000_000);
        let s = m.summary();
        assert_eq!(s.len(), 2, "{s:?}");
        let select = &s[0];
        assert_eq!((select.kind, select.count), ("select", 100));
        assert!((select.mean_ns - 272_000.0).abs() < 1.0, "{select:?}");
        // p50: rank 50 of the 90 in (50 µs, 100 µs].
        assert!((select.quantiles_ns[0] - (50_000.0 + 50_000.0 * 50.0 / 90.0)).abs() < 1.0);
        // p95 and p99 fall in (1 ms, 2.5 ms].
        assert!(
            (select.quantiles_ns[1] - 1_750_000.0).abs() < 1.0,
            "{select:?}"
        );
        assert!(
            (select.quantiles_ns[2] - 2_350_000.0).abs() < 1.0,
            "{select:?}"
        );
        // Beyond the last bound: the last bound.
        assert_eq!(s[1].kind, "insert");
        assert_eq!(s[1].quantiles_ns[2], 10_000_000_000.0);
    }

    #[test]
    fn bounds_print_as_prometheus_does() {
        assert_eq!(seconds(50_000), "0.00005");
        assert_eq!(seconds(1_000_000_000), "1");
        assert_eq!(seconds(2_500_000_000), "2.5");
    }
}
