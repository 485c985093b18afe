//! Hand-off to the investigation stage: the store's outbox, the webhook and
//! LLM sinks against local scripted servers, budgets, and exactly-once
//! delivery across a `kill -9`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::http::{Reply, Request, Server};
use serde_json::json;
use sluice_operators::cluster::ClusterReport;
use sluice_operators::operator::ReportKind;
use sluice_operators::score::ScoreConfig;
use sluice_operators::time::Duration as ConfigDuration;
use sluice_pipeline::output::stable_case_json;
use sluice_pipeline::sinks::{
    BudgetLimits, Dispatchers, LlmConfig, LlmSink, Sink, SinksConfig, WebhookConfig, WebhookSink, signature,
};
use sluice_pipeline::store::{Store, status};

fn report(tenant: &str, id: &str, version: u64, score: f64, factors: &[&str]) -> ClusterReport {
    let breakdown: Vec<_> = factors.iter().map(|f| json!({"factor": f, "points": 10.0, "detail": "test"})).collect();
    serde_json::from_value(json!({
        "cluster_id": id, "version": version, "idempotency_key": format!("{id}:{version}"),
        "tenant": tenant, "signature": "0011223344556677", "score": score, "decision": "escalate",
        "reason": "test", "breakdown": breakdown,
        "first_seen": "2026-11-23T10:00:00.000Z", "last_seen": "2026-11-23T10:05:00.000Z",
        "entities": {"host": ["web-01"], "ip": ["203.0.113.7"]}, "tactics": ["Credential Access"],
        "max_level": 10, "alerts": 12, "duplicates": 3, "rules": [], "representatives": []
    }))
    .unwrap()
}

fn record(store: &Store, r: &ClusterReport, sinks: &[&str], floor: bool) -> bool {
    let body = stable_case_json(ReportKind::Escalate, r);
    store.record(ReportKind::Escalate, r, &body, sinks, floor, sluice_connectors::source::now_us()).unwrap().0
}

fn fast_retries() -> SinksConfig {
    let mut c = SinksConfig::default();
    c.retry.initial = ConfigDuration(10);
    c.retry.max = ConfigDuration(50);
    c.retry.max_attempts = 6;
    c
}

fn sqlite(dir: &Path) -> Arc<Store> {
    Arc::new(Store::open_sqlite(&dir.join("sluice.db")).unwrap())
}

fn webhook(url: &str, timeout_ms: i64) -> Box<dyn Sink> {
    let config = WebhookConfig { url: url.into(), timeout: ConfigDuration(timeout_ms), ..WebhookConfig::default() };
    Box::new(WebhookSink::with_secret(&config, "test-secret"))
}

fn llm(url: &str, timeout_ms: i64) -> Box<dyn Sink> {
    let config = LlmConfig {
        base_url: format!("{url}/v1"),
        model: "test-model".into(),
        timeout: ConfigDuration(timeout_ms),
        ..LlmConfig::default()
    };
    Box::new(LlmSink::with_key(&config, Some("test-key".into())))
}

fn verdict_answer(content: &str, prompt: i64, completion: i64) -> Reply {
    Reply::json(
        200,
        json!({
            "id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
        })
        .to_string(),
    )
}

const GOOD_VERDICT: &str = r#"{"verdict":"true_positive","confidence":0.9,"summary":"SSH brute force then login.","recommended_actions":["Reset the password"],"mitre":["T1110.001"]}"#;

#[test]
fn the_webhook_gets_each_case_signed_and_retries_through_failures() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    // Fails the first two attempts of every key (500, then a reset).
    let seen: Arc<std::sync::Mutex<BTreeMap<String, usize>>> = Default::default();
    let s2 = seen.clone();
    let server = Server::start(move |req: &Request| {
        let key = req.headers.get("idempotency-key").cloned().unwrap_or_default();
        let mut seen = s2.lock().unwrap();
        let n = seen.entry(key).or_default();
        *n += 1;
        match *n {
            1 => Reply::json(500, "{}"),
            2 => Reply::Reset,
            _ => Reply::json(200, "{}"),
        }
    });
    for i in 0..3 {
        assert!(record(&store, &report("acme", &format!("c{i}"), 1, 70.0 + i as f64, &[]), &["webhook"], false));
    }
    // A replayed report changes nothing.
    assert!(!record(&store, &report("acme", "c0", 1, 70.0, &[]), &["webhook"], false));
    let d =
        Dispatchers::start(store.clone(), vec![webhook(&format!("{}/hook", server.url), 2000)], &fast_retries(), None);
    let counts = d.drain(Duration::from_secs(20)).unwrap();
    assert_eq!(counts.get("webhook", status::DELIVERED), 3, "{counts:?}");
    let ok: Vec<Request> = server.requests().into_iter().collect();
    assert_eq!(ok.len(), 9, "three attempts per case");
    for req in &ok {
        assert_eq!(req.method, "POST");
        assert_eq!(req.path, "/hook");
        let ts = &req.headers["x-sluice-timestamp"];
        let expected = format!("sha256={}", signature(b"test-secret", ts, req.body.as_bytes()));
        assert_eq!(req.headers["x-sluice-signature"], expected);
        let body: serde_json::Value = serde_json::from_str(&req.body).unwrap();
        assert_eq!(body["idempotency_key"], req.headers["idempotency-key"].as_str());
        assert_eq!(req.headers["x-sluice-tenant"], "acme");
    }
    // The highest score went first.
    assert_eq!(ok[0].headers["idempotency-key"], "c2:1");
    let log = store.audit_log("acme").unwrap();
    assert_eq!(log.iter().filter(|l| l.1 == "handoff").count(), 3, "{log:?}");
}

