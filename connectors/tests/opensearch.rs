//! The OpenSearch source against a mock of the OpenSearch 2.x REST API
//! (`mock_opensearch`): request shapes, paging, retries, PIT expiry,
//! restarts from a checkpoint position, follow mode, filters and auth.

mod mock_opensearch;

use std::time::{Duration, Instant};

use mock_opensearch::{MockOpenSearch, alert};
use serde_json::{Value, json};
use sluice_connectors::opensearch::{Mode, OpenSearchConfig, OpenSearchSource, TenantSource, base64};
use sluice_connectors::source::{Source, StopFlag};
use sluice_operators::decode::ChunkTenant;
use sluice_operators::time::Duration as D;

const T0: i64 = 1_715_000_000_000; // 2024-05-06T12:53:20Z
const INDEX: &str = "wazuh-alerts-4.x-2024.05.06";

fn config(url: &str) -> OpenSearchConfig {
    OpenSearchConfig {
        url: url.into(),
        mode: Mode::Backfill,
        page_size: 10,
        max_retries: 3,
        rate_limit: 1000.0,
        ..OpenSearchConfig::default()
    }
}

fn fill(mock: &MockOpenSearch, n: i64) {
    for i in 0..n {
        // Two alerts share each timestamp: the id breaks the tie.
        mock.index(INDEX, alert(T0 + (i / 2) * 1000, &format!("{}.{:04}", T0 / 1000 + i / 2, i), "acme", "001", 5));
    }
}

/// The ids of the alerts in a chunk, in order.
fn ids(chunk: &sluice_operators::decode::RawChunk) -> Vec<String> {
    chunk
        .lines
        .iter()
        .map(|&(s, e)| serde_json::from_slice::<Value>(&chunk.data[s..e]).unwrap()["id"].as_str().unwrap().to_string())
        .collect()
}

/// Reads until the source ends (backfill) or `until` ids arrived.
fn drain(source: &mut OpenSearchSource, until: Option<usize>, limit: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < limit {
        match source.next_chunk().unwrap() {
            None => break,
            Some(c) => out.extend(ids(&c)),
        }
        if until.is_some_and(|n| out.len() >= n) {
            break;
        }
    }
    out
}

fn all_ids(mock: &MockOpenSearch) -> Vec<String> {
    let mut v: Vec<(String, String)> = mock
        .state
        .lock()
        .unwrap()
        .docs
        .iter()
        .map(|d| (d.source["timestamp"].as_str().unwrap().to_string(), d.id.clone()))
        .collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

#[test]
fn backfill_pages_over_a_pit_with_documented_request_shapes() {
    let mock = MockOpenSearch::start();
    fill(&mock, 25);
    let mut cfg = config(&mock.url);
    cfg.index = "wazuh-alerts-4.x-*".into();
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    let expected = all_ids(&mock);
    let first = source.next_chunk().unwrap().unwrap();
    assert_eq!(first.tenant, ChunkTenant::FromRecord);
    let mut got = ids(&first);
    // Indexed while the scan runs, in the middle of the range: the PIT keeps
    // the scan stable (no shifted pages, no duplicate), the doc is not part of it.
    mock.index(INDEX, alert(T0 + 3000, "late-doc", "acme", "001", 5));
    got.extend(drain(&mut source, None, Duration::from_secs(10)));
    assert_eq!(got, expected, "every alert once, in (timestamp, id) order");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());

    let reqs = mock.requests();
    let pit = &reqs[0];
    assert_eq!((pit.method.as_str(), pit.path.as_str()), ("POST", "/wazuh-alerts-4.x-*/_search/point_in_time"));
    assert_eq!(pit.query["keep_alive"], "60000ms");
    let searches = mock.searches();
    assert_eq!(searches.len(), 3, "25 alerts in pages of 10");
    let mut previous_last: Option<Value> = None;
    for (n, s) in searches.iter().enumerate() {
        assert_eq!(s.method, "POST");
        let b = &s.body;
        assert_eq!(b["size"], 10);
        assert_eq!(b["pit"]["keep_alive"], "60000ms");
        assert!(b["pit"]["id"].as_str().unwrap().starts_with("o463"));
        assert_eq!(b["sort"], json!([{"timestamp": {"order": "asc"}}, {"id": {"order": "asc"}}]));
        assert_eq!(b.get("search_after").cloned(), previous_last, "search_after = sort of the last hit");
        let last = &expected[(n * 10 + 9).min(24)];
        let ts = T0 + (last.rsplit('.').next().unwrap().parse::<i64>().unwrap() / 2) * 1000;
        previous_last = Some(json!([ts, last]));
    }
    let del = reqs.iter().find(|r| r.method == "DELETE").expect("the PIT is deleted");
    assert_eq!(del.path, "/_search/point_in_time");
    assert_eq!(del.body["pit_id"].as_array().unwrap().len(), 1);
    assert_eq!(mock.open_pits(), 0);
    assert!(reqs.iter().all(|r| !r.headers.contains_key("authorization")));
    // The lag: alerts newer than the cursor, counted without a PIT.
    let count = reqs.iter().find(|r| r.path.ends_with("/_search") && r.path != "/_search").expect("a lag count");
    assert_eq!(count.body["size"], 0);
    assert_eq!(count.body["track_total_hits"], true);
    assert_eq!(count.body["aggs"], json!({"newest": {"max": {"field": "timestamp"}}}));
    assert_eq!(source.lag(), vec![("wazuh-alerts-4.x-*".to_string(), 0)]);
    assert_eq!(source.lag_seconds(), vec![("wazuh-alerts-4.x-*".to_string(), 0.0)], "caught up");
}

