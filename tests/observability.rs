//! What ships for watching bbsync (deploy/prometheus, deploy/grafana) is checked against the
//! real thing: `promtool check rules` and `promtool test rules` pass; every alert has a unit
//! test where it fires and one where it must stay silent; the dashboard is well formed (a
//! title, a description and a query on every panel, a `${datasource}` variable) and its
//! PromQL parses; and every metric an alert or a panel queries, with the labels it selects
//! on, is one that a live `bbsync run` really exposes on /metrics, after a reconcile, an
//! off-boarding poll, a guard hold and a failed run.
//!
//! The rule files are YAML and no YAML crate is a dependency: python3's PyYAML (which
//! kubernetes-validate, installed by scripts/test.sh, depends on) turns them into JSON.
//! Without promtool the tests fail (scripts/test.sh installs Debian's `prometheus`).

mod common;

use common::daemon::Daemon;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ALERTS: &str = "deploy/prometheus/alerts.yml";
const ALERT_TESTS: &str = "deploy/prometheus/alerts.test.yml";
const DASHBOARD: &str = "deploy/grafana/bbsync.json";
const RUNBOOK: &str = "https://github.com/bbsync/bbsync/blob/main/docs/operations.md#";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

// ---------------------------------------------------------------------------------------
// promtool and YAML

/// Runs `promtool ARGS`: its success and its output. Fails (never skips) when promtool is
/// missing: the rule tests are part of what ships.
fn promtool(args: &[&str]) -> (bool, String) {
    match std::process::Command::new("promtool").args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: install the Debian package `prometheus` \
             (apt-get install prometheus; scripts/test.sh does it when missing)"
        ),
        Err(e) => panic!("cannot run promtool: {e}"),
    }
}