#[test]
fn a_receiver_that_refuses_a_case_parks_it_with_the_reason_and_requeue_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let refuse = Arc::new(AtomicUsize::new(1));
    let r2 = refuse.clone();
    let server = Server::start(move |_| {
        if r2.load(Ordering::SeqCst) == 1 {
            Reply::json(422, r#"{"error":"bad schema"}"#)
        } else {
            Reply::json(204, "")
        }
    });
    record(&store, &report("acme", "c1", 1, 80.0, &[]), &["webhook"], false);
    let counts = Dispatchers::start(store.clone(), vec![webhook(&server.url, 2000)], &fast_retries(), None)
        .drain(Duration::from_secs(10))
        .unwrap();
    assert_eq!(counts.get("webhook", status::PARKED), 1);
    let parked = store.outbox_rows("acme", status::PARKED).unwrap();
    assert!(parked[0].2.contains("HTTP 422") && parked[0].2.contains("bad schema"), "{parked:?}");
    refuse.store(0, Ordering::SeqCst);
    assert_eq!(store.requeue_parked("acme", "", "operator:test", 0).unwrap(), 1);
    let counts = Dispatchers::start(store.clone(), vec![webhook(&server.url, 2000)], &fast_retries(), None)
        .drain(Duration::from_secs(10))
        .unwrap();
    assert_eq!(counts.get("webhook", status::DELIVERED), 1);
    let actions: Vec<String> = store.audit_log("acme").unwrap().into_iter().map(|l| l.1).collect();
    assert_eq!(actions, ["escalate", "parked", "requeue", "handoff"]);
}

/// A tenant whose investigations are slow holds up another tenant by at
/// most one investigation (`sinks.llm.concurrency`): here acme's answers
/// wait until globex's case has arrived, which with a single dispatcher
/// (acme's cases first) it never would.
fn slow_tenant_run(concurrency: u32) -> (BTreeMap<String, u64>, usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let globex_seen = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
    let starved = Arc::new(AtomicUsize::new(0));
    let (seen, st) = (globex_seen.clone(), starved.clone());
    let server = Server::start(move |req: &Request| {
        let (lock, cv) = &*seen;
        if req.body.contains("globex") {
            *lock.lock().unwrap() = true;
            cv.notify_all();
        } else {
            let (done, timeout) =
                cv.wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(3), |seen| !*seen).unwrap();
            if timeout.timed_out() && !*done {
                st.fetch_add(1, Ordering::SeqCst);
            }
        }
        verdict_answer(GOOD_VERDICT, 100, 20)
    });
    for i in 0..2 {
        record(&store, &report("acme", &format!("a{i}"), 1, 90.0, &[]), &["llm"], false);
    }
    record(&store, &report("globex", "g0", 1, 70.0, &[]), &["llm"], false);
    let config = LlmConfig {
        base_url: format!("{}/v1", server.url),
        model: "test-model".into(),
        timeout: ConfigDuration(30_000),
        concurrency,
        ..LlmConfig::default()
    };
    let sink: Box<dyn Sink> = Box::new(LlmSink::with_key(&config, None));
    let counts =
        Dispatchers::start(store.clone(), vec![sink], &fast_retries(), None).drain(Duration::from_secs(60)).unwrap();
    let delivered = ["acme", "globex"]
        .into_iter()
        .map(|t| (t.to_string(), store.verdicts(t).unwrap().len() as u64))
        .collect::<BTreeMap<_, _>>();
    assert_eq!(counts.get("llm", status::DELIVERED), 3, "{counts:?}");
    (delivered, starved.load(Ordering::SeqCst))
}

