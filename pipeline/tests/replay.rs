//! `sluice replay`: a file replay equals `sluice run` over the same file, and
//! a replay from OpenSearch (the mock of the documented 2.x API) equals the
//! file replay of the same alerts; credentials from the environment never
//! reach the logs.

mod common;
#[path = "../../connectors/tests/mock_opensearch/mod.rs"]
mod mock_opensearch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::cli::sluice;
use mock_opensearch::MockOpenSearch;
use serde_json::Value;

/// Case files by idempotency key (closes by cluster), without wall-clock fields.
/// Asserts the command succeeded; its stderr (where replay reports).
fn ok(out: &Output) -> String {
    common::cli::ok(out);
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn cases(path: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        if let Some(t) = v.get_mut("trigger").and_then(Value::as_object_mut) {
            t.remove("ingest_time_us");
        }
        let key = if v["kind"] == "close" {
            format!("close:{}", v["cluster_id"].as_str().unwrap())
        } else {
            v["idempotency_key"].as_str().unwrap().to_string()
        };
        assert!(out.insert(key, v).is_none(), "a case file twice");
    }
    out
}

/// A generated multi-tenant stream, ordered as the indexer sorts it
/// (`timestamp`, then `id`).
fn alerts(dir: &Path) -> (PathBuf, Vec<Value>) {
    let raw = dir.join("raw.json");
    ok(&sluice()
        .args([
            "generate",
            "--tenants",
            "3",
            "--alerts",
            "20000",
            "--seed",
            "11",
            "--rate",
            "4",
            "-o",
            raw.to_str().unwrap(),
        ])
        .output()
        .unwrap());
    let mut docs: Vec<Value> =
        std::fs::read_to_string(&raw).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let key = |v: &Value| {
        let t = sluice_operators::time::parse_timestamp(v["timestamp"].as_str().unwrap()).unwrap();
        (t, v["id"].as_str().unwrap().to_string())
    };
    docs.sort_by_key(key);
    let path = dir.join("alerts.json");
    let text: String = docs.iter().map(|d| format!("{d}\n")).collect();
    std::fs::write(&path, text).unwrap();
    (path, docs)
}

#[test]
fn replay_of_a_file_equals_run_and_replay_from_opensearch_equals_both() {
    let dir = tempfile::tempdir().unwrap();
    let (input, docs) = alerts(dir.path());
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();

    ok(&sluice()
        .args(["run", "--input", &input.to_string_lossy(), "--format", "quiet", "--output", &p("run.ndjson")])
        .args(["--dead-letters", &p("run-dead.ndjson"), "--late", &p("run-late.ndjson")])
        .output()
        .unwrap());
    let stderr = ok(&sluice()
        .args(["replay", "--input", &input.to_string_lossy(), "--output", &p("replay.ndjson")])
        .args(["--dead-letters", &p("replay-dead.ndjson"), "--late", &p("replay-late.ndjson")])
        .output()
        .unwrap());
    assert!(stderr.contains("replay: ") && stderr.contains("(100%)"), "progress lines on stderr: {stderr}");
    let run = cases(Path::new(&p("run.ndjson")));
    assert!(run.keys().any(|k| !k.starts_with("close:")), "the stream escalates something");
    assert_eq!(cases(Path::new(&p("replay.ndjson"))), run, "replay = run");

    // The same alerts in the indexer, two indices, three pages and more.
    let mock = MockOpenSearch::start();
    for (i, d) in docs.iter().enumerate() {
        let index = if i % 2 == 0 { "wazuh-alerts-4.x-2026.11.01" } else { "wazuh-alerts-4.x-2026.11.02" };
        mock.index(index, d.clone());
    }
    let config = dir.path().join("os.toml");
    std::fs::write(
        &config,
        format!(
            "[opensearch]\nurl = \"{}\"\npage_size = 500\nrate_limit = 1000.0\n\
             username_env = \"SLUICE_TEST_OS_USER\"\npassword_env = \"SLUICE_TEST_OS_PASS\"\n",
            mock.url
        ),
    )
    .unwrap();
    let out = sluice()
        .env("SLUICE_LOG", "debug")
        .env("SLUICE_TEST_OS_USER", "reader")
        .env("SLUICE_TEST_OS_PASS", "pa55-w0rd-never-logged")
        .args(["replay", "--config", config.to_str().unwrap(), "--opensearch", "--output", &p("os.ndjson")])
        .args(["--from", "2026-01-01T00:00:00Z", "--to", "2027-01-01T00:00:00Z"])
        .args(["--dead-letters", &p("os-dead.ndjson"), "--late", &p("os-late.ndjson")])
        .output()
        .unwrap();
    let stderr = ok(&out);
    assert_eq!(cases(Path::new(&p("os.ndjson"))), run, "replay from OpenSearch = replay of the file");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());
    let searches = mock.searches();
    assert!(searches.len() >= docs.len() / 500, "paged: {}", searches.len());
    let auth = mock_opensearch_basic("reader", "pa55-w0rd-never-logged");
    assert!(mock.requests().iter().all(|r| r.headers.get("authorization") == Some(&auth)));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for secret in ["pa55-w0rd-never-logged", auth.as_str(), auth.trim_start_matches("Basic ")] {
        assert!(!stderr.contains(secret) && !stdout.contains(secret), "credential in the output");
    }
    let range = &searches[0].body["query"]["bool"]["filter"][0]["range"]["timestamp"];
    assert_eq!(range["gte"], 1_767_225_600_000_i64, "--from as epoch ms");
    assert_eq!(range["lte"], 1_798_761_600_000_i64, "--to as epoch ms");
}

