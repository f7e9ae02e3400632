//! Checks the deployment files under `deploy/` against the code and the
//! docs, without a database: every JSON and YAML file parses; every PromQL
//! expression in the Grafana dashboard, the alert rules and their unit tests
//! names only metrics (and labels) that `docs/metrics.md` lists; the
//! Kubernetes objects agree with each other and with the configuration
//! pgbranch really loads from them (probes on the metrics port, ports,
//! selectors, grace period longer than `shutdown_timeout`); the compose
//! stack's scrape target is pgbranch's metrics port; and `promtool` accepts
//! the rules and passes their unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use pgbranch::config::{parse_duration, Config, Overrides};
use yaml_rust2::{Yaml, YamlLoader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy() -> PathBuf {
    repo().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Files under `dir`, recursively, whose name ends with one of `exts`.
fn files_with(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| exts.contains(&e))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn yaml_docs(path: &Path) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn yaml_doc(path: &Path) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(
        docs.len(),
        1,
        "{}: expected one YAML document",
        path.display()
    );
    docs.remove(0)
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

fn str_of<'a>(y: &'a Yaml, what: &str) -> &'a str {
    y.as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, found {y:?}"))
}

fn vec_of<'a>(y: &'a Yaml, what: &str) -> &'a [Yaml] {
    y.as_vec()
        .unwrap_or_else(|| panic!("{what}: expected a list, found {y:?}"))
}

// ---------------------------------------------------------------------------
// The metrics pgbranch exports, from docs/metrics.md.

struct Metric {
    histogram: bool,
    labels: BTreeSet<String>,
}

/// Words between backticks.
fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The table in docs/metrics.md: `| name | type | labels | meaning |`.
fn exported_metrics() -> BTreeMap<String, Metric> {
    let doc = read(&repo().join("docs/metrics.md"));
    let mut metrics = BTreeMap::new();
    for line in doc.lines().filter(|l| l.starts_with("| `pgbranch_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = backticked(cells[1]).remove(0);
        let metric = Metric {
            histogram: cells[2] == "histogram",
            labels: backticked(cells[3]).into_iter().collect(),
        };
        metrics.insert(name, metric);
    }
    for known in [
        "pgbranch_statement_duration_seconds",
        "pgbranch_connections_refused_total",
        "pgbranch_build_info",
    ] {
        assert!(
            metrics.contains_key(known),
            "docs/metrics.md's table no longer reads as expected: {known} not found"
        );
    }
    metrics
}

// ---------------------------------------------------------------------------
// Just enough of PromQL to find metric names and label names.

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal, a number or duration, or a Grafana `$variable`.
    Other,
    Punct(char),
}

fn tokenize(expr: &str) -> Vec<Tok> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            toks.push(Tok::Other);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            toks.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '$' || c == '.' {
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.".contains(chars[i])) {
                i += 1;
            }
            toks.push(Tok::Other);
        } else {
            toks.push(Tok::Punct(c));
            i += 1;
        }
    }
    toks
}