#[test]
fn a_tenant_slow_to_investigate_holds_up_another_by_at_most_one_investigation() {
    let (delivered, starved) = slow_tenant_run(2);
    assert_eq!(delivered, BTreeMap::from([("acme".to_string(), 2), ("globex".to_string(), 1)]));
    assert_eq!(starved, 0, "globex's case went out while acme's were still being answered");
    // The same with one investigation at a time: acme's first case waits
    // for globex's, which waits behind it (until the server gives up).
    let (_, starved) = slow_tenant_run(1);
    assert!(starved > 0, "a single dispatcher serves acme's cases before globex's");
}

#[test]
fn the_llm_client_sends_a_fenced_case_and_stores_a_validated_verdict_with_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    // 429 with Retry-After, a 500, a slow answer, an invalid answer, then a
    // valid one.
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let server = Server::start(move |_| match c2.fetch_add(1, Ordering::SeqCst) {
        0 => Reply::Respond { status: 429, headers: vec![("Retry-After".into(), "1".into())], body: "{}".into() },
        1 => Reply::json(500, "{}"),
        2 => Reply::Hang(Duration::from_millis(1500)),
        3 => verdict_answer("Sure! The case looks bad.", 100, 7),
        _ => verdict_answer(&format!("```json\n{GOOD_VERDICT}\n```"), 130, 40),
    });
    record(&store, &report("acme", "c1", 1, 80.0, &[]), &["llm"], false);
    let started = Instant::now();
    let counts = Dispatchers::start(store.clone(), vec![llm(&server.url, 500)], &fast_retries(), None)
        .drain(Duration::from_secs(20))
        .unwrap();
    assert_eq!(counts.get("llm", status::DELIVERED), 1, "{counts:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was honoured");
    let verdicts = store.verdicts("acme").unwrap();
    assert_eq!(verdicts, [("c1:1".to_string(), "true_positive".to_string(), 0.9)]);
    // Tokens of both answers to the last request count.
    assert_eq!(store.tokens_since("acme", 0).unwrap(), 100 + 7 + 130 + 40);
    let reqs = server.requests();
    assert_eq!(reqs.len(), 5);
    for r in &reqs {
        assert_eq!(r.path, "/v1/chat/completions");
        assert_eq!(r.headers["authorization"], "Bearer test-key");
        let body: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["model"], "test-model");
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(body["messages"][0]["role"], "system");
        let user = body["messages"][1]["content"].as_str().unwrap();
        assert_eq!(user.matches("<case_file>").count(), 1);
        assert_eq!(user.matches("</case_file>").count(), 1);
        let inner = user.split("<case_file>").nth(1).unwrap().split("</case_file>").next().unwrap();
        let case: serde_json::Value = serde_json::from_str(inner.trim()).unwrap();
        assert_eq!(case["idempotency_key"], "c1:1");
    }
    // The retry after an invalid answer says what was wrong.
    let last: serde_json::Value = serde_json::from_str(&reqs[4].body).unwrap();
    assert_eq!(last["messages"].as_array().unwrap().len(), 4);
    assert!(last["messages"][3]["content"].as_str().unwrap().contains("not valid"));
}

#[test]
fn an_llm_that_answers_invalid_json_twice_gets_the_case_parked() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let server = Server::start(|_| {
        verdict_answer(r#"{"verdict":"maybe","confidence":2,"summary":"","recommended_actions":[],"mitre":[]}"#, 10, 5)
    });
    record(&store, &report("acme", "c1", 1, 80.0, &[]), &["llm"], false);
    let counts = Dispatchers::start(store.clone(), vec![llm(&server.url, 2000)], &fast_retries(), None)
        .drain(Duration::from_secs(10))
        .unwrap();
    assert_eq!(counts.get("llm", status::PARKED), 1);
    assert_eq!(server.requests().len(), 2);
    assert_eq!(store.tokens_since("acme", 0).unwrap(), 30, "the invalid answers' tokens count against the budget");
    let parked = store.outbox_rows("acme", status::PARKED).unwrap();
    assert!(parked[0].2.contains("invalid verdict twice"), "{parked:?}");
    assert!(store.verdicts("acme").unwrap().is_empty());
}

