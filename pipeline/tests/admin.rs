//! The admin server over a real pipeline run: health and readiness,
//! Prometheus metrics that agree with the run's own counts, the JSON API
//! with its validation and errors, the OpenAPI document, and tenant-scoped
//! tokens that see their own tenant only.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;
use sluice_connectors::generator::GeneratorConfig;
use sluice_connectors::source::StopFlag;
use sluice_connectors::synthetic::GeneratorSource;
use sluice_pipeline::admin::{AdminConfig, AdminServer, AdminState, OPENAPI, prometheus::OTHER_TENANTS};
use sluice_pipeline::metrics::Metrics;
use sluice_pipeline::sinks::BudgetConfig;
use sluice_pipeline::{Config, RunOptions, Summary, run};

const ADMIN_TOKEN: &str = "admin-token-for-tests";
const ACME_TOKEN: &str = "acme-token-for-tests";

/// One pipeline run over a generated stream, shared by the tests: its
/// metrics and summary.
fn pipeline() -> &'static (Arc<Metrics>, Summary) {
    static RUN: OnceLock<(Arc<Metrics>, Summary)> = OnceLock::new();
    RUN.get_or_init(|| {
        let config = Config::default();
        let generator = GeneratorConfig { tenants: 2, alerts: 200_000, seed: 7, ..GeneratorConfig::default() };
        let source = GeneratorSource::new(generator, 4096, StopFlag::new()).unwrap();
        let metrics = Arc::new(Metrics::new(500));
        let options = RunOptions { metrics: Some(metrics.clone()), ..RunOptions::default() };
        let summary = run(&config, Box::new(source), &options, &StopFlag::new(), |_| Ok(())).unwrap();
        assert!(summary.escalated > 0, "the run must escalate something for these tests to mean anything");
        (metrics, summary)
    })
}

fn server(max_tenant_series: usize, tokens: bool) -> AdminServer {
    let (metrics, _) = pipeline();
    let config = AdminConfig { max_tenant_series, ..AdminConfig::default() };
    let mut state = AdminState::new(&config, metrics.clone(), None, BudgetConfig::default());
    if tokens {
        state = state.with_tokens(Some(ADMIN_TOKEN), &[("acme", ACME_TOKEN)]);
    }
    AdminServer::start("127.0.0.1:0", state).unwrap()
}

/// GET; returns status and body.
fn get(server: &AdminServer, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut request = agent.get(format!("http://{}{path}", server.addr()));
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let mut response = request.call().unwrap();
    (response.status().as_u16(), response.body_mut().read_to_string().unwrap())
}

fn get_json(server: &AdminServer, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = get(server, path, token);
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    (status, value)
}

/// `name{labels} value` lines of an exposition, by series.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("bad sample line: {line}"));
        out.insert(series.to_string(), value.parse::<f64>().unwrap_or_else(|_| panic!("bad value: {line}")));
    }
    out
}

#[test]
fn health_and_readiness_say_what_each_component_is_doing() {
    let s = server(100, false);
    let (code, health) = get_json(&s, "/health", None);
    assert_eq!(code, 200);
    assert_eq!(health["status"], "ok");
    // The run is over: the pipeline finished, so the process is not ready.
    let (code, ready) = get_json(&s, "/ready", None);
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["status"], "not_ready");
    assert_eq!(ready["components"]["pipeline"]["state"], "finished");
    assert_eq!(ready["components"]["source"]["state"], "finished");
}