/// A YAML file as JSON, through python3 and PyYAML.
fn yaml(path: &Path) -> Value {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import yaml,json,sys; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 (needed with PyYAML to read {path:?}): {e}")
        });
    assert!(
        out.status.success(),
        "python3 could not read {path:?} as YAML (PyYAML is installed with kubernetes-validate \
         by scripts/test.sh, or `pip install pyyaml`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python printed JSON")
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The alerting rules of alerts.yml: (group, rule).
fn alert_rules(rules: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for g in rules["groups"].as_array().into_iter().flatten() {
        for r in g["rules"].as_array().into_iter().flatten() {
            if r.get("alert").is_some() {
                out.push((text(&g["name"]).to_owned(), r));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The rules and their unit tests

#[test]
fn the_alert_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", repo(ALERTS).to_str().expect("utf8")]);
    assert!(ok, "promtool check rules {ALERTS}:\n{out}");
    let (ok, out) = promtool(&["test", "rules", repo(ALERT_TESTS).to_str().expect("utf8")]);
    assert!(ok, "promtool test rules {ALERT_TESTS}:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// What is wrong with the rules and their tests: an alert without a severity, a summary, a
/// description or a runbook anchor of its own in docs/operations.md; an alert with no test
/// case where it fires or none where it stays silent; a test of an alert that does not exist.
fn coverage_problems(rules: &Value, tests: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let alerts = alert_rules(rules);
    if alerts.is_empty() {
        problems.push("no alerting rules".to_owned());
    }
    for (group, r) in &alerts {
        let name = text(&r["alert"]);
        if group != "bbsync" {
            problems.push(format!("{name}: in group {group:?}, not \"bbsync\""));
        }
        let severity = text(&r["labels"]["severity"]);
        if !["critical", "warning", "info"].contains(&severity) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for a in ["summary", "description"] {
            if text(&r["annotations"][a]).trim().is_empty() {
                problems.push(format!("{name}: no {a} annotation"));
            }
        }
        let want = format!("{RUNBOOK}{}", name.to_lowercase());
        if text(&r["annotations"]["runbook_url"]) != want {
            problems.push(format!(
                "{name}: runbook_url is {:?}, want {want:?}",
                r["annotations"]["runbook_url"]
            ));
        }
    }
    let names: BTreeSet<&str> = alerts.iter().map(|(_, r)| text(&r["alert"])).collect();
    if names.len() != alerts.len() {
        problems.push("two alerting rules share a name".to_owned());
    }
    // alertname -> (cases where it fires, cases where it must not)
    let mut cases: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for t in tests["tests"].as_array().into_iter().flatten() {
        for c in t["alert_rule_test"].as_array().into_iter().flatten() {
            let name = text(&c["alertname"]);
            if !names.contains(name) {
                problems.push(format!(
                    "test {:?} checks {name:?}, which alerts.yml does not define",
                    t["name"]
                ));
            }
            let fires = c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty());
            let slot = cases.entry(name).or_default();
            if fires {
                slot.0 += 1;
            } else {
                slot.1 += 1;
            }
        }
    }
    for name in &names {
        let (fires, silent) = cases.get(name).copied().unwrap_or_default();
        if fires == 0 {
            problems.push(format!("{name}: no test case where it fires"));
        }
        if silent == 0 {
            problems.push(format!("{name}: no test case where it must stay silent"));
        }
    }
    problems
}

#[test]
fn every_alert_has_a_firing_and_a_silent_test_case_and_a_runbook() {
    let rules = yaml(&repo(ALERTS));
    let tests = yaml(&repo(ALERT_TESTS));
    let problems = coverage_problems(&rules, &tests);
    assert!(problems.is_empty(), "{problems:#?}");
    // The alerts issue 19 asks for, under the names the runbook documents.
    let names: BTreeSet<&str> = alert_rules(&rules)
        .into_iter()
        .map(|(_, r)| text(&r["alert"]))
        .collect();
    for want in [
        "BbsyncReconcileFailing",
        "BbsyncNoRecentSuccess",
        "BbsyncNeverSucceeded",
        "BbsyncGuardHolding",
        "BbsyncOffboardingPending",
        "BbsyncRateLimited",
        "BbsyncRateBudgetExhausted",
        "BbsyncInvalidSourceEntriesRising",
        "BbsyncUnresolvedIdentitiesRising",
        "BbsyncDown",
    ] {
        assert!(names.contains(want), "{want} missing from {ALERTS}");
    }
    // Every alert has its section in the operations guide, where its runbook_url points.
    let guide = std::fs::read_to_string(repo("docs/operations.md")).expect("operations guide");
    for name in &names {
        assert!(
            guide.lines().any(|l| l == format!("### {name}")),
            "docs/operations.md has no section for {name}"
        );
    }
}

#[test]
fn the_coverage_check_catches_a_missing_firing_or_silent_case() {
    let rules = yaml(&repo(ALERTS));
    let tests = yaml(&repo(ALERT_TESTS));
    // Drop every firing case of BbsyncGuardHolding.
    let mut no_firing = tests.clone();
    for t in no_firing["tests"].as_array_mut().expect("tests") {
        if let Some(cases) = t["alert_rule_test"].as_array_mut() {
            cases.retain(|c| {
                c["alertname"] != "BbsyncGuardHolding"
                    || c["exp_alerts"].as_array().is_none_or(|a| a.is_empty())
            });
        }
    }
    assert_eq!(
        coverage_problems(&rules, &no_firing),
        ["BbsyncGuardHolding: no test case where it fires"]
    );
    // Drop every silent case of BbsyncRateLimited.
    let mut no_silent = tests.clone();
    for t in no_silent["tests"].as_array_mut().expect("tests") {
        if let Some(cases) = t["alert_rule_test"].as_array_mut() {
            cases.retain(|c| {
                c["alertname"] != "BbsyncRateLimited"
                    || c["exp_alerts"].as_array().is_some_and(|a| !a.is_empty())
            });
        }
    }
    assert_eq!(
        coverage_problems(&rules, &no_silent),
        ["BbsyncRateLimited: no test case where it must stay silent"]
    );
    // A rule without its runbook anchor, and a test of an alert that does not exist.
    let mut bad_rules = rules.clone();
    bad_rules["groups"][0]["rules"][0]["annotations"]["runbook_url"] = Value::from("");
    let first = text(&rules["groups"][0]["rules"][0]["alert"]).to_owned();
    assert!(coverage_problems(&bad_rules, &tests)
        .iter()
        .any(|p| p.starts_with(&format!("{first}: runbook_url"))));
    let mut stray = tests.clone();
    stray["tests"][0]["alert_rule_test"][0]["alertname"] = Value::from("BbsyncNoSuchAlert");
    assert!(coverage_problems(&rules, &stray)
        .iter()
        .any(|p| p.contains("BbsyncNoSuchAlert")));
}

// ---------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> Value {
    let raw = std::fs::read_to_string(repo(DASHBOARD)).expect("read the dashboard");
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"))
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// Every PromQL expression of the dashboard: (where, expression). The template variables'
/// `label_values(selector, label)` queries are given as they are.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {:?} target {}", text(&p["title"]), text(&t["refId"])),
                text(&t["expr"]).to_owned(),
            ));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = match &v["query"] {
                Value::String(s) => s.clone(),
                q => text(&q["query"]).to_owned(),
            };
            out.push((format!("variable {}", text(&v["name"])), q));
        }
    }
    out
}