#[test]
fn a_dead_webhook_never_stalls_the_llm_sink() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let dead = Server::start(|_| Reply::Hang(Duration::from_secs(30)));
    let model = Server::start(|_| verdict_answer(GOOD_VERDICT, 10, 10));
    for i in 0..3 {
        record(&store, &report("acme", &format!("c{i}"), 1, 80.0, &[]), &["webhook", "llm"], false);
    }
    let d = Dispatchers::start(
        store.clone(),
        vec![webhook(&dead.url, 20_000), llm(&model.url, 2000)],
        &fast_retries(),
        None,
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.verdicts("acme").unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "the LLM sink waited for the dead webhook");
        std::thread::sleep(Duration::from_millis(20));
    }
    let store = d.stop_now();
    let counts = store.outbox_counts().unwrap();
    assert_eq!(counts.get("llm", status::DELIVERED), 3);
    assert_eq!(counts.get("webhook", status::DELIVERED), 0);
    assert_eq!(counts.get("webhook", status::PENDING), 3, "the webhook's cases wait in the outbox: {counts:?}");
}

#[test]
fn over_budget_the_highest_scores_go_first_the_rest_wait_with_a_reason_and_the_floor_always_goes() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let server = Server::start(|_| Reply::json(200, "{}"));
    let mut config = fast_retries();
    config.budget.cases_per_hour = Some(2);
    // Another tenant has its own budget.
    config.budget.tenants.insert("globex".into(), BudgetLimits { cases_per_hour: Some(10), ..BudgetLimits::default() });
    for (id, score) in [("low", 66.0), ("high", 95.0), ("mid", 80.0), ("mid2", 79.0)] {
        record(&store, &report("acme", id, 1, score, &[]), &["webhook"], false);
    }
    let intel = report("acme", "intel", 1, 65.0, &["threat_intel"]);
    record(&store, &intel, &["webhook"], ScoreConfig::default().over_floor(&intel.breakdown));
    for i in 0..4 {
        record(&store, &report("globex", &format!("g{i}"), 1, 70.0, &[]), &["webhook"], false);
    }
    let counts = Dispatchers::start(store.clone(), vec![webhook(&server.url, 2000)], &config, None)
        .drain(Duration::from_secs(10))
        .unwrap();
    let sent: Vec<String> = server.requests().iter().map(|r| r.headers["idempotency-key"].clone()).collect();
    let acme: Vec<&String> = sent.iter().filter(|k| !k.starts_with('g')).collect();
    // The floor case first, then the highest score; then the budget is spent.
    assert_eq!(acme, ["intel:1", "high:1"]);
    assert_eq!(sent.iter().filter(|k| k.starts_with('g')).count(), 4, "globex is not limited by acme's budget");
    let globex: Vec<String> =
        store.outbox_rows("globex", status::DELIVERED).unwrap().into_iter().map(|r| r.1).collect();
    assert_eq!(globex, ["g0:1", "g1:1", "g2:1", "g3:1"], "one tenant's outbox holds only its own cases");
    assert_eq!(counts.get("webhook", status::DEFERRED), 3);
    let deferred = store.outbox_rows("acme", status::DEFERRED).unwrap();
    let keys: Vec<&str> = deferred.iter().map(|d| d.1.as_str()).collect();
    assert_eq!(keys, ["mid:1", "mid2:1", "low:1"], "listed highest score first");
    assert!(deferred.iter().all(|d| d.2.contains("over budget: 2 of 2 cases in the last hour")), "{deferred:?}");
    // A floor case over budget is sent, and the overrun recorded.
    let late_intel = report("acme", "intel2", 1, 60.0, &["critical_asset"]);
    record(&store, &late_intel, &["webhook"], ScoreConfig::default().over_floor(&late_intel.breakdown));
    Dispatchers::start(store.clone(), vec![webhook(&server.url, 2000)], &config, None)
        .drain(Duration::from_secs(10))
        .unwrap();
    assert!(server.requests().iter().any(|r| r.headers["idempotency-key"] == "intel2:1"));
    let log = store.audit_log("acme").unwrap();
    assert!(log.iter().any(|l| l.1 == "budget_overrun" && l.2 == "intel2:1"), "{log:?}");
    assert_eq!(store.outbox_counts().unwrap().get("webhook", status::DEFERRED), 3);
}