/// Problems with `expr`: metrics not in docs/metrics.md, histograms named
/// without `_bucket`/`_sum`/`_count`, labels no metric of `expr` has.
fn check_expr(expr: &str, metrics: &BTreeMap<String, Metric>) -> Vec<String> {
    // Labels every series has from its scrape.
    let target_labels = ["job", "instance"];
    let toks = tokenize(expr);
    let mut problems = Vec::new();
    let mut used_labels = Vec::new();
    let mut allowed: BTreeSet<String> = target_labels.iter().map(|l| l.to_string()).collect();
    let mut i = 0;
    while i < toks.len() {
        let Tok::Ident(word) = &toks[i] else {
            i += 1;
            continue;
        };
        if word.starts_with("pgbranch_") {
            let (base, suffix) = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    let base = word.strip_suffix(s)?;
                    metrics
                        .get(base)
                        .filter(|m| m.histogram)
                        .map(|_| (base.to_string(), *s))
                })
                .unwrap_or((word.clone(), ""));
            match metrics.get(&base) {
                None => problems.push(format!("`{word}` is not in docs/metrics.md")),
                Some(m) if m.histogram && suffix.is_empty() => problems.push(format!(
                    "`{word}` is a histogram: query {word}_bucket, _sum or _count"
                )),
                Some(m) => {
                    allowed.extend(m.labels.iter().cloned());
                    if suffix == "_bucket" {
                        allowed.insert("le".into());
                    }
                }
            }
        }
        // Label names: matchers after a metric, grouping clauses, and
        // Grafana's label_values(metric, label).
        if word.starts_with("pgbranch_") || word == "up" {
            if toks.get(i + 1) == Some(&Tok::Punct('{')) {
                i += 2;
                while i < toks.len() && toks[i] != Tok::Punct('}') {
                    if let (Tok::Ident(label), Some(Tok::Punct('=' | '!'))) =
                        (&toks[i], toks.get(i + 1))
                    {
                        used_labels.push(label.clone());
                    }
                    i += 1;
                }
            }
        } else if [
            "by",
            "without",
            "on",
            "ignoring",
            "group_left",
            "group_right",
        ]
        .contains(&word.as_str())
            && toks.get(i + 1) == Some(&Tok::Punct('('))
        {
            i += 2;
            while i < toks.len() && toks[i] != Tok::Punct(')') {
                if let Tok::Ident(label) = &toks[i] {
                    used_labels.push(label.clone());
                }
                i += 1;
            }
        } else if word == "label_values" && toks.get(i + 1) == Some(&Tok::Punct('(')) {
            let close = (i + 1..toks.len()).find(|&j| toks[j] == Tok::Punct(')'));
            if let Some(close) = close {
                if let (Tok::Punct(','), Tok::Ident(label)) = (&toks[close - 2], &toks[close - 1]) {
                    used_labels.push(label.clone());
                }
            }
        }
        i += 1;
    }
    for label in used_labels {
        if !allowed.contains(&label) {
            problems.push(format!(
                "label `{label}` is not a label of the metrics this expression uses ({allowed:?})"
            ));
        }
    }
    problems
}

#[test]
fn promql_checker_catches_unknown_names() {
    let metrics = exported_metrics();
    let ok = r#"histogram_quantile(0.99, sum by (le, branch, kind) (rate(pgbranch_statement_duration_seconds_bucket{kind!~"ddl|pgbranch_command", instance=~"$instance"}[$__rate_interval])))"#;
    assert_eq!(check_expr(ok, &metrics), Vec::<String>::new());
    assert_eq!(
        check_expr("label_values(pgbranch_build_info, instance)", &metrics),
        Vec::<String>::new()
    );
    for bad in [
        "rate(pgbranch_statement_latency_seconds_bucket[5m])",
        "rate(pgbranch_errors_total_count[5m])",
        "pgbranch_statement_duration_seconds",
        "sum by (reason) (rate(pgbranch_errors_total[5m]))",
        r#"pgbranch_errors_total{sqlstate="42"}"#,
        "label_values(pgbranch_client_sessions, kind)",
    ] {
        assert!(!check_expr(bad, &metrics).is_empty(), "not flagged: {bad}");
    }
}

// ---------------------------------------------------------------------------
// Parsing.

#[test]
fn json_files_parse() {
    let files = files_with(&deploy(), &["json"]);
    assert!(!files.is_empty(), "no JSON file under deploy/");
    for path in files {
        json(&path);
    }
}