#[test]
fn the_dashboard_is_well_formed_and_every_panel_says_what_it_shows() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {:?}",
        d["schemaVersion"]
    );
    assert_eq!(d["uid"], "bbsync");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["job", "instance"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["datasource"]["uid"], "${datasource}");
    }
    let all = panels(&d);
    assert!(all.len() >= 10, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = text(&p["title"]);
        assert!(!title.trim().is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].to_string()),
            "panel id {} twice",
            p["id"]
        );
        assert!(
            text(&p["description"]).trim().len() >= 20,
            "panel {title:?} has no description"
        );
        assert_eq!(
            p["datasource"]["uid"], "${datasource}",
            "panel {title:?} does not use the datasource variable"
        );
        let targets = p["targets"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        assert!(!targets.is_empty(), "panel {title:?} has no query");
        for t in targets {
            let expr = text(&t["expr"]);
            assert!(!expr.trim().is_empty(), "panel {title:?}: an empty query");
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title:?}");
            // Every query is scoped to the chosen job and instance.
            assert!(
                expr.contains("job=~\"$job\"") && expr.contains("instance=~\"$instance\""),
                "panel {title:?} ignores $job / $instance: {expr}"
            );
        }
    }
    // What issue 19 asks the dashboard to show, by the metrics that show it.
    let exprs: Vec<String> = dashboard_queries(&d).into_iter().map(|(_, e)| e).collect();
    for metric in [
        "bbsync_reconciles_total",
        "bbsync_reconcile_duration_seconds_bucket",
        "bbsync_changes_total",
        "bbsync_pending_changes",
        "bbsync_revocation_latency_seconds_bucket",
        "bbsync_api_requests_total",
        "bbsync_api_rate_limited_total",
        "bbsync_rate_budget_remaining",
        "bbsync_source_entries",
        "bbsync_unresolved_identities",
        "bbsync_guard_holds_total",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(metric)),
            "no panel queries {metric}"
        );
    }
}

/// Grafana's variables replaced by values Prometheus accepts, so that promtool can parse the
/// query.
fn with_variables_filled(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1d")
        .replace("$job", ".+")
        .replace("$instance", ".+")
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    let d = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for (_, expr) in dashboard_queries(&d) {
        if expr.starts_with("label_values(") {
            continue;
        }
        n += 1;
        rules.push_str(&format!(
            "      - record: dashboard:query_{n}\n        expr: {}\n",
            serde_json::to_string(&with_variables_filled(&expr)).expect("json string")
        ));
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).expect("write");
    let (ok, out) = promtool(&["check", "rules", file.to_str().expect("utf8")]);
    assert!(ok, "a dashboard query does not parse:\n{out}\n{rules}");
}

// ---------------------------------------------------------------------------------------
// The metric names a PromQL expression queries

/// One label matcher of a selector; `op` is `=`, `!=`, `=~`, `!~`, or `` for a label a
/// `label_values()` query reads.
#[derive(Debug, Clone, PartialEq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// A series selector: a metric name and its label matchers.
#[derive(Debug, Clone, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

/// Aggregations, set and binary keywords, modifiers and the number literals PromQL spells as
/// words: never metric names.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "offset",
    "bool",
    "inf",
    "nan",
];