/// `kill -9` during dispatch, against a receiver that fails at random
/// (5xx, resets, timeouts, and 500 after processing): after a restart every
/// case has arrived, and no key ever arrived with two contents.
#[test]
fn every_case_arrives_once_in_content_across_a_kill_during_dispatch() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.json");
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["generate", "--tenants", "4", "--alerts", "300000", "--seed", "11", "--output"])
        .arg(&alerts)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let received: Arc<std::sync::Mutex<BTreeMap<String, BTreeSet<String>>>> = Default::default();
    let r2 = received.clone();
    let n = Arc::new(AtomicUsize::new(0));
    // Until the kill, the receiver stops answering once 5 cases have
    // arrived, so the kill always lands in the middle of dispatch.
    let killed = Arc::new(AtomicUsize::new(0));
    let k2 = killed.clone();
    let server = Server::start(move |req: &Request| {
        let i = n.fetch_add(1, Ordering::SeqCst);
        let key = req.headers["idempotency-key"].clone();
        if k2.load(Ordering::SeqCst) == 0 && r2.lock().unwrap().len() >= 5 {
            return Reply::Hang(Duration::from_millis(400));
        }
        // A cheap deterministic mix of failures.
        match (i * 7919) % 10 {
            0 => Reply::json(503, "{}"),
            1 => Reply::Reset,
            2 => Reply::Hang(Duration::from_millis(400)),
            3 => {
                // Processed, but the answer is lost: the case comes again.
                r2.lock().unwrap().entry(key).or_default().insert(req.body.clone());
                Reply::json(500, "{}")
            }
            _ => {
                r2.lock().unwrap().entry(key).or_default().insert(req.body.clone());
                Reply::json(200, "{}")
            }
        }
    });
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "[checkpoint]\ndir = \"{}\"\n[sinks.webhook]\nurl = \"{}/cases\"\ntimeout = \"200ms\"\n\
             [sinks.retry]\ninitial = \"10ms\"\nmax = \"100ms\"\nmax_attempts = 1000\ndrain_timeout = \"120s\"\n",
            dir.path().join("state").display(),
            server.url
        ),
    )
    .unwrap();
    let run = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.current_dir(dir.path())
            .args(["run", "--format", "quiet", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&alerts)
            .arg("--dead-letters")
            .arg(dir.path().join("dead.ndjson"))
            .env("SLUICE_WEBHOOK_SECRET", "s3cret")
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    };
    // First run: killed once some cases have arrived.
    let mut child = run().spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.lock().unwrap().len() < 5 {
        assert!(Instant::now() < deadline, "no case arrived within 120 s");
        assert!(child.try_wait().unwrap().is_none(), "sluice ended before it could be killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    killed.store(1, Ordering::SeqCst);
    let before = received.lock().unwrap().len();
    // Second run: replays the file, finds its cases in the store, and
    // delivers what the first did not.
    let out = run().output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pending 0, deferred 0, parked 0"), "{stderr}");
    let store = Store::open_sqlite(&dir.path().join("state/sluice.db")).unwrap();
    let mut expected = BTreeSet::new();
    for tenant in store.tenants().unwrap() {
        for (_, key, _) in store.outbox_rows(&tenant, status::DELIVERED).unwrap() {
            expected.insert(key);
        }
        assert!(store.outbox_rows(&tenant, status::PENDING).unwrap().is_empty());
    }
    let received = received.lock().unwrap();
    assert!(expected.len() > before, "the second run delivered more ({before} before the kill)");
    let got: BTreeSet<String> = received.keys().cloned().collect();
    assert_eq!(got, expected, "every case arrived");
    for (key, bodies) in received.iter() {
        assert_eq!(bodies.len(), 1, "{key} arrived with {} contents", bodies.len());
    }
}

#[test]
fn a_confident_false_positive_verdict_becomes_a_prior_that_can_be_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let fp = r#"{"verdict":"false_positive","confidence":0.95,"summary":"Scheduled vulnerability scan.","recommended_actions":[],"mitre":[]}"#;
    let unsure = r#"{"verdict":"false_positive","confidence":0.5,"summary":"Maybe a scan.","recommended_actions":[],"mitre":[]}"#;
    let server = Server::start(move |req: &Request| {
        // The case file's tenant decides the scripted answer.
        verdict_answer(if req.body.contains("c-sure") { fp } else { unsure }, 50, 20)
    });
    record(&store, &report("acme", "c-sure", 1, 80.0, &[]), &["llm"], false);
    record(&store, &report("acme", "c-unsure", 1, 80.0, &[]), &["llm"], false);
    // Same signature, judged again: the active prior is not extended.
    record(&store, &report("acme", "c-sure-again", 1, 70.0, &[]), &["llm"], false);
    let slot: sluice_pipeline::runtime::PriorsSlot = Default::default();
    Dispatchers::start(store.clone(), vec![llm(&server.url, 2000)], &fast_retries(), Some(slot.clone()))
        .drain(Duration::from_secs(10))
        .unwrap();
    let priors = store.priors("acme").unwrap();
    assert_eq!(priors.len(), 1, "one confident verdict made a prior: {priors:?}");
    assert_eq!(store.verdicts("acme").unwrap().len(), 3);
    let p = &priors[0];
    assert_eq!(p.signature, "0011223344556677");
    assert!(p.reason.contains("false_positive") && p.reason.contains("c-sure:1"), "{}", p.reason);
    let ttl_days = (p.expires_us - p.created_us) / 86_400_000_000;
    assert_eq!(ttl_days, 30, "default TTL");
    // The running pipeline's slot got the active set.
    let active = slot.lock().unwrap().take().expect("the slot was filled");
    let descr = &active.0["acme"][&0x0011223344556677];
    assert!(descr.contains(&format!("prior #{}", p.id)), "{descr}");
    assert!(store.priors("globex").unwrap().is_empty());
    // Revoked, it no longer applies; revoking twice is refused.
    assert!(store.revoke_prior("acme", p.id, "operator:test", sluice_connectors::source::now_us()).unwrap());
    assert!(!store.revoke_prior("acme", p.id, "operator:test", sluice_connectors::source::now_us()).unwrap());
    assert!(store.active_priors(sluice_connectors::source::now_us()).unwrap().0.is_empty());
    let actions: Vec<String> = store.audit_log("acme").unwrap().into_iter().map(|l| l.1).collect();
    assert!(
        actions.contains(&"prior_created".to_string()) && actions.contains(&"prior_revoked".to_string()),
        "{actions:?}"
    );
}