fn mock_opensearch_basic(user: &str, pass: &str) -> String {
    format!("Basic {}", sluice_connectors::opensearch::base64(format!("{user}:{pass}").as_bytes()))
}

#[test]
fn a_bad_opensearch_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[input]\nkind = \"opensearch\"\n[opensearch]\nurl = \"indexer:9200\"\nrate_limit = 0.0\n")
        .unwrap();
    let out = sluice().args(["validate", bad.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opensearch.url") && err.contains("opensearch.rate_limit"), "{err}");
    // A missing credential is named, not guessed.
    std::fs::write(&bad, "[opensearch]\napi_key_env = \"SLUICE_TEST_OS_UNSET_KEY\"\n").unwrap();
    let out = sluice()
        .args(["replay", "--config", bad.to_str().unwrap(), "--opensearch", "--output", "/dev/null"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SLUICE_TEST_OS_UNSET_KEY"));
}

/// `sluice run` on `config` until the mock has seen `until` (or 30 s), then
/// SIGINT; the run's summary.
fn run_until(
    config: &Path,
    state: &Path,
    summary: &Path,
    mock: &MockOpenSearch,
    until: impl Fn(&MockOpenSearch) -> bool,
) -> Value {
    let mut child = sluice()
        .args(["run", "--config", config.to_str().unwrap(), "--format", "quiet", "--state-dir"])
        .arg(state)
        .arg("--summary-json")
        .arg(summary)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !until(mock) && start.elapsed() < std::time::Duration::from_secs(30) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
    serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap()
}

#[test]
fn a_run_following_opensearch_resumes_from_its_checkpoint_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let mock = MockOpenSearch::start();
    let t0 = 1_793_491_200_000_i64; // 2026-11-01T00:00:00Z
    for i in 0..120 {
        mock.index(
            "wazuh-alerts-4.x-2026.11.01",
            mock_opensearch::alert(t0 + i * 1000, &format!("a{i:04}"), "acme", "001", 5),
        );
    }
    let config = dir.path().join("os.toml");
    std::fs::write(
        &config,
        format!(
            "[input]\nkind = \"opensearch\"\n[opensearch]\nurl = \"{}\"\nmode = \"backfill\"\nthen_follow = true\n\
             from = \"2026-11-01T00:00:00Z\"\npage_size = 50\npoll_interval = \"100ms\"\nrate_limit = 1000.0\n\
             [output]\ndead_letters = \"{dl}\"\nlate = \"{late}\"\n",
            mock.url,
            dl = dir.path().join("dead.ndjson").display(),
            late = dir.path().join("late.ndjson").display(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let following = |m: &MockOpenSearch| m.searches().iter().filter(|r| r.body["_source"] == false).count() >= 2;
    let first = run_until(&config, &state, &dir.path().join("s1.json"), &mock, following);
    assert_eq!(first["alerts_read"], 120, "{first}");
    assert!(mock.violations().is_empty(), "{:?}", mock.violations());

    // Indexed while Sluice was down: 30 newer alerts, one late within the overlap.
    for i in 120..150 {
        mock.index(
            "wazuh-alerts-4.x-2026.11.01",
            mock_opensearch::alert(t0 + i * 1000, &format!("a{i:04}"), "acme", "001", 5),
        );
    }
    mock.index("wazuh-alerts-4.x-2026.11.01", mock_opensearch::alert(t0 + 100_500, "late", "acme", "001", 5));
    let before = mock.searches().len();
    let resumed =
        move |m: &MockOpenSearch| m.searches()[before..].iter().filter(|r| r.body["_source"] == false).count() >= 2;
    let second = run_until(&config, &state, &dir.path().join("s2.json"), &mock, resumed);
    assert!(second["restored_from"].is_u64(), "{second}");
    assert_eq!(second["alerts_read"], 31, "only what was indexed since: {second}");
    let fetched: Vec<String> = mock.searches()[before..]
        .iter()
        .filter_map(|r| {
            r.body["query"]["bool"]["filter"]
                .as_array()
                .and_then(|f| f.iter().find_map(|c| c.pointer("/terms/id").cloned()))
        })
        .flat_map(|ids| ids.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect::<Vec<_>>())
        .collect();
    assert_eq!(fetched.len(), 31, "each new alert fetched once: {fetched:?}");
    assert!(fetched.contains(&"late".to_string()));
}