/// Keywords followed by a list of label names in parentheses.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal that starts at `i` (`"..."` and `'...'` with
/// backslash escapes, `` `...` `` raw), and its content.
fn string_at(s: &[char], i: usize) -> Result<(usize, String), String> {
    let quote = s[i];
    let mut j = i + 1;
    let mut out = String::new();
    while j < s.len() {
        let c = s[j];
        if c == quote {
            return Ok((j + 1, out));
        }
        if c == '\\' && quote != '`' && j + 1 < s.len() {
            out.push(s[j + 1]);
            j += 2;
            continue;
        }
        out.push(c);
        j += 1;
    }
    Err(format!("an unterminated string at {i}"))
}

fn skip_space(s: &[char], mut i: usize) -> usize {
    while i < s.len() && s[i].is_whitespace() {
        i += 1;
    }
    i
}

/// The index just past the `close` that ends what starts at `i` (after its opening
/// character), skipping strings.
fn past(s: &[char], mut i: usize, close: char) -> Result<usize, String> {
    while i < s.len() {
        match s[i] {
            '"' | '\'' | '`' => i = string_at(s, i)?.0,
            c if c == close => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err(format!("no closing {close:?}"))
}

/// The label matchers of `{...}` starting at `i` (the brace), and the index after it.
fn matchers_at(s: &[char], i: usize) -> Result<(usize, Vec<Matcher>), String> {
    let mut out = Vec::new();
    let mut j = i + 1;
    loop {
        j = skip_space(s, j);
        match s.get(j) {
            None => return Err("no closing '}'".into()),
            Some('}') => return Ok((j + 1, out)),
            Some(',') => {
                j += 1;
                continue;
            }
            Some(&c) if ident_start(c) => {}
            Some(c) => return Err(format!("unexpected {c:?} in a label matcher")),
        }
        let start = j;
        while j < s.len() && ident_char(s[j]) {
            j += 1;
        }
        let label: String = s[start..j].iter().collect();
        j = skip_space(s, j);
        let op = match (s.get(j), s.get(j + 1)) {
            (Some('='), Some('~')) | (Some('!'), Some('=')) | (Some('!'), Some('~')) => {
                let op: String = s[j..j + 2].iter().collect();
                j += 2;
                op
            }
            (Some('='), _) => {
                j += 1;
                "=".to_owned()
            }
            _ => return Err(format!("label {label}: no matcher operator")),
        };
        j = skip_space(s, j);
        if !matches!(s.get(j), Some('"' | '\'' | '`')) {
            return Err(format!("label {label}: the value is not a string"));
        }
        let (next, value) = string_at(s, j)?;
        j = next;
        out.push(Matcher { label, op, value });
    }
}

/// Every series selector of a PromQL expression: metric names with their matchers.
/// Functions (an identifier followed by `(`), aggregations and keywords, label names of
/// `by (...)`, `on (...)` and the like, strings, durations and subquery ranges in `[...]`,
/// numbers and Grafana variables (`$job`, `${x}`) are skipped. A selector without a metric
/// name (`{__name__=~"..."}`) is refused: what it matches cannot be checked.
fn selectors(expr: &str) -> Result<Vec<Selector>, String> {
    let s: Vec<char> = expr.chars().collect();
    let mut out: Vec<Selector> = Vec::new();
    // Whether the last token was a metric name, which a `{...}` then belongs to.
    let mut after_metric = false;
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let was_metric = std::mem::take(&mut after_metric);
        match c {
            '#' => {
                while i < s.len() && s[i] != '\n' {
                    i += 1;
                }
            }
            '"' | '\'' | '`' => i = string_at(&s, i)?.0,
            '[' => i = past(&s, i + 1, ']')?,
            '{' => {
                let (next, matchers) = matchers_at(&s, i)?;
                i = next;
                match out.last_mut() {
                    Some(sel) if was_metric => sel.matchers.extend(matchers),
                    _ => {
                        let name = matchers
                            .iter()
                            .find(|m| m.label == "__name__" && m.op == "=")
                            .ok_or_else(|| format!("a selector without a metric name in {expr:?}"))?
                            .value
                            .clone();
                        out.push(Selector {
                            metric: name,
                            matchers: matchers
                                .into_iter()
                                .filter(|m| m.label != "__name__")
                                .collect(),
                        });
                        after_metric = false;
                    }
                }
            }
            '$' => {
                i += 1;
                if s.get(i) == Some(&'{') {
                    i = past(&s, i + 1, '}')?;
                } else {
                    while i < s.len() && ident_char(s[i]) {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit()
                || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                // 0.5, 1e3, 0x1f, and durations (offset 1h30m).
                while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == '.' || s[i] == '_') {
                    i += 1;
                }
            }
            c if ident_start(c) => {
                let start = i;
                while i < s.len() && ident_char(s[i]) {
                    i += 1;
                }
                let word: String = s[start..i].iter().collect();
                let lower = word.to_ascii_lowercase();
                let next = skip_space(&s, i);
                let opens = s.get(next) == Some(&'(');
                if GROUPING.contains(&lower.as_str()) {
                    if opens {
                        i = past(&s, next + 1, ')')?;
                    }
                } else if opens || KEYWORDS.contains(&lower.as_str()) {
                    // A function or an aggregation (`sum by (x) (...)`: `by` comes next).
                } else {
                    out.push(Selector {
                        metric: word,
                        matchers: Vec::new(),
                    });
                    after_metric = true;
                }
            }
            _ => i += 1,
        }
    }
    Ok(out)
}

/// The selectors of a Grafana variable query `label_values(selector, label)` (or
/// `label_values(label)`), the label it reads given as a matcher with no operator.
fn variable_selectors(query: &str) -> Result<Vec<Selector>, String> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|q| q.strip_suffix(')'))
        .ok_or_else(|| format!("not a label_values() query: {query:?}"))?;
    let (selector, label) = inner
        .rsplit_once(',')
        .ok_or_else(|| format!("label_values() of no metric: {query:?}"))?;
    let mut sels = selectors(selector)?;
    if sels.len() != 1 {
        return Err(format!(
            "label_values() of {} selectors: {query:?}",
            sels.len()
        ));
    }
    sels[0].matchers.push(Matcher {
        label: label.trim().to_owned(),
        op: String::new(),
        value: String::new(),
    });
    Ok(sels)
}