#[test]
fn server_side_filters_are_range_and_term_clauses() {
    let mock = MockOpenSearch::start();
    mock.index(INDEX, alert(T0, "a-low", "acme", "001", 3));
    mock.index(INDEX, alert(T0 + 1, "a-manager", "acme", "000", 12));
    mock.index(INDEX, alert(T0 + 2, "a-keep", "acme", "002", 10));
    mock.index(INDEX, alert(T0 + 3, "a-other-rule", "acme", "002", 10));
    let last = mock.state.lock().unwrap().docs.len() - 1;
    mock.state.lock().unwrap().docs[last].source["rule"]["id"] = json!("1002");
    mock.index(INDEX, alert(T0 + 10_000, "a-after-to", "acme", "002", 10));
    let mut cfg = config(&mock.url);
    cfg.min_level = 7;
    cfg.exclude_agents = vec!["000".into()];
    cfg.query = vec![r#"{"term":{"rule.id":"5716"}}"#.into()];
    cfg.from = Some("2024-05-06T12:53:20Z".into());
    cfg.to = Some((T0 + 5000).to_string());
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    assert_eq!(drain(&mut source, None, Duration::from_secs(5)), vec!["a-keep"]);
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    let q = &mock.searches()[0].body["query"]["bool"];
    assert!(q["filter"].as_array().unwrap().contains(&json!({"range": {"rule.level": {"gte": 7}}})));
    assert!(q["filter"].as_array().unwrap().contains(&json!({"term": {"rule.id": "5716"}})));
    assert!(
        q["filter"]
            .as_array()
            .unwrap()
            .contains(&json!({"range": {"timestamp": {"gte": T0, "lte": T0 + 5000, "format": "epoch_millis"}}}))
    );
    assert_eq!(q["must_not"], json!([{"term": {"agent.id": "000"}}]));
    // Lag: what the indexer holds past the newest alert read (same filters).
    assert_eq!(source.lag(), vec![("wazuh-alerts-4.x-*".to_string(), 1)]);
    // … and in time: the newest indexed (a-after-to) against the newest read (a-keep).
    let secs = source.lag_seconds()[0].1;
    assert!((secs - 9.998).abs() < 1e-9, "{secs}");
}

#[test]
fn tls_settings_are_checked_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").unwrap();
    let mut cfg = config("https://indexer.invalid:9200");
    cfg.ca_file = Some(ca.to_string_lossy().into_owned());
    let err = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap_err().to_string();
    assert!(err.contains("opensearch.ca_file") && err.contains("no PEM certificate"), "{err}");
    cfg.ca_file = Some(dir.path().join("missing.pem").to_string_lossy().into_owned());
    let err = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap_err().to_string();
    assert!(err.contains("missing.pem"), "{err}");
    cfg.ca_file = None;
    cfg.insecure_skip_verify = true;
    assert!(OpenSearchSource::new(&cfg, StopFlag::new()).is_ok());
}