/// The operator's view from the command line: outbox, a cluster's history,
/// a verdict from an external platform, its prior, and revoking it.
#[test]
fn the_cli_shows_the_outbox_and_history_records_external_verdicts_and_revokes_priors() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.json");
    let sluice = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.env("SLUICE_LOG", "warn").env("SLUICE_WEBHOOK_SECRET", "s").current_dir(dir.path());
        c
    };
    let ok = |c: &mut Command| {
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(sluice().args(["generate", "--tenants", "2", "--alerts", "200000", "--seed", "3", "--output"]).arg(&alerts));
    let server = Server::start(|_| Reply::json(200, "{}"));
    std::fs::write(dir.path().join("s.toml"), format!("[sinks.webhook]\nurl = \"{}\"\n", server.url)).unwrap();
    ok(sluice().args(["run", "--format", "quiet", "--config", "s.toml", "--input"]).arg(&alerts));
    let first: serde_json::Value = serde_json::from_str(&server.requests()[0].body).unwrap();
    let (tenant, cluster, key) = (
        first["tenant"].as_str().unwrap().to_string(),
        first["cluster_id"].as_str().unwrap().to_string(),
        first["idempotency_key"].as_str().unwrap().to_string(),
    );
    let list = ok(sluice().args(["outbox", "list", "--config", "s.toml", "--status", "delivered"]));
    assert!(list.contains(&format!("delivered [{tenant}] webhook {key}")), "{list}");
    let history = ok(sluice().args(["history", "--config", "s.toml", "--tenant", &tenant, &cluster]));
    assert!(
        history.contains("escalate") && history.contains(&format!("hand-off {key} → webhook  delivered")),
        "{history}"
    );
    // Another tenant does not see the cluster.
    let out = sluice().args(["history", "--config", "s.toml", "--tenant", "nobody", &cluster]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("has no cluster"));
    let v = ok(sluice().args(["verdict", "--config", "s.toml", "--tenant", &tenant, "--key", &key]).args([
        "--verdict",
        "false_positive",
        "--confidence",
        "0.9",
        "--summary",
        "Authorised pentest",
        "--by",
        "soctalk",
    ]));
    assert!(v.contains("made a prior"), "{v}");
    let history = ok(sluice().args(["history", "--config", "s.toml", "--tenant", &tenant, &cluster]));
    assert!(history.contains("false_positive (confidence 0.9)") && history.contains("external:soctalk"), "{history}");
    let priors = ok(sluice().args(["priors", "list", "--config", "s.toml"]));
    assert!(priors.contains("prior #1") && priors.contains("active until") && priors.contains(&key), "{priors}");
    ok(sluice().args(["priors", "revoke", "--config", "s.toml", "--tenant", &tenant, "1"]));
    let priors = ok(sluice().args(["priors", "list", "--config", "s.toml"]));
    assert!(priors.contains("revoked by operator:"), "{priors}");
    // A bad verdict is refused, naming the flag.
    let out = sluice()
        .args(["verdict", "--config", "s.toml", "--tenant", &tenant, "--key", &key, "--verdict", "benign"])
        .args(["--confidence", "0.9", "--summary", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--verdict \"benign\""));
}