fn names(expr: &str) -> Vec<String> {
    selectors(expr)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|s| s.metric)
        .collect()
}

#[test]
fn the_extractor_finds_metric_names_and_nothing_else() {
    let m = |label: &str, op: &str, value: &str| Matcher {
        label: label.into(),
        op: op.into(),
        value: value.into(),
    };
    assert_eq!(
        selectors(
            r#"histogram_quantile(0.99, sum by (le, kind) (rate(bbsync_reconcile_duration_seconds_bucket{job=~"$job", le!="0.5"}[$__rate_interval])))"#
        ),
        Ok(vec![Selector {
            metric: "bbsync_reconcile_duration_seconds_bucket".into(),
            matchers: vec![m("job", "=~", "$job"), m("le", "!=", "0.5")],
        }])
    );
    // Grouping labels, set operators with on()/ignoring(), offset durations, bool, time().
    assert_eq!(
        names(
            "(time() - a > 900) and on (job, instance) b offset 1h and ignoring(state) c > bool 0"
        ),
        ["a", "b", "c"]
    );
    assert_eq!(
        names("sum without () (x unless x offset -5m) or sum(y) by (job) / on(job) group_left(version) z"),
        ["x", "x", "y", "z"]
    );
    // Aggregations written in capitals, count_values and topk with a parameter, strings.
    assert_eq!(
        names(
            r#"SUM BY (le) (m1) + count_values("version", m2) + topk(3, m3) + quantile(0.9, m4)"#
        ),
        ["m1", "m2", "m3", "m4"]
    );
    // Strings never name metrics, escaped quotes included; functions are not metrics.
    assert_eq!(
        names(
            r#"label_replace(up{job="a\"b"}, "dst_metric", "$1", "src", "(.*)") + vector(1) + absent(nothing_here{x='y'})"#
        ),
        ["up", "nothing_here"]
    );
    // Subqueries, ranges with Grafana variables, numbers in every spelling, NaN and Inf.
    assert_eq!(
        names(
            r#"min_over_time((a and ignoring (state) (b{state="read"} > 0))[1d:5m]) > 1e3 + 0x1f + .5 + Inf - NaN"#
        ),
        ["a", "b"]
    );
    // Recording-rule names, @ modifiers, comments, ${var} and a bare {__name__=...} selector.
    assert_eq!(
        names("job:requests:rate5m @ start() # not_a_metric here\n + ${var} * {__name__=\"named\", a=\"b\"}"),
        ["job:requests:rate5m", "named"]
    );
    // An identifier followed by a parenthesis after spaces is still a function.
    assert_eq!(names("rate (c_total[5m]) * scalar (d)"), ["c_total", "d"]);
    assert!(selectors(r#"{__name__=~"bbsync_.*"}"#).is_err());
    assert!(selectors(r#"m{a="unterminated}"#).is_err());
    assert_eq!(
        variable_selectors(r#"label_values(bbsync_build_info{job=~"$job"}, instance)"#),
        Ok(vec![Selector {
            metric: "bbsync_build_info".into(),
            matchers: vec![m("job", "=~", "$job"), m("instance", "", "")],
        }])
    );
}

// ---------------------------------------------------------------------------------------
// Checking selectors against a live exposition

/// The Prometheus text exposition: series by metric name, and the `# TYPE` of each family.
struct Exposition {
    types: BTreeMap<String, String>,
    series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

fn exposition(text: &str) -> Exposition {
    let mut types = BTreeMap::new();
    let mut series: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                types.insert(name.to_owned(), kind.trim().to_owned());
            }
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let chars: Vec<char> = line.chars().collect();
        let end = chars
            .iter()
            .position(|c| *c == '{' || *c == ' ')
            .unwrap_or(chars.len());
        let name: String = chars[..end].iter().collect();
        let mut labels = BTreeMap::new();
        if chars.get(end) == Some(&'{') {
            let (_, matchers) = matchers_at(&chars, end)
                .unwrap_or_else(|e| panic!("a sample line /metrics gave: {line:?}: {e}"));
            for m in matchers {
                labels.insert(m.label, m.value);
            }
        }
        series.entry(name).or_default().push(labels);
    }
    Exposition { types, series }
}

/// Series Prometheus makes itself for every target, and the labels it adds to every series.
const PROMETHEUS_SERIES: &[&str] = &["up"];
const TARGET_LABELS: &[&str] = &["job", "instance"];

/// Whether `word` is written as `` `word` `` in docs/metrics.md.
fn documented(docs: &str, word: &str) -> bool {
    docs.contains(&format!("`{word}`"))
}

/// What in `selectors` (each with where it was found) a live /metrics does not back: an
/// unknown metric name (a histogram asked by its family name instead of its `_bucket`,
/// `_sum` or `_count` series), a label the metric does not have, an `=` value no series
/// has, a `=~` list of words none of which a series has or one of which is nowhere in
/// docs/metrics.md.
fn unbacked(selectors: &[(String, Selector)], expo: &Exposition, docs: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for (place, sel) in selectors {
        let name = &sel.metric;
        if PROMETHEUS_SERIES.contains(&name.as_str()) {
            for m in &sel.matchers {
                if !TARGET_LABELS.contains(&m.label.as_str()) {
                    problems.push(format!("{place}: {name} has no label {}", m.label));
                }
            }
            continue;
        }
        let Some(series) = expo.series.get(name) else {
            match expo.types.get(name).map(String::as_str) {
                Some("histogram") => problems.push(format!(
                    "{place}: {name} is a histogram: query {name}_bucket, {name}_sum or {name}_count"
                )),
                _ => problems.push(format!("{place}: {name} is not exposed by /metrics")),
            }
            continue;
        };
        for m in &sel.matchers {
            if TARGET_LABELS.contains(&m.label.as_str()) {
                continue;
            }
            let seen: BTreeSet<&str> = series
                .iter()
                .filter_map(|l| l.get(&m.label).map(String::as_str))
                .collect();
            if seen.is_empty() {
                problems.push(format!("{place}: {name} has no label {}", m.label));
                continue;
            }
            let plain = |v: &str| {
                !v.is_empty()
                    && v.split('|').all(|w| {
                        !w.is_empty()
                            && w.chars()
                                .all(|c| c.is_ascii_alphanumeric() || "_+.".contains(c))
                    })
            };
            match m.op.as_str() {
                "=" if !m.value.contains('$') && !seen.contains(m.value.as_str()) => {
                    problems.push(format!(
                        "{place}: no {name}{{{}=\"{}\"}} in /metrics (it has {seen:?})",
                        m.label, m.value
                    ));
                }
                "=~" if plain(&m.value) => {
                    let words: Vec<&str> = m.value.split('|').collect();
                    if !words.iter().any(|w| seen.contains(w)) {
                        problems.push(format!(
                            "{place}: none of {name}{{{}=~\"{}\"}} in /metrics (it has {seen:?})",
                            m.label, m.value
                        ));
                    }
                    for w in words {
                        if !seen.contains(w) && !documented(docs, w) {
                            problems.push(format!(
                                "{place}: {name}{{{}=~...}}: {w:?} is neither in /metrics nor in docs/metrics.md",
                                m.label
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
    }
    problems
}

#[test]
fn the_live_check_reports_unknown_metrics_labels_and_values() {
    let expo = exposition(
        "# HELP h_seconds x\n# TYPE h_seconds histogram\nh_seconds_bucket{kind=\"full\",le=\"+Inf\"} 1\nh_seconds_sum{kind=\"full\"} 2\nh_seconds_count{kind=\"full\"} 1\n# TYPE c_total counter\nc_total{outcome=\"ok\"} 1\nc_total{outcome=\"failed\"} 0\n",
    );
    let check = |expr: &str| {
        let sels: Vec<(String, Selector)> = selectors(expr)
            .expect("parses")
            .into_iter()
            .map(|s| ("q".to_owned(), s))
            .collect();
        unbacked(&sels, &expo, "outcomes: `ok`, `failed`, `error`")
    };
    assert!(check(r#"sum by (le) (rate(h_seconds_bucket{kind="full", le="+Inf", job=~"$job"}[5m])) / h_seconds_count + up{job="x"}"#).is_empty());
    assert!(check(r#"increase(c_total{outcome=~"failed|error"}[1h])"#).is_empty());
    assert_eq!(
        check("rate(h_seconds[5m])"),
        ["q: h_seconds is a histogram: query h_seconds_bucket, h_seconds_sum or h_seconds_count"]
    );
    assert_eq!(check("c_totl"), ["q: c_totl is not exposed by /metrics"]);
    assert_eq!(
        check(r#"c_total{kind="x"}"#),
        ["q: c_total has no label kind"]
    );
    assert_eq!(
        check(r#"c_total{outcome="oops"}"#),
        [r#"q: no c_total{outcome="oops"} in /metrics (it has {"failed", "ok"})"#]
    );
    assert_eq!(
        check(r#"c_total{outcome=~"failed|falied"}"#),
        [r#"q: c_total{outcome=~...}: "falied" is neither in /metrics nor in docs/metrics.md"#]
    );
    assert_eq!(check(r#"up{pod="x"}"#), ["q: up has no label pod"]);
}

// ---------------------------------------------------------------------------------------
// A live bbsync

const TOKEN: &str = "0123456789abcdef-obs-token";

/// POST /sync with the token: 202.
async fn sync(d: &Daemon) {
    bbsync::tls::install_provider();
    let r = reqwest::Client::new()
        .post(d.url("/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("POST /sync");
    assert_eq!(r.status().as_u16(), 202);
}

/// ann, bob, cid, dan and eve, with zed (no account id: invalid and unresolved); `disabled`
/// have left; `eng` has `members`.
fn directory(disabled: &[&str], members: &[&str]) -> String {
    let people: Vec<(&str, bool)> = ["ann", "bob", "cid", "dan", "eve"]
        .iter()
        .map(|p| (*p, disabled.contains(p)))
        .collect();
    let mut text = ldif(&people, &[("eng", members)]);
    text.push_str(
        "dn: uid=zed,ou=people,dc=acme,dc=test\nobjectClass: inetOrgPerson\nuid: zed\ncn: Zed Noid\n\n",
    );
    text
}

/// Every selector the shipped alerts and dashboard query, with where it is.
fn shipped_selectors() -> Vec<(String, Selector)> {
    let mut out = Vec::new();
    let rules = yaml(&repo(ALERTS));
    for (_, r) in alert_rules(&rules) {
        let place = format!("alert {}", text(&r["alert"]));
        for s in selectors(text(&r["expr"])).unwrap_or_else(|e| panic!("{place}: {e}")) {
            out.push((place.clone(), s));
        }
    }
    for (place, q) in dashboard_queries(&dashboard()) {
        let sels = if q.starts_with("label_values(") {
            variable_selectors(&q)
        } else {
            selectors(&q)
        };
        for s in sels.unwrap_or_else(|e| panic!("{place}: {e}")) {
            out.push((place.clone(), s));
        }
    }
    out
}

#[tokio::test]
async fn every_metric_the_alerts_and_the_dashboard_query_is_exposed_by_a_live_bbsync() {
    // Developers = bob, cid, dan, eve; eng (-> Developers) = ann, cid, dan, eve; bob left.
    let mut s = seed(&["ann", "bob", "cid", "dan", "eve"]);
    s.groups
        .push(group("Developers", &["bob", "cid", "dan", "eve"]));
    let emu = start(s).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let ldif_path = tmp.path().join("dir.ldif");
    std::fs::write(
        &ldif_path,
        directory(&["bob"], &["ann", "cid", "dan", "eve"]),
    )
    .expect("ldif");
    let cfg = tmp.path().join("bbsync.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"mode = "apply"
[bitbucket]
workspace = "acme"
api_url = "{}"
max_retries = 0
[credentials.admin]
kind = "api_token"
email = "{ADMIN_EMAIL}"
token = "{ADMIN_TOKEN}"
[source]
kind = "ldif"
path = "dir.ldif"
[directory]
disabled_attribute = "nsAccountLock"
[audit]
path = "audit.jsonl"
[apply]
requests_per_hour = 3600000
burst = 1000
[daemon]
interval_secs = 3600
[offboarding]
poll_interval_secs = 5
[safety]
max_removals = 1
[http]
listen = "127.0.0.1:0"
token = "{TOKEN}"
[[groups]]
name = "Developers"
from = ["eng"]
"#,
            emu.base_url()
        ),
    )
    .expect("config");
    let d = Daemon::start(&cfg).await;

    // The start-up reconcile: ann joins, bob (a leaver) is removed.
    d.wait_for("reconcile finished", 1).await;
    d.wait_for_series("bbsync_revocation_latency_seconds_count{trigger=\"reconcile\"}")
        .await;
    // cid leaves: the off-boarding poll revokes.
    std::fs::write(
        &ldif_path,
        directory(&["bob", "cid"], &["ann", "cid", "dan", "eve"]),
    )
    .expect("ldif");
    d.wait_for_series("bbsync_offboarding_polls_total{outcome=\"revoked\"}")
        .await;
    d.wait_for_series("bbsync_revocation_latency_seconds_count{trigger=\"offboarding_poll\"}")
        .await;
    // dan and eve leave eng: two removals, more than safety.max_removals lets go.
    std::fs::write(&ldif_path, directory(&["bob", "cid"], &["ann"])).expect("ldif");
    sync(&d).await;
    d.wait_for_series("bbsync_guard_holds_total{guard=\"absolute\"}")
        .await;
    // The directory is gone: a run with no plan.
    std::fs::remove_file(&ldif_path).expect("rm ldif");
    sync(&d).await;
    d.wait_for_series("bbsync_reconcile_errors_total{").await;
    // ... and so the off-boarding poll's light read fails too.
    let text = d
        .wait_for_series("bbsync_offboarding_polls_total{outcome=\"error\"}")
        .await;

    promtool_accepts(&text);
    let docs = std::fs::read_to_string(repo("docs/metrics.md")).expect("docs/metrics.md");
    let shipped = shipped_selectors();
    let problems = unbacked(&shipped, &exposition(&text), &docs);
    assert!(
        problems.is_empty(),
        "queried but not exposed:\n{}\n--- /metrics ---\n{text}",
        problems.join("\n")
    );
    // Every metric bbsync exposes is watched by a panel (a new metric gets one).
    let queried: BTreeSet<String> = shipped.iter().map(|(_, s)| s.metric.clone()).collect();
    let expo = exposition(&text);
    for (family, kind) in &expo.types {
        let watched = match kind.as_str() {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| queried.contains(&format!("{family}{s}"))),
            _ => queried.contains(family),
        };
        assert!(watched, "no panel or alert queries {family}");
    }
    assert_eq!(d.stop().await.0, Some(0));
}