#[test]
fn retries_429_and_503_with_backoff() {
    let mock = MockOpenSearch::start();
    fill(&mock, 5);
    mock.fail_next(&[429, 503]);
    let mut source = OpenSearchSource::new(&config(&mock.url), StopFlag::new()).unwrap();
    let start = Instant::now();
    assert_eq!(drain(&mut source, None, Duration::from_secs(10)), all_ids(&mock));
    // Backoff 100 ms, then 200 ms.
    assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
    let searches = mock.searches();
    assert_eq!(searches.len(), 3, "two refused, one answered");
    assert_eq!(searches[0].body, searches[2].body, "the same request again");

    // Beyond max_retries, a backfill fails and says why.
    let mock = MockOpenSearch::start();
    fill(&mock, 5);
    mock.fail_next(&[429, 429, 429, 429, 429]);
    let mut cfg = config(&mock.url);
    cfg.max_retries = 2;
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    let err = source.next_chunk().unwrap_err().to_string();
    assert!(err.contains("429") && err.contains("after 2 retries"), "{err}");
}

#[test]
fn requests_are_spaced_by_the_rate_limit() {
    let mock = MockOpenSearch::start();
    fill(&mock, 40);
    let mut cfg = config(&mock.url);
    cfg.rate_limit = 10.0;
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    assert_eq!(drain(&mut source, None, Duration::from_secs(20)).len(), 40);
    let reqs = mock.requests();
    assert!(reqs.len() >= 6, "PIT, 5 pages, lag, delete: {}", reqs.len());
    // The mock stamps a request when it has read it, so one request read
    // late (a loaded machine) makes one gap look short and the next long:
    // judge the typical gap and the whole span, not each gap.
    let mut gaps: Vec<Duration> = reqs.windows(2).map(|p| p[1].at - p[0].at).collect();
    gaps.sort();
    let median = gaps[gaps.len() / 2];
    assert!(median >= Duration::from_millis(95), "median gap {median:?} at 10/s: {gaps:?}");
    let span = reqs.last().unwrap().at - reqs[0].at;
    let want = Duration::from_millis(95 * gaps.len() as u64 - 60);
    assert!(span >= want, "{} requests in {span:?} at 10/s: {gaps:?}", reqs.len());
}

#[test]
fn an_expired_pit_is_reopened_and_the_scan_goes_on_from_the_same_cursor() {
    let mock = MockOpenSearch::start();
    fill(&mock, 30);
    let mut source = OpenSearchSource::new(&config(&mock.url), StopFlag::new()).unwrap();
    let mut got = ids(&source.next_chunk().unwrap().unwrap());
    mock.expire_pits();
    got.extend(drain(&mut source, None, Duration::from_secs(10)));
    assert_eq!(got, all_ids(&mock), "no gap, no duplicate");
    let pits = mock.requests().iter().filter(|r| r.path.ends_with("point_in_time") && r.method == "POST").count();
    assert_eq!(pits, 2, "a second PIT after the expiry");
    let s = mock.searches();
    // The refused request and its retry on the new PIT carry the same cursor.
    assert_eq!(s[1].body["search_after"], s[2].body["search_after"]);
    assert_ne!(s[1].body["pit"]["id"], s[2].body["pit"]["id"]);
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
}