#[test]
fn metrics_agree_with_the_run_and_are_valid_exposition() {
    let (_, summary) = pipeline();
    let s = server(100, false);
    let (code, text) = get(&s, "/metrics", None);
    assert_eq!(code, 200);
    // Every family has HELP and TYPE, and every sample belongs to one.
    let mut families = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_string(), kind.to_string());
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        }
    }
    let series = samples(&text);
    for name in series.keys() {
        let base = name.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|s| base.strip_suffix(s)).unwrap_or(base);
        assert!(families.contains_key(base) || families.contains_key(family), "{name} has no TYPE");
    }
    assert_eq!(series["sluice_source_records_read_total"], summary.alerts_read as f64);
    // Per tenant, the operator counters are the run's own.
    for (tenant, counters) in &summary.tenants {
        let want = counters.get("dedup.records_in").copied().unwrap_or(0) as f64;
        let key = format!("sluice_operator_records_in_total{{operator=\"dedup\",tenant=\"{tenant}\"}}");
        assert_eq!(series.get(&key), Some(&want), "{key}");
        let dups = counters.get("dedup.duplicates").copied().unwrap_or(0) as f64;
        let key = format!(
            "sluice_operator_records_dropped_total{{operator=\"dedup\",reason=\"duplicate\",tenant=\"{tenant}\"}}"
        );
        assert_eq!(series.get(&key).copied().unwrap_or(0.0), dups, "{key}");
    }
    let escalated: f64 =
        series.iter().filter(|(k, _)| k.starts_with("sluice_reports_total{kind=\"escalate\"")).map(|(_, v)| v).sum();
    assert_eq!(escalated, summary.escalated as f64);
    // The latency histogram counts every hand-off, buckets never decrease.
    assert_eq!(series["sluice_triage_latency_seconds_count"], summary.triage_latency_us.count as f64);
    let buckets: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("sluice_triage_latency_seconds_bucket"))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(*buckets.last().unwrap(), summary.triage_latency_us.count as f64);
    // Per tenant, the hand-offs add up to all of them.
    let per_tenant: f64 = series
        .iter()
        .filter(|(k, _)| k.starts_with("sluice_tenant_triage_latency_seconds_count{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(per_tenant, summary.triage_latency_us.count as f64);
    // Live state is reported per tenant.
    assert!(
        series.keys().any(|k| k.starts_with("sluice_operator_state_entries{operator=\"correlate\",state=\"clusters\""))
    );
}

#[test]
fn tenants_beyond_the_series_bound_are_summed_under_one_label() {
    let (_, summary) = pipeline();
    assert!(summary.tenants.len() >= 2);
    let s = server(1, false);
    let series = samples(&get(&s, "/metrics", None).1);
    let tenants: std::collections::BTreeSet<&str> = series
        .keys()
        .filter(|k| k.starts_with("sluice_operator_records_in_total{operator=\"dedup\""))
        .map(|k| k.split("tenant=\"").nth(1).unwrap().trim_end_matches("\"}"))
        .collect();
    assert_eq!(tenants.len(), 2, "one tenant of its own and {OTHER_TENANTS}: {tenants:?}");
    assert!(tenants.contains(OTHER_TENANTS));
    // Nothing is lost by folding.
    let total: f64 = series
        .iter()
        .filter(|(k, _)| k.starts_with("sluice_operator_records_in_total{operator=\"dedup\""))
        .map(|(_, v)| v)
        .sum();
    let want: u64 = summary.tenants.values().map(|c| c.get("dedup.records_in").copied().unwrap_or(0)).sum();
    assert_eq!(total, want as f64);
}

#[test]
fn clusters_are_listed_filtered_and_explained() {
    let s = server(100, false);
    let (code, list) = get_json(&s, "/api/v1/clusters?decision=escalate&limit=1000", None);
    assert_eq!(code, 200);
    let rows = list["clusters"].as_array().unwrap();
    assert!(!rows.is_empty());
    let scores: Vec<f64> = rows.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "highest score first: {scores:?}");
    assert!(rows.iter().all(|r| r["decision"] == "escalate"));
    // min_score and tenant filter.
    let cut = scores[scores.len() / 2];
    let (_, high) = get_json(&s, &format!("/api/v1/clusters?min_score={cut}"), None);
    assert!(high["clusters"].as_array().unwrap().iter().all(|r| r["score"].as_f64().unwrap() >= cut));
    let tenant = rows[0]["tenant"].as_str().unwrap();
    let (_, one) = get_json(&s, &format!("/api/v1/clusters?tenant={tenant}"), None);
    assert!(one["clusters"].as_array().unwrap().iter().all(|r| r["tenant"] == tenant));
    // Detail: the case file with its breakdown, and the versions seen.
    let id = rows[0]["cluster_id"].as_str().unwrap();
    let (code, detail) = get_json(&s, &format!("/api/v1/clusters/{tenant}/{id}"), None);
    assert_eq!(code, 200, "{detail}");
    let breakdown = detail["case"]["breakdown"].as_array().unwrap();
    let points: f64 = breakdown.iter().map(|l| l["points"].as_f64().unwrap()).sum();
    assert!((points - detail["case"]["score"].as_f64().unwrap()).abs() < 1e-6, "the breakdown adds up to the score");
    assert!(!detail["versions"].as_array().unwrap().is_empty());
    // The same id in another tenant is not found.
    let other = if tenant == "acme" { "globex" } else { "acme" };
    let (code, _) = get_json(&s, &format!("/api/v1/clusters/{other}/{id}"), None);
    assert_eq!(code, 404);
}

