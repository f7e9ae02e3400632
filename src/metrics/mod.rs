//! Metrics of one proxy instance, rendered in the Prometheus text format
//! (`docs/metrics.md` lists every metric).
//!
//! Each [`Server`](crate::proxy::server::Server) owns its [`ProxyMetrics`]:
//! a private `PrometheusRecorder` whose counters, gauges and histograms are
//! registered once and then updated through their handles (atomics; no
//! lock, no allocation, no global recorder), so several proxies in one
//! process (the tests) keep separate figures.
//!
//! [`http`] serves `/metrics`, `/healthz` and `/readyz`.

pub mod drift;
pub mod hook;
pub mod http;
pub mod stmt;

use std::sync::Arc;

use metrics::{Counter, Histogram, Key, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Why a client connection was refused before its session started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_client_connections` reached (53300).
    Limit,
    /// The handshake failed: TLS, startup packet, selection, timeout.
    Handshake,
    /// The upstream could not be reached or closed during startup (08006).
    Upstream,
    /// The upstream refused the session with a FATAL error (bad password,
    /// unknown database or role, its own connection limit).
    Rejected,
}

impl Refusal {
    const ALL: [Refusal; 4] = [Self::Limit, Self::Handshake, Self::Upstream, Self::Rejected];

    fn label(self) -> &'static str {
        match self {
            Self::Limit => "limit",
            Self::Handshake => "handshake",
            Self::Upstream => "upstream",
            Self::Rejected => "rejected",
        }
    }
}

/// Buckets (seconds) of the connection-setup histograms: 100 µs to 10 s.
const SETUP_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Every metric of a proxy, registered up front.
pub struct ProxyMetrics {
    handle: PrometheusHandle,
    pub connections_accepted: Counter,
    refused: [Counter; 4],
    /// Statement latency and the other per-statement figures.
    pub statements: Arc<stmt::StatementMetrics>,
    pub upstream_connect_seconds: Histogram,
    pub auth_seconds: Histogram,
    /// Schema drift per database (`drift::run` updates it).
    pub drift: drift::DriftGauge,
}

impl ProxyMetrics {
    /// `max_branch_labels`: branches with a label of their own in the
    /// per-statement metrics; the rest are `other`.
    pub fn new(max_branch_labels: usize) -> Arc<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets(SETUP_BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        let meta = Metadata::new(module_path!(), metrics::Level::INFO, None);
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            (name, unit, SharedString::const_str(help))
        };
        let counters = [
            describe(
                "pgbranch_connections_accepted_total",
                None,
                "Client connections accepted (TCP and Unix socket).",
            ),
            describe(
                "pgbranch_connections_refused_total",
                None,
                "Client connections that ended before their session started, by reason (limit, handshake, upstream, rejected).",
            ),
        ];
        for (name, unit, help) in counters {
            recorder.describe_counter(name.into(), unit, help);
        }
        recorder.describe_histogram(
            "pgbranch_upstream_connect_seconds".into(),
            Some(Unit::Seconds),
            SharedString::const_str("Time to open the upstream connection (TCP or Unix socket, and TLS when configured)."),
        );
        recorder.describe_histogram(
            "pgbranch_auth_seconds".into(),
            Some(Unit::Seconds),
            SharedString::const_str("Time from the client's StartupMessage to the upstream's ReadyForQuery: upstream connect and authentication relayed end to end."),
        );
        recorder.describe_gauge(
            "pgbranch_build_info".into(),
            None,
            SharedString::const_str("Always 1; the labels say which pgbranch this is."),
        );
        let refused = Refusal::ALL.map(|r| {
            recorder.register_counter(
                &Key::from_parts(
                    "pgbranch_connections_refused_total",
                    vec![Label::new("reason", r.label())],
                ),
                &meta,
            )
        });
        let build = recorder.register_gauge(
            &Key::from_parts(
                "pgbranch_build_info",
                vec![
                    Label::new("version", env!("CARGO_PKG_VERSION")),
                    Label::new("commit", env!("PGB_BUILD_COMMIT")),
                ],
            ),
            &meta,
        );
        build.set(1.0);
        Arc::new(Self {
            connections_accepted: recorder.register_counter(
                &Key::from_name("pgbranch_connections_accepted_total"),
                &meta,
            ),
            refused,
            statements: Arc::new(stmt::StatementMetrics::new(max_branch_labels)),
            upstream_connect_seconds: recorder
                .register_histogram(&Key::from_name("pgbranch_upstream_connect_seconds"), &meta),
            auth_seconds: recorder
                .register_histogram(&Key::from_name("pgbranch_auth_seconds"), &meta),
            handle,
            drift: drift::DriftGauge::default(),
        })
    }

    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].increment(1);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = self.handle.render();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        self.statements.render(&mut out);
        self.drift.render(&mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics_with_help_and_labels() {
        let m = ProxyMetrics::new(20);
        m.connections_accepted.increment(3);
        m.refused(Refusal::Limit);
        m.upstream_connect_seconds.record(0.002);
        let text = m.render();
        assert!(
            text.contains("pgbranch_connections_accepted_total 3"),
            "{text}"
        );
        assert!(
            text.contains("pgbranch_connections_refused_total{reason=\"limit\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pgbranch_connections_refused_total{reason=\"rejected\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("# HELP pgbranch_upstream_connect_seconds"),
            "{text}"
        );
        assert!(
            text.contains("pgbranch_upstream_connect_seconds_bucket{le=\"0.0025\"} 1"),
            "{text}"
        );
        assert!(text.contains("pgbranch_build_info{version=\""), "{text}");
    }

    #[test]
    fn separate_proxies_keep_separate_figures() {
        let a = ProxyMetrics::new(20);
        let b = ProxyMetrics::new(20);
        a.connections_accepted.increment(1);
        assert!(b.render().contains("pgbranch_connections_accepted_total 0"));
    }
}