#[test]
fn a_restart_from_a_checkpoint_position_continues_exactly() {
    let mock = MockOpenSearch::start();
    fill(&mock, 35);
    let mut source = OpenSearchSource::new(&config(&mock.url), StopFlag::new()).unwrap();
    let mut got = ids(&source.next_chunk().unwrap().unwrap());
    got.extend(ids(&source.next_chunk().unwrap().unwrap()));
    let position = source.position().unwrap();
    let p: Value = serde_json::from_str(&position).unwrap();
    assert_eq!(p["opensearch"][INDEX.replace("2024.05.06", "*")]["after"][1], json!(got[19]), "{position}");
    // Read on past the checkpoint, then "crash": those are read again.
    let _lost = source.next_chunk().unwrap();
    drop(source);
    let mut again = OpenSearchSource::new(&config(&mock.url), StopFlag::new()).unwrap();
    again.restore(&position).unwrap();
    got.extend(drain(&mut again, None, Duration::from_secs(10)));
    assert_eq!(got, all_ids(&mock), "no gap, no duplicate");
    let last_open = mock.searches().into_iter().rev().find(|r| r.body.get("search_after").is_some()).unwrap();
    assert!(last_open.body["search_after"][1].as_str().unwrap() >= got[19].as_str());
}

#[test]
fn follow_picks_up_late_indexed_alerts_within_the_overlap_once() {
    let mock = MockOpenSearch::start();
    fill(&mock, 12);
    let mut cfg = config(&mock.url);
    cfg.mode = Mode::Follow;
    cfg.from = Some((T0 - 3_600_000).to_string());
    cfg.poll_interval = serde_json::from_value(json!("50ms")).unwrap();
    cfg.overlap = D::from_secs(60);
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    let mut got = drain(&mut source, Some(12), Duration::from_secs(10));
    assert_eq!(got, all_ids(&mock));
    // Nothing new: polls answer the overlap again, all deduplicated.
    assert!(drain(&mut source, None, Duration::from_millis(400)).is_empty());
    // Indexed late: one older than the newest read (inside the overlap), one newer.
    mock.index(INDEX, alert(T0 + 2500, "late-in-overlap", "acme", "001", 5));
    mock.index(INDEX, alert(T0 + 60_000, "new", "acme", "001", 5));
    got = drain(&mut source, Some(2), Duration::from_secs(10));
    got.sort();
    assert_eq!(got, vec!["late-in-overlap", "new"]);
    // Older than the newest read minus the overlap: outside the contract, not read.
    mock.index(INDEX, alert(T0 - 1000, "too-late", "acme", "001", 5));
    assert!(drain(&mut source, None, Duration::from_millis(400)).is_empty(), "no duplicates on later polls");
    // Each follow page: sort values only, then the documents of new ids.
    let follow = mock.searches();
    assert!(follow.iter().any(|r| r.body["_source"] == false));
    let fetches: Vec<_> = follow.iter().filter(|r| r.body.get("_source").is_none()).collect();
    assert!(!fetches.is_empty());
    for f in fetches {
        let filter = f.body["query"]["bool"]["filter"].as_array().unwrap();
        let ids = filter.iter().find_map(|c| c.pointer("/terms/id")).expect("fetched by id").as_array().unwrap();
        assert_eq!(f.body["size"], ids.len());
        assert!(ids.iter().all(|id| id != "too-late"));
    }
    let last = mock.searches().last().unwrap().body.clone();
    let range = &last["query"]["bool"]["filter"][0]["range"]["timestamp"];
    assert_eq!(range["gte"], json!(T0 + 60_000 - 60_000), "cursor minus the overlap");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());

    // The overlap's ids are part of the position: a restart deduplicates too.
    let position = source.position().unwrap();
    drop(source);
    let mut again = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    again.restore(&position).unwrap();
    assert!(drain(&mut again, None, Duration::from_millis(400)).is_empty());
    mock.index(INDEX, alert(T0 + 61_000, "after-restart", "acme", "001", 5));
    assert_eq!(drain(&mut again, Some(1), Duration::from_secs(10)), vec!["after-restart"]);
}