#[test]
fn bad_requests_get_json_errors_naming_the_problem() {
    let s = server(100, false);
    for (path, code, needle) in [
        ("/api/v1/clusters?limit=0", 400, "limit"),
        ("/api/v1/clusters?limit=abc", 400, "limit"),
        ("/api/v1/clusters?bogus=1", 400, "bogus"),
        ("/api/v1/clusters?decision=maybe", 400, "decision"),
        ("/api/v1/clusters?since=yesterday", 400, "since"),
        ("/api/v1/analytics", 400, "tenant"),
        ("/api/v1/analytics?tenant=acme&from=1h&to=2h", 400, "before"),
        ("/api/v1/deferred", 404, "store"),
        ("/api/v1/nothing-here", 404, "openapi"),
    ] {
        let (got, body) = get_json(&s, path, None);
        assert_eq!(got, code, "{path}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_else(|| panic!("{path}: {body}"));
        assert!(message.contains(needle), "{path}: {message:?} should mention {needle}");
        assert_eq!(body["error"]["status"], code);
    }
}

#[test]
fn analytics_counts_a_tenant_over_a_range() {
    let (_, summary) = pipeline();
    let s = server(100, false);
    let (tenant, counters) = summary.tenants.iter().next().unwrap();
    let (code, a) = get_json(&s, &format!("/api/v1/analytics?tenant={tenant}&from=1h"), None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["alerts_in"], counters.get("dedup.records_in").copied().unwrap_or(0));
    // A range that ended before the process started saw nothing.
    let (_, before) = get_json(&s, &format!("/api/v1/analytics?tenant={tenant}&from=3h&to=2h"), None);
    assert_eq!(before["alerts_in"], 0);
}

#[test]
fn every_documented_path_answers() {
    let doc: Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let s = server(100, true);
    let (_, list) = get_json(&s, "/api/v1/clusters", Some(ADMIN_TOKEN));
    let first = &list["clusters"][0];
    for (path, item) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{tenant}", first["tenant"].as_str().unwrap())
            .replace("{cluster_id}", first["cluster_id"].as_str().unwrap());
        let needs_tenant = item["get"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "tenant" && p["in"] == "query" && path.ends_with("analytics"));
        let concrete = if needs_tenant { format!("{concrete}?tenant=acme") } else { concrete };
        let (code, body) = get(&s, &concrete, Some(ADMIN_TOKEN));
        // Store-backed lists answer 404 "no store" here; nothing else may 404.
        let no_store = code == 404 && body.contains("no store");
        assert!(code == 200 || code == 503 || no_store, "{concrete}: {code} {body}");
    }
}

#[test]
fn tokens_are_required_and_tenant_tokens_see_their_tenant_only() {
    let s = server(100, true);
    // Probes and the page shell are open; data is not.
    assert_eq!(get(&s, "/health", None).0, 200);
    assert_eq!(get(&s, "/", None).0, 200);
    assert_eq!(get_json(&s, "/api/v1/clusters", None).0, 401);
    assert_eq!(get_json(&s, "/api/v1/clusters", Some("wrong")).0, 401);
    assert_eq!(get(&s, "/metrics", None).0, 401);
    assert_eq!(get(&s, "/metrics", Some(ADMIN_TOKEN)).0, 200);
    // A tenant token: no cross-tenant metrics, its own rows only.
    assert_eq!(get_json(&s, "/metrics", Some(ACME_TOKEN)).0, 403);
    let (code, all) = get_json(&s, "/api/v1/clusters", Some(ADMIN_TOKEN));
    assert_eq!(code, 200);
    assert!(all["clusters"].as_array().unwrap().iter().any(|r| r["tenant"] != "acme"), "the run has other tenants");
    let (code, own) = get_json(&s, "/api/v1/clusters", Some(ACME_TOKEN));
    assert_eq!(code, 200);
    let own = own["clusters"].as_array().unwrap();
    assert!(!own.is_empty() && own.iter().all(|r| r["tenant"] == "acme"));
    assert_eq!(get_json(&s, "/api/v1/clusters?tenant=globex", Some(ACME_TOKEN)).0, 403);
    let globex = all["clusters"].as_array().unwrap().iter().find(|r| r["tenant"] == "globex").unwrap();
    let path = format!("/api/v1/clusters/globex/{}", globex["cluster_id"].as_str().unwrap());
    assert_eq!(get_json(&s, &path, Some(ACME_TOKEN)).0, 403);
    let (_, tenants) = get_json(&s, "/api/v1/tenants", Some(ACME_TOKEN));
    assert!(tenants["tenants"][0]["triage_latency_ms"]["count"].as_u64().unwrap() > 0, "acme's own latency: {tenants}");
    let names: Vec<&str> =
        tenants["tenants"].as_array().unwrap().iter().map(|t| t["tenant"].as_str().unwrap()).collect();
    assert_eq!(names, ["acme"]);
    // The status answer carries nothing summed over other tenants.
    let (_, status) = get_json(&s, "/api/v1/status", Some(ACME_TOKEN));
    assert!(status.get("samples").is_none() && status.get("read").is_none() && status.get("latency").is_none());
    assert!(status["top_clusters"].as_array().unwrap().iter().all(|c| c["tenant"] == "acme"));
    let (_, status) = get_json(&s, "/api/v1/status", Some(ADMIN_TOKEN));
    assert!(status["read"].as_u64().unwrap() > 0);
}