#[test]
fn open_investigations_are_capped_per_tenant_until_a_verdict_closes_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let server = Server::start(|_| Reply::json(200, "{}"));
    let mut config = fast_retries();
    config.budget.concurrent_investigations = Some(1);
    record(&store, &report("acme", "first", 1, 90.0, &[]), &["webhook"], false);
    record(&store, &report("acme", "second", 1, 80.0, &[]), &["webhook"], false);
    let run = || {
        Dispatchers::start(store.clone(), vec![webhook(&server.url, 2000)], &config, None)
            .drain(Duration::from_secs(10))
            .unwrap()
    };
    let counts = run();
    assert_eq!((counts.get("webhook", status::DELIVERED), counts.get("webhook", status::DEFERRED)), (1, 1));
    let deferred = store.outbox_rows("acme", status::DEFERRED).unwrap();
    assert!(deferred[0].2.contains("1 of 1 investigations open"), "{deferred:?}");
    // The platform answers on the first case: the second goes out.
    let verdict = sluice_pipeline::store::VerdictRecord {
        verdict: "true_positive".into(),
        confidence: 0.9,
        body: "{}".into(),
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let policy = config.priors.policy();
    assert!(!store.external_verdict("acme", "first:1", "external:soctalk", &verdict, &policy, 1).unwrap());
    assert!(
        store
            .external_verdict("acme", "nope:1", "external:soctalk", &verdict, &policy, 1)
            .unwrap_err()
            .to_string()
            .contains("no case file nope:1")
    );
    assert_eq!(run().get("webhook", status::DELIVERED), 2);
}

#[test]
fn priors_made_or_revoked_elsewhere_reach_a_running_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    record(&store, &report("acme", "c1", 1, 80.0, &[]), &["webhook"], false);
    let slot: sluice_pipeline::runtime::PriorsSlot = Default::default();
    let d = Dispatchers::start(store.clone(), vec![], &fast_retries(), Some(slot.clone()));
    let wait_for = |what: &str, f: &dyn Fn(&sluice_operators::correlate::Priors) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(p) = slot.lock().unwrap().take()
                && f(&p)
            {
                return;
            }
            assert!(Instant::now() < deadline, "{what} did not reach the slot");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // A verdict from another process (as `sluice verdict` records it).
    let verdict = sluice_pipeline::store::VerdictRecord {
        verdict: "false_positive".into(),
        confidence: 0.99,
        body: "{}".into(),
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let policy = fast_retries().priors.policy();
    assert!(
        store
            .external_verdict(
                "acme",
                "c1:1",
                "external:soctalk",
                &verdict,
                &policy,
                sluice_connectors::source::now_us()
            )
            .unwrap()
    );
    wait_for("the new prior", &|p| p.0.get("acme").is_some_and(|t| t.contains_key(&0x0011223344556677)));
    let id = store.priors("acme").unwrap()[0].id;
    store.revoke_prior("acme", id, "operator:test", sluice_connectors::source::now_us()).unwrap();
    wait_for("the revocation", &|p| p.0.is_empty());
    d.stop_now();
}

#[test]
fn claimed_cases_are_leased_so_a_second_dispatcher_takes_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    for i in 0..6 {
        record(&store, &report("acme", &format!("c{i}"), 1, 70.0 + i as f64, &[]), &["webhook"], false);
    }
    let now = sluice_connectors::source::now_us();
    let keys =
        |cases: &[sluice_pipeline::store::Pending]| cases.iter().map(|c| c.idempotency_key.clone()).collect::<Vec<_>>();
    let first = store.due("acme", "webhook", now, 4, true, 60_000_000).unwrap();
    assert_eq!(keys(&first), ["c5:1", "c4:1", "c3:1", "c2:1"]);
    let second = store.due("acme", "webhook", now, 4, true, 60_000_000).unwrap();
    assert_eq!(keys(&second), ["c1:1", "c0:1"], "the leased cases are not handed out twice");
    // A lease that ran out (a crashed dispatcher) makes the case due again.
    assert!(store.due("acme", "webhook", now + 59_000_000, 4, true, 1).unwrap().is_empty());
    assert_eq!(store.due("acme", "webhook", now + 61_000_000, 4, true, 1).unwrap().len(), 4);
    assert_eq!(store.pending_count("acme", "webhook").unwrap(), 6, "leased cases are still pending");
}