#[test]
fn credentials_come_from_the_environment_and_never_show() {
    // The environment, as a map (setting the process's own is unsafe).
    let env = |name: &str| match name {
        "SLUICE_TEST_OS_USER" => Some("sluice".to_string()),
        "SLUICE_TEST_OS_PASS" => Some("s3cr3t-pa55".to_string()),
        "SLUICE_TEST_OS_KEY" => Some("a2V5aWQ6c2VjcmV0LWFwaS1rZXk=".to_string()),
        _ => None,
    };
    let mock = MockOpenSearch::start();
    fill(&mock, 3);
    let mut cfg = config(&mock.url);
    cfg.username_env = "SLUICE_TEST_OS_USER".into();
    cfg.password_env = "SLUICE_TEST_OS_PASS".into();
    let mut source = OpenSearchSource::with_env(&cfg, StopFlag::new(), &env).unwrap();
    assert_eq!(drain(&mut source, None, Duration::from_secs(5)).len(), 3);
    let expected = format!("Basic {}", base64(b"sluice:s3cr3t-pa55"));
    assert!(mock.requests().iter().all(|r| r.headers.get("authorization") == Some(&expected)));
    assert!(!format!("{source:?} {cfg:?}").contains("s3cr3t"));

    // Per tenant: its own index pattern and an API key, a fixed tenant.
    let mock = MockOpenSearch::start();
    mock.index("wazuh-alerts-4.x-globex-2024.05.06", alert(T0, "g1", "whatever", "001", 5));
    mock.index(INDEX, alert(T0, "a1", "acme", "001", 5));
    let mut cfg = config(&mock.url);
    cfg.sources = vec![TenantSource {
        tenant: "globex".into(),
        index: "wazuh-alerts-4.x-globex-*".into(),
        api_key_env: "SLUICE_TEST_OS_KEY".into(),
        ..TenantSource::default()
    }];
    let mut source = OpenSearchSource::with_env(&cfg, StopFlag::new(), &env).unwrap();
    let chunk = source.next_chunk().unwrap().unwrap();
    assert_eq!(ids(&chunk), vec!["g1"]);
    assert_eq!(chunk.tenant, ChunkTenant::Fixed("globex".into()));
    assert!(mock.requests().iter().all(|r| r.headers["authorization"] == "ApiKey a2V5aWQ6c2VjcmV0LWFwaS1rZXk="));

    // A variable that is not set is named.
    cfg.sources[0].api_key_env = "SLUICE_TEST_OS_UNSET".into();
    let err = OpenSearchSource::with_env(&cfg, StopFlag::new(), &env).unwrap_err().to_string();
    assert!(err.contains("SLUICE_TEST_OS_UNSET"), "{err}");
}

#[test]
fn backfill_then_follow_reads_the_range_once_then_new_alerts() {
    let mock = MockOpenSearch::start();
    fill(&mock, 15);
    let mut cfg = config(&mock.url);
    cfg.from = Some(T0.to_string());
    cfg.then_follow = true;
    cfg.poll_interval = serde_json::from_value(json!("50ms")).unwrap();
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    assert_eq!(drain(&mut source, Some(15), Duration::from_secs(10)), all_ids(&mock));
    // Following now: the backfill's last alerts are inside the overlap, and not read twice.
    assert!(drain(&mut source, None, Duration::from_millis(400)).is_empty());
    assert!(mock.searches().iter().any(|r| r.body["_source"] == false), "following");
    mock.index(INDEX, alert(T0 + 30_000, "next", "acme", "001", 5));
    assert_eq!(drain(&mut source, Some(1), Duration::from_secs(10)), vec!["next"]);
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
}