#[test]
fn a_server_beyond_loopback_needs_a_token() {
    let config = AdminConfig {
        listen: "0.0.0.0:9464".into(),
        token_env: "SLUICE_TEST_ADMIN_TOKEN_THAT_IS_NOT_SET".into(),
        ..AdminConfig::default()
    };
    let errors = config.validate();
    assert!(
        errors.iter().any(|e| e.contains("beyond loopback") && e.contains("SLUICE_TEST_ADMIN_TOKEN_THAT_IS_NOT_SET"))
    );
    assert!(AdminConfig::default().validate().is_empty(), "loopback needs no token");
    let bad = AdminConfig { listen: "not an address".into(), ..AdminConfig::default() };
    assert!(bad.validate().iter().any(|e| e.contains("admin.listen")));
}

#[test]
fn the_grafana_dashboard_queries_only_metrics_sluice_exports() {
    let s = server(100, false);
    let (_, text) = get(&s, "/metrics", None);
    let families: std::collections::BTreeSet<&str> =
        text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).map(|l| l.split(' ').next().unwrap()).collect();
    let dashboard: Value =
        serde_json::from_str(include_str!("../../deploy/grafana/sluice.json")).expect("the dashboard is JSON");
    let mut queried = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("sluice_") {
                let name: String = expr[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let family = name.strip_suffix("_bucket").unwrap_or(&name);
                assert!(
                    families.contains(family),
                    "panel {:?} queries {name}, which /metrics does not export",
                    panel["title"]
                );
                queried += 1;
            }
        }
    }
    assert!(queried >= 10);
}

#[test]
fn budget_burn_verdicts_and_analytics_come_from_the_store() {
    use sluice_pipeline::sinks::BudgetLimits;
    use sluice_pipeline::store::Store;
    let (metrics, _) = pipeline();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_sqlite(&dir.path().join("sluice.db")).unwrap());
    store.record_usage("acme", "llm", 1234, sluice_connectors::source::now_us()).unwrap();
    let mut budget = BudgetConfig::default();
    budget.tenants.insert("acme".into(), BudgetLimits { llm_tokens_per_day: Some(10_000), ..BudgetLimits::default() });
    let state = AdminState::new(&AdminConfig::default(), metrics.clone(), Some(store), budget);
    let s = AdminServer::start("127.0.0.1:0", state).unwrap();
    let (code, status) = get_json(&s, "/api/v1/status", None);
    assert_eq!(code, 200, "{status}");
    let tenant =
        |name: &str| status["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == name).unwrap().clone();
    assert_eq!(tenant("acme")["budget"]["llm_tokens_last_day"], 1234);
    assert_eq!(tenant("acme")["budget"]["llm_tokens_per_day"], 10_000);
    assert!(tenant("globex")["budget"].is_null(), "an unlimited tenant has no burn");
    let (code, a) = get_json(&s, "/api/v1/analytics?tenant=acme&from=1h", None);
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["budget"]["llm_tokens"], 1234);
    assert_eq!(get_json(&s, "/api/v1/analytics?tenant=globex&from=1h", None).1["budget"]["llm_tokens"], 0);
    for path in ["/api/v1/verdicts", "/api/v1/priors", "/api/v1/deferred?status=parked"] {
        let (code, body) = get_json(&s, path, None);
        assert_eq!(code, 200, "{path}: {body}");
    }
}