#[test]
fn yaml_files_parse() {
    let files = files_with(&deploy(), &["yml", "yaml"]);
    assert!(
        files.len() >= 10,
        "expected the compose, Prometheus, Grafana and k8s files: {files:?}"
    );
    for path in files {
        let docs = yaml_docs(&path);
        assert!(
            !docs.is_empty() && docs.iter().all(|d| d.as_hash().is_some()),
            "{}: expected YAML mappings",
            path.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Grafana and Prometheus name only exported metrics.

/// Every panel, including those inside collapsed rows.
fn panels(dashboard: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"]
        .as_array()
        .expect("dashboard has panels")
    {
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
        out.push(p);
    }
    out
}

#[test]
fn dashboard_queries_name_exported_metrics() {
    let metrics = exported_metrics();
    let dashboards = files_with(&deploy().join("grafana/dashboards"), &["json"]);
    assert!(!dashboards.is_empty());
    let mut problems = Vec::new();
    for path in dashboards {
        let dash = json(&path);
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let mut ids = BTreeSet::new();
        let mut graphs = 0;
        for panel in panels(&dash) {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            let id = panel["id"].as_i64().expect("panel id");
            if !ids.insert(id) {
                problems.push(format!("{file}: panel id {id} ({title}) is used twice"));
            }
            if panel["type"] == "row" {
                continue;
            }
            graphs += 1;
            let targets = panel["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let exprs: Vec<&str> = targets.iter().filter_map(|t| t["expr"].as_str()).collect();
            if exprs.is_empty() || exprs.len() != targets.len() {
                problems.push(format!("{file}: panel {title:?} needs a PromQL expr in every target, and one target at least"));
            }
            if panel["datasource"]["uid"] != "${datasource}" {
                problems.push(format!(
                    "{file}: panel {title:?} should use the ${{datasource}} variable"
                ));
            }
            for expr in exprs {
                for p in check_expr(expr, &metrics) {
                    problems.push(format!("{file}: panel {title:?}: {p}\n    in {expr}"));
                }
            }
        }
        assert!(graphs >= 8, "{file}: only {graphs} panels");
        for var in dash["templating"]["list"]
            .as_array()
            .expect("templating.list")
        {
            let query = var["query"]["query"].as_str().or(var["query"].as_str());
            if var["type"] == "query" {
                let query = query.expect("query variable has a query");
                for p in check_expr(query, &metrics) {
                    problems.push(format!("{file}: variable {}: {p}", var["name"]));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn alert_rules() -> Vec<Yaml> {
    let doc = yaml_doc(&deploy().join("prometheus/alerts.yml"));
    let mut rules = Vec::new();
    for group in vec_of(&doc["groups"], "alerts.yml groups") {
        rules.extend(vec_of(&group["rules"], "alerts.yml rules").iter().cloned());
    }
    assert!(!rules.is_empty());
    rules
}

#[test]
fn alert_rules_name_exported_metrics_and_are_unit_tested() {
    let metrics = exported_metrics();
    let mut problems = Vec::new();
    let mut alerts = BTreeSet::new();
    for rule in alert_rules() {
        let name = str_of(&rule["alert"], "alert name").to_string();
        let expr = str_of(&rule["expr"], &name);
        if !expr.contains("pgbranch_") && !expr.contains(r#"job="pgbranch""#) {
            problems.push(format!(
                "{name}: expression names no pgbranch metric or job"
            ));
        }
        for p in check_expr(expr, &metrics) {
            problems.push(format!("alerts.yml {name}: {p}"));
        }
        if rule["labels"]["severity"].as_str().is_none()
            || rule["annotations"]["summary"].as_str().is_none()
        {
            problems.push(format!(
                "{name}: needs labels.severity and annotations.summary"
            ));
        }
        alerts.insert(name);
    }

    // The unit tests feed series shaped like pgbranch's, and cover each alert.
    let tests = yaml_doc(&deploy().join("prometheus/alerts_test.yml"));
    let mut tested = BTreeSet::new();
    for case in vec_of(&tests["tests"], "alerts_test.yml tests") {
        for series in vec_of(&case["input_series"], "input_series") {
            let s = str_of(&series["series"], "series");
            for p in check_expr(s, &metrics) {
                problems.push(format!("alerts_test.yml series {s}: {p}"));
            }
        }
        for t in vec_of(&case["alert_rule_test"], "alert_rule_test") {
            tested.insert(str_of(&t["alertname"], "alertname").to_string());
        }
    }
    for name in alerts.difference(&tested) {
        problems.push(format!("alert {name} has no case in alerts_test.yml"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn promtool_accepts_the_rules_and_their_tests() {
    let dir = deploy().join("prometheus");
    for args in [
        &["check", "rules", "alerts.yml"][..],
        &["check", "config", "prometheus.yml"],
        &["test", "rules", "alerts_test.yml"],
    ] {
        let out = match Command::new("promtool").args(args).current_dir(&dir).output() {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "promtool is not on PATH: install it with `apt-get install -y --no-install-recommends prometheus` (bash .ci/run does)"
            ),
            Err(e) => panic!("promtool: {e}"),
        };
        assert!(
            out.status.success(),
            "promtool {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------
// The configuration pgbranch really gets.

/// `ENV` settings of the runtime stage of deploy/Dockerfile, its `USER` and
/// its `EXPOSE`d ports.
struct Image {
    env: Vec<(String, String)>,
    user: String,
    exposed: BTreeSet<u16>,
    entrypoint: String,
}

fn image() -> Image {
    let text = read(&deploy().join("Dockerfile"));
    // Join continuation lines, then keep the last stage.
    let joined = text.replace("\\\n", " ");
    let last_stage = joined
        .rsplit_once("\nFROM ")
        .expect("a multi-stage Dockerfile")
        .1;
    let mut image = Image {
        env: Vec::new(),
        user: String::new(),
        exposed: BTreeSet::new(),
        entrypoint: String::new(),
    };
    for line in last_stage.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV KEY=value");
                image.env.push((k.to_string(), v.to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("USER ") {
            image.user = rest.trim().to_string();
        } else if let Some(rest) = line.strip_prefix("EXPOSE ") {
            image.exposed.extend(
                rest.split_whitespace()
                    .map(|p| p.parse::<u16>().expect("EXPOSE port")),
            );
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            image.entrypoint = rest.to_string();
        }
    }
    image
}

/// Loads a configuration as `pgbranch serve` would: `file` (TOML text, if
/// any), then the environment.
fn load_config(toml: Option<&str>, env: &[(String, String)], what: &str) -> Config {
    let file = toml.map(|text| {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    });
    Config::load(
        file.as_ref().map(|f| f.path()),
        env.iter().cloned(),
        &Overrides::default(),
    )
    .unwrap_or_else(|e| panic!("{what}: pgbranch would not start: {e}"))
}

fn port(addr: &str, what: &str) -> u16 {
    addr.parse::<SocketAddr>()
        .unwrap_or_else(|e| panic!("{what}: `{addr}`: {e}"))
        .port()
}

/// A listen address reachable from outside the container.
fn assert_unspecified(addr: &str, what: &str) {
    let ip = addr.parse::<SocketAddr>().unwrap().ip();
    assert!(
        ip.is_unspecified(),
        "{what} = {addr}: a container must listen on 0.0.0.0"
    );
}

#[test]
fn image_listens_beyond_loopback() {
    let image = image();
    let config = load_config(None, &image.env, "deploy/Dockerfile ENV");
    assert_unspecified(&config.listen, "image listen");
    assert_unspecified(&config.metrics.listen, "image metrics.listen");
    let ports = BTreeSet::from([
        port(&config.listen, "listen"),
        port(&config.metrics.listen, "metrics"),
    ]);
    assert_eq!(
        image.exposed, ports,
        "EXPOSE should name the listen and metrics ports"
    );
    assert!(
        image.entrypoint.contains("\"serve\""),
        "ENTRYPOINT should run `pgbranch serve`"
    );
    let uid = image.user.split(':').next().unwrap();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER should be a numeric non-root uid (for runAsNonRoot): {}",
        image.user
    );
}

// ---------------------------------------------------------------------------
// Kubernetes.

struct K8s {
    objects: Vec<Yaml>,
}

impl K8s {
    fn load() -> Self {
        let mut objects = Vec::new();
        for path in files_with(&deploy().join("k8s"), &["yaml", "yml"]) {
            objects.extend(yaml_docs(&path));
        }
        K8s { objects }
    }

    fn get(&self, kind: &str) -> &Yaml {
        let mut found = self
            .objects
            .iter()
            .filter(|o| o["kind"].as_str() == Some(kind));
        let obj = found
            .next()
            .unwrap_or_else(|| panic!("no {kind} in deploy/k8s"));
        assert!(found.next().is_none(), "more than one {kind} in deploy/k8s");
        obj
    }
}

/// Whether every label of `selector` is on `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_hash().expect("selector labels");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(k, v)| labels[k.as_str().unwrap()] == *v)
}

fn duration_of(text: &str, what: &str) -> Duration {
    parse_duration(text).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn kubernetes_objects_agree_with_the_configuration() {
    let k8s = K8s::load();
    let image = image();
    let deployment = k8s.get("Deployment");
    let configmap = k8s.get("ConfigMap");
    let service = k8s.get("Service");
    let pod = &deployment["spec"]["template"];
    let pod_labels = &pod["metadata"]["labels"];
    let containers = vec_of(&pod["spec"]["containers"], "containers");
    let container = containers
        .iter()
        .find(|c| c["name"].as_str() == Some("pgbranch"))
        .expect("a container named pgbranch");
    let cm_name = str_of(&configmap["metadata"]["name"], "ConfigMap name");
    let cm_data = &configmap["data"];
    let toml = str_of(&cm_data["pgbranch.toml"], "ConfigMap data pgbranch.toml");

    // The ConfigMap's file on its own, and as the pod loads it: the image's
    // ENV, then the container's env (which Kubernetes lets win).
    let file_only = load_config(Some(toml), &[], "ConfigMap pgbranch.toml");
    let mut env = image.env.clone();
    let mut config_path = None;
    for var in vec_of(&container["env"], "container env") {
        let name = str_of(&var["name"], "env name").to_string();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_string()
        } else {
            let r = &var["valueFrom"]["configMapKeyRef"];
            assert_eq!(
                str_of(&r["name"], "configMapKeyRef name"),
                cm_name,
                "{name}"
            );
            str_of(
                &cm_data[str_of(&r["key"], "configMapKeyRef key")],
                &format!("{name}: ConfigMap key"),
            )
            .to_string()
        };
        if name == "PGBRANCH_CONFIG" {
            config_path = Some(value.clone());
        }
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    let config = load_config(Some(toml), &env, "the pod's configuration");
    assert!(
        config.upstream.url.is_some(),
        "the pod needs an upstream URL (no embedded PostgreSQL in a container)"
    );
    for (c, what) in [(&file_only, "ConfigMap"), (&config, "pod")] {
        assert_unspecified(&c.listen, &format!("{what} listen"));
        assert_unspecified(&c.metrics.listen, &format!("{what} metrics.listen"));
    }
    let metrics_port = port(&config.metrics.listen, "metrics.listen");
    let pg_port = port(&config.listen, "listen");
    assert_eq!(
        port(&file_only.metrics.listen, "ConfigMap metrics.listen"),
        metrics_port,
        "the ConfigMap's metrics port and the image's differ"
    );
    assert_eq!(
        port(&file_only.listen, "ConfigMap listen"),
        pg_port,
        "the ConfigMap's listen port and the image's differ"
    );

    // The ConfigMap file is mounted where PGBRANCH_CONFIG points.
    let config_path = config_path.expect("PGBRANCH_CONFIG in the container env");
    let mount = vec_of(&container["volumeMounts"], "volumeMounts")
        .iter()
        .find(|m| config_path.starts_with(str_of(&m["mountPath"], "mountPath")))
        .expect("a volume mounted at PGBRANCH_CONFIG's directory");
    let volume = vec_of(&pod["spec"]["volumes"], "volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    assert_eq!(
        str_of(&volume["configMap"]["name"], "volume configMap"),
        cm_name
    );
    let file_name = Path::new(&config_path)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let items = vec_of(&volume["configMap"]["items"], "configMap items");
    assert!(
        items
            .iter()
            .any(|i| i["key"].as_str() == Some("pgbranch.toml")
                && i["path"].as_str() == Some(file_name)),
        "the ConfigMap's pgbranch.toml should be mounted as {config_path}"
    );

    // Container ports, probes.
    let ports = vec_of(&container["ports"], "container ports");
    let named = |name: &str| -> i64 {
        ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
    };
    assert_eq!(named("metrics"), i64::from(metrics_port));
    assert_eq!(named("postgres"), i64::from(pg_port));
    let resolve = |p: &Yaml| -> i64 { p.as_i64().unwrap_or_else(|| named(str_of(p, "port"))) };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe} path");
        assert_eq!(
            resolve(&get["port"]),
            i64::from(metrics_port),
            "{probe} must probe the metrics port"
        );
    }

    // Security: non-root, matching the image's user.
    let uid: i64 = image.user.split(':').next().unwrap().parse().unwrap();
    let pod_sc = &pod["spec"]["securityContext"];
    assert_eq!(pod_sc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(
        pod_sc["runAsUser"].as_i64(),
        Some(uid),
        "runAsUser should be the image's USER"
    );
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"].as_bool(),
        Some(false)
    );
    assert!(
        container["resources"]["requests"]["cpu"].as_str().is_some(),
        "the HPA needs a CPU request"
    );

    // Grace: the preStop pause plus shutdown_timeout must fit.
    let grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("terminationGracePeriodSeconds");
    let pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_vec()
        .and_then(|c| match c.as_slice() {
            [cmd, secs] if cmd.as_str() == Some("sleep") => secs.as_str()?.parse::<u64>().ok(),
            _ => None,
        })
        .unwrap_or(0);
    let needed = config.shutdown_timeout + Duration::from_secs(pre_stop);
    assert!(
        Duration::from_secs(grace as u64) > needed,
        "terminationGracePeriodSeconds ({grace}) must exceed shutdown_timeout ({:?}) + preStop ({pre_stop}s)",
        config.shutdown_timeout
    );

    // Service: selects the pods, exposes both ports by name.
    assert!(
        selects(&service["spec"]["selector"], pod_labels),
        "the Service does not select the pods"
    );
    assert!(selects(
        &deployment["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let svc_ports = vec_of(&service["spec"]["ports"], "Service ports");
    for (name, want) in [("metrics", metrics_port), ("postgres", pg_port)] {
        let p = svc_ports
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("the Service has no port named {name}"));
        assert_eq!(
            resolve(&p["targetPort"]),
            i64::from(want),
            "Service port {name} targetPort"
        );
    }

    // ServiceMonitor scrapes the Service's metrics port at /metrics.
    let sm = k8s.get("ServiceMonitor");
    assert_eq!(sm["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert!(
        selects(
            &sm["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the ServiceMonitor does not select the Service"
    );
    let endpoints = vec_of(&sm["spec"]["endpoints"], "ServiceMonitor endpoints");
    assert!(endpoints
        .iter()
        .any(|e| e["port"].as_str() == Some("metrics") && e["path"].as_str() == Some("/metrics")));

    // PDB and HPA point at the same pods.
    assert!(selects(
        &k8s.get("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let hpa = k8s.get("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"].as_str(), Some("autoscaling/v2"));
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["kind"].as_str(),
        Some("Deployment")
    );
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        deployment["metadata"]["name"]
    );
    let cpu = vec_of(&hpa["spec"]["metrics"], "HPA metrics")
        .iter()
        .any(|m| m["resource"]["name"].as_str() == Some("cpu"));
    assert!(cpu, "the HPA should scale on CPU");
}

// ---------------------------------------------------------------------------
// Compose and Prometheus.

#[test]
fn compose_stack_scrapes_pgbranch_metrics_port() {
    let compose = yaml_doc(&deploy().join("docker-compose.yml"));
    let services = &compose["services"];
    let pgbranch = &services["pgbranch"];
    // Compose resolves the context from this file's directory, and the
    // Dockerfile from the context.
    let context = deploy().join(str_of(&pgbranch["build"]["context"], "build context"));
    assert_eq!(
        context.canonicalize().unwrap(),
        repo().canonicalize().unwrap(),
        "build from the repository root"
    );
    let dockerfile = str_of(&pgbranch["build"]["dockerfile"], "dockerfile");
    assert!(
        context.join(dockerfile).is_file(),
        "no {dockerfile} in the build context"
    );
    assert!(
        context.join(format!("{dockerfile}.dockerignore")).is_file(),
        "{dockerfile}.dockerignore keeps target/ out of the context"
    );

    // The image's ENV, then the service's environment.
    let mut env = image().env;
    for (k, v) in pgbranch["environment"]
        .as_hash()
        .expect("pgbranch environment")
    {
        let k = str_of(k, "env name").to_string();
        env.retain(|(name, _)| *name != k);
        env.push((k, str_of(v, "env value").to_string()));
    }
    let config = load_config(None, &env, "compose pgbranch");
    let upstream = config
        .upstream
        .url
        .as_deref()
        .expect("compose pgbranch needs PGBRANCH_UPSTREAM_URL");
    assert!(
        upstream.contains("@postgres:"),
        "upstream should be the postgres service: {upstream}"
    );
    assert!(!services["postgres"].is_badvalue());
    let metrics_port = port(&config.metrics.listen, "metrics.listen");
    let grace = duration_of(
        str_of(&pgbranch["stop_grace_period"], "stop_grace_period"),
        "stop_grace_period",
    );
    assert!(
        grace > config.shutdown_timeout,
        "stop_grace_period must exceed shutdown_timeout"
    );

    let prom = yaml_doc(&deploy().join("prometheus/prometheus.yml"));
    let job = vec_of(&prom["scrape_configs"], "scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some("pgbranch"))
        .expect("a scrape job named pgbranch (alerts.yml uses job=\"pgbranch\")");
    let targets: Vec<&str> = vec_of(&job["static_configs"][0]["targets"], "targets")
        .iter()
        .map(|t| str_of(t, "target"))
        .collect();
    assert_eq!(targets, [format!("pgbranch:{metrics_port}")]);
    for rules in vec_of(&prom["rule_files"], "rule_files") {
        assert!(deploy()
            .join("prometheus")
            .join(str_of(rules, "rule file"))
            .is_file());
    }

    // Every host directory the stack mounts exists.
    for (name, service) in services.as_hash().unwrap() {
        for volume in service["volumes"]
            .as_vec()
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let source = str_of(volume, "volume").split(':').next().unwrap();
            if source.starts_with('.') {
                assert!(
                    deploy().join(source).exists(),
                    "{name:?} mounts missing {source}"
                );
            }
        }
    }
}