/// A TLS server from the `openssl` tool, with a certificate signed by a
/// fresh CA; `None` (the test says why) without the tool.
fn openssl_server(dir: &std::path::Path) -> Option<(std::process::Child, String, String)> {
    let run = |args: &[&str]| {
        std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !run(&["version"]) {
        eprintln!("SKIPPED: no openssl tool to serve TLS");
        return None;
    }
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    assert!(run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Sluice test CA"
    ]));
    assert!(run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "srv.key",
        "-out",
        "srv.csr",
        "-subj",
        "/CN=127.0.0.1"
    ]));
    assert!(run(&[
        "x509",
        "-req",
        "-in",
        "srv.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "srv.pem",
        "-days",
        "2",
        "-extfile",
        "ext"
    ]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = std::process::Command::new("openssl")
        .args(["s_server", "-accept", &port.to_string(), "-cert", "srv.pem", "-key", "srv.key", "-www", "-quiet"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((child, format!("https://127.0.0.1:{port}"), dir.join("ca.pem").to_string_lossy().into_owned()))
}

#[test]
fn tls_verifies_against_the_ca_file_and_only_skips_when_told() {
    let dir = tempfile::tempdir().unwrap();
    let Some((server, url, ca)) = openssl_server(dir.path()) else { return };
    let server = KillOnDrop(server);
    // The tool's test server does not speak OpenSearch: what matters is
    // whether the handshake got through (then the request fails otherwise).
    let error = |ca_file: Option<String>, insecure: bool| {
        let mut cfg = config(&url);
        cfg.max_retries = 0;
        cfg.timeout = D::from_secs(2);
        cfg.ca_file = ca_file;
        cfg.insecure_skip_verify = insecure;
        let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
        source.next_chunk().unwrap_err().to_string().to_lowercase()
    };
    let untrusted = error(None, false);
    let trusted = error(Some(ca), false);
    let skipped = error(None, true);
    drop(server);
    eprintln!("untrusted: {untrusted}\ntrusted: {trusted}\nskipped: {skipped}");
    assert!(untrusted.contains("certificate") || untrusted.contains("issuer"), "{untrusted}");
    for e in [&trusted, &skipped] {
        assert!(!e.contains("certificate") && !e.contains("issuer"), "the handshake should pass: {e}");
        assert!(e.contains("timeout"), "past the handshake, the test server never answers a POST: {e}");
    }
}

/// Stops the test server however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn one_scan_per_tenant_each_its_own_input_and_position() {
    use sluice_connectors::source::InputChange;
    let mock = MockOpenSearch::start();
    for i in 0..25 {
        mock.index("acme-alerts-2024.05.06", alert(T0 + i * 1000, &format!("acme-{i:03}"), "x", "001", 5));
    }
    for i in 0..7 {
        mock.index("globex-alerts-2024.05.06", alert(T0 + i * 1000, &format!("globex-{i:03}"), "x", "001", 5));
    }
    let mut cfg = config(&mock.url);
    cfg.sources = ["acme", "globex"]
        .map(|t| TenantSource { tenant: t.into(), index: format!("{t}-alerts-*"), ..TenantSource::default() })
        .to_vec();
    let mut source = OpenSearchSource::new(&cfg, StopFlag::new()).unwrap();
    assert_eq!(source.input_changes(), vec![InputChange::Opened(0), InputChange::Opened(1)]);
    let mut by_tenant: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    while let Some(chunk) = source.next_chunk().unwrap() {
        let ChunkTenant::Fixed(t) = &chunk.tenant else { panic!("a fixed tenant") };
        assert_eq!(chunk.input, if &**t == "acme" { 0 } else { 1 });
        by_tenant.entry(t.to_string()).or_default().extend(ids(&chunk));
    }
    assert_eq!(by_tenant["acme"].len(), 25);
    assert_eq!(by_tenant["globex"].len(), 7);
    assert!(by_tenant.values().flatten().all(|id| id.starts_with("acme") || id.starts_with("globex")));
    assert!(by_tenant["acme"].iter().all(|id| id.starts_with("acme")));
    let p: Value = serde_json::from_str(&source.position().unwrap()).unwrap();
    assert_eq!(p["opensearch"]["acme"]["count"], 25);
    assert_eq!(p["opensearch"]["globex"]["phase"], "done");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
}