/// Secrets come from the environment and go nowhere else: not into logs
/// (at debug level, with every sink failing), not into the outbox.
#[test]
fn secrets_never_reach_the_logs_or_the_outbox() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.json");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let secrets = ["whsec-7f3a9c", "sk-test-0123456789", "tok-PATH-5e1d"];
    let sluice = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.env("SLUICE_LOG", "debug")
            .env("SLUICE_WEBHOOK_SECRET", secrets[0])
            .env("SLUICE_LLM_API_KEY", secrets[1])
            .current_dir(dir.path());
        c
    };
    let out = sluice()
        .args(["generate", "--tenants", "2", "--alerts", "200000", "--seed", "3", "--output"])
        .arg(&alerts)
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(
        dir.path().join("s.toml"),
        format!(
            "[sinks.webhook]\nurl = \"http://127.0.0.1:{closed}/hooks/{}\"\n[sinks.llm]\nbase_url = \"http://127.0.0.1:{closed}/v1\"\n\
             model = \"m\"\n[sinks.retry]\ninitial = \"10ms\"\nmax = \"50ms\"\nmax_attempts = 3\ndrain_timeout = \"3s\"\n",
            secrets[2]
        ),
    )
    .unwrap();
    let out =
        sluice().args(["run", "--format", "quiet", "--config", "s.toml", "--input"]).arg(&alerts).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("case parked"), "the sinks failed and said so:\n{log}");
    assert!(log.lines().any(|l| l.starts_with('{')), "JSON log lines when not on a terminal");
    let parked = sluice().args(["outbox", "list", "--config", "s.toml", "--status", "parked"]).output().unwrap();
    let parked = String::from_utf8_lossy(&parked.stdout);
    assert!(parked.contains("gave up after 3 attempts"), "{parked}");
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} reached the log");
        assert!(!parked.contains(secret), "{secret} reached the outbox");
    }
}

/// On SQLite (no row-level security) every read of the store is still one
/// tenant's: two tenants with the same cluster id and key see only their own.
#[test]
fn on_sqlite_every_store_read_is_one_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite(dir.path());
    let policy = fast_retries().priors.policy();
    for tenant in ["acme", "globex"] {
        // The same cluster id and key in both tenants.
        record(&store, &report(tenant, "shared", 1, 80.0, &[]), &["webhook"], false);
        let verdict = sluice_pipeline::store::VerdictRecord {
            verdict: if tenant == "acme" { "false_positive" } else { "true_positive" }.into(),
            confidence: 0.95,
            body: "{}".into(),
            prompt_tokens: 0,
            completion_tokens: 0,
        };
        store.external_verdict(tenant, "shared:1", "external:t", &verdict, &policy, 1).unwrap();
        store.record_usage(tenant, "llm", if tenant == "acme" { 100 } else { 7 }, 1).unwrap();
    }
    let verdicts = |t: &str| store.verdicts(t).unwrap().into_iter().map(|v| v.1).collect::<Vec<_>>();
    assert_eq!(verdicts("acme"), ["false_positive"]);
    assert_eq!(verdicts("globex"), ["true_positive"]);
    assert_eq!(store.priors("acme").unwrap().len(), 1);
    assert!(store.priors("globex").unwrap().is_empty());
    assert_eq!(store.active_priors(2).unwrap().0.keys().collect::<Vec<_>>(), ["acme"]);
    assert_eq!((store.tokens_since("acme", 0).unwrap(), store.tokens_since("globex", 0).unwrap()), (100, 7));
    for (tenant, other) in [("acme", "globex"), ("globex", "acme")] {
        let history = store.history(tenant, "shared").unwrap();
        assert_eq!(history.versions.len(), 1);
        assert_eq!(history.handoffs.len(), 1);
        assert_eq!(history.verdicts.len(), 1);
        assert!(history.audit.iter().all(|a| !a.join(" ").contains(other)), "{history:?}");
        assert_eq!(store.outbox_rows(tenant, status::PENDING).unwrap().len(), 1);
        assert_eq!(store.pending_count(tenant, "webhook").unwrap(), 1);
        assert_eq!(store.due(tenant, "webhook", sluice_connectors::source::now_us(), 10, true, 1).unwrap().len(), 1);
        assert!(store.audit_log(tenant).unwrap().iter().all(|l| !l.3.contains(other)));
    }
    // Revoking acme's prior from globex finds nothing.
    let id = store.priors("acme").unwrap()[0].id;
    assert!(!store.revoke_prior("globex", id, "operator:t", 3).unwrap());
    assert_eq!(store.active_priors(4).unwrap().0.len(), 1);
}
