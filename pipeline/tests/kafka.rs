//! Against a real Kafka-compatible broker (tansu, started per test on a free
//! loopback port with in-memory storage): the Kafka path gives what the file
//! path gives, and `kill -9` at random points loses nothing and never
//! delivers one idempotency key with two contents.
//!
//! `scripts/install-servers` installs tansu. Without it these tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use serde_json::Value;

fn sluice() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
    // Default outputs (dead letters, late records) land outside the repository.
    c.env("SLUICE_LOG", "warn").current_dir(std::env::temp_dir());
    c
}

fn ok(c: &mut Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?}: exit {:?}\nstderr:\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A tansu broker for one test; stopped on drop.
struct Broker {
    child: Child,
    addr: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tansu_binary() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("SLUICE_TANSU") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo"));
    let p = home.join("bin").join("tansu");
    p.exists().then_some(p)
}

impl Broker {
    /// Starts tansu with in-memory storage, or returns `None` (skip) when it
    /// is not installed and this is not CI.
    fn start(log_dir: &Path) -> Option<Broker> {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_at(log_dir, port, "memory://tansu/")
    }

    /// Starts tansu storing in SQLite under `dir` (`dir/tansu.db`), so that
    /// it can be stopped and started again with its topics, records and
    /// groups.
    fn start_persistent(dir: &Path, port: u16) -> Option<Broker> {
        Self::start_at(dir, port, "sqlite://tansu.db")
    }

    fn start_at(dir: &Path, port: u16, storage: &str) -> Option<Broker> {
        let Some(bin) = tansu_binary() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("tansu is not installed: run scripts/install-servers (CI must not skip Kafka tests)");
            }
            eprintln!("SKIPPED: tansu is not installed (scripts/install-servers installs it)");
            return None;
        };
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("tansu.log")).unwrap();
        let child = Command::new(bin)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .args(["--storage-engine", storage, "--cluster-id", "sluice-test"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        let broker = Broker { child, addr: format!("127.0.0.1:{port}") };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&broker.addr).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {} within 20 s", broker.addr);
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }
}

/// Generates alerts, loads them into a 4-partition topic keyed by tenant.
fn setup(dir: &Path, broker: &Broker, alerts: u64) -> PathBuf {
    let input = dir.join("alerts.json");
    ok(sluice().args(["generate", "--tenants", "3", "--seed", "11", "--rate", "4"]).args([
        "--alerts",
        &alerts.to_string(),
        "-o",
        input.to_str().unwrap(),
    ]));
    ok(sluice()
        .args(["produce", "--kafka", &broker.addr, "--topic", "wazuh-alerts", "--partitions", "4", "-i"])
        .arg(&input));
    std::fs::write(
        dir.join("kafka.toml"),
        // A killed member leaves the group only when its session times out;
        // a short session lets the restarted instance rejoin quickly. The
        // default idle timeout: the data is all there, so no partition may
        // be taken for idle because a loaded broker was slow to serve it
        // (its late records would then depend on timing).
        "[kafka]\nidle_timeout = \"30s\"\nstate_scope = \"sluice-test\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"1000\"\n[checkpoint]\ninterval = \"300ms\"\n[runtime]\nshards = 2\n",
    )
    .unwrap();
    input
}

/// A case file line as compared: without the wall-clock ingest time.
fn stable(mut v: Value) -> Value {
    if let Some(t) = v.get_mut("trigger").and_then(Value::as_object_mut) {
        t.remove("ingest_time_us");
    }
    v
}

/// `(hand-offs by idempotency key, final states by cluster)` of an NDJSON
/// case file. A line torn by `kill -9` is skipped.
fn read_cases(path: &Path) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let (mut handoffs, mut finals) = (BTreeMap::new(), BTreeMap::new());
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let v = stable(v);
        if v["kind"] == "close" {
            finals.insert(v["cluster_id"].as_str().unwrap().to_string(), v);
        } else {
            handoffs.insert(v["idempotency_key"].as_str().unwrap().to_string(), v);
        }
    }
    (handoffs, finals)
}

/// Every message of `sluice.cases`: idempotency key → every content seen.
fn consume_cases(broker: &Broker) -> BTreeMap<String, Vec<Value>> {
    let mut out: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for (headers, payload) in consume_all(broker, "sluice.cases", 3) {
        let key = headers.get("idempotency_key").expect("every case has an idempotency_key header").clone();
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(v["idempotency_key"], key.as_str(), "header and payload agree");
        out.entry(key).or_default().push(v);
    }
    out
}

/// Whether `group` has committed every partition of `topic` to its end.
fn group_at_end(broker: &Broker, group: &str, topic: &str, partitions: i32) -> bool {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    (0..partitions).all(|p| {
        let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
        match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(rdkafka::Offset::Offset(o)) => o >= high,
            _ => low == high,
        }
    })
}

/// A Sluice run reading the topic as member of group `sluice-{group}`.
///
/// Each restart joins a new group: the checkpoint, not the group, holds the
/// positions, and tansu 0.6 keeps a `kill -9`ed member in its group (with
/// partitions assigned to it) for good, which would stall a restarted member
/// of the same group for reasons that are the broker's. The partitions'
/// state is kept under one name for all of them (`kafka.state_scope`).
fn kafka_run(dir: &Path, broker: &Broker, group: &str) -> Command {
    let mut c = sluice();
    c.args(["run", "--format", "quiet", "--kafka", &broker.addr, "--topic", "wazuh-alerts", "--group"])
        .arg(format!("sluice-{group}"))
        .arg("--config")
        .arg(dir.join("kafka.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--output")
        .arg(dir.join("kafka-cases.ndjson"))
        .arg("--exit-when-caught-up");
    c
}

fn reference(dir: &Path, input: &Path) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    let out = dir.join("file-cases.ndjson");
    ok(sluice().args(["run", "--format", "quiet", "--shards", "2", "-i"]).arg(input).arg("-o").arg(&out));
    let (handoffs, finals) = read_cases(&out);
    assert!(handoffs.len() > 10, "the fixture must escalate: {}", handoffs.len());
    (handoffs, finals)
}

/// Fails naming the keys missing, extra, or with other content than the
/// uninterrupted file run's.
fn assert_same(got: &BTreeMap<String, Value>, want: &BTreeMap<String, Value>, what: &str) {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differ: Vec<&String> = want.keys().filter(|k| got.get(*k).is_some_and(|v| v != &want[*k])).collect();
    let detail: Vec<String> = differ
        .iter()
        .flat_map(|k| {
            let (g, w) = (got[*k].as_object().unwrap(), want[*k].as_object().unwrap());
            w.keys()
                .filter(|f| g.get(*f) != w.get(*f))
                .map(move |f| format!("{k}.{f}: {} vs {}", short(&g[f]), short(&w[f])))
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differ.is_empty(),
        "{what} differ from the uninterrupted file run: missing {missing:?}, extra {extra:?}, different {detail:#?}"
    );
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 300 { format!("{}…", &s[..300]) } else { s }
}

/// The single content of every key, failing on a key delivered with two.
fn exactly_one_content(delivered: BTreeMap<String, Vec<Value>>) -> BTreeMap<String, Value> {
    delivered
        .into_iter()
        .map(|(key, mut contents)| {
            let first = stable(contents.remove(0));
            for other in contents {
                assert_eq!(stable(other), first, "idempotency key {key} delivered with two different contents");
            }
            (key, first)
        })
        .collect()
}

#[test]
fn kafka_in_and_out_equals_the_file_run() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = setup(dir.path(), &broker, 30_000);
    let (want, want_finals) = reference(dir.path(), &input);
    ok(&mut kafka_run(dir.path(), &broker, "e2e"));
    assert_like_the_file_run(&broker, &dir.path().join("kafka-cases.ndjson"), &want, &want_finals);
}

#[test]
fn kill_dash_nine_at_random_points_loses_nothing_and_never_changes_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = setup(dir.path(), &broker, 120_000);
    let (want, want_finals) = reference(dir.path(), &input);
    // Kill points from a fixed seed (reproducible), spread over the run.
    let mut seed = 0x5eed_u64;
    let mut kills = 0;
    for round in 0..4 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let after = Duration::from_millis(700 + seed % 2500);
        let mut child = kafka_run(dir.path(), &broker, &round.to_string()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL: no flush, no final checkpoint
            kills += 1;
        }
        let _ = child.wait();
    }
    assert!(kills >= 2, "the run must be killed mid-stream at least twice (was {kills})");
    let summary = dir.path().join("summary.json");
    ok(kafka_run(dir.path(), &broker, "final").arg("--summary-json").arg(&summary));
    let summary: Value = serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap();
    assert!(summary["restored_from"].is_u64(), "the last run resumed from the partitions' state: {summary}");
    assert!(
        group_at_end(&broker, "sluice-final", "wazuh-alerts", 4),
        "offsets are committed to the end once the last checkpoint is durable"
    );
    assert_like_the_file_run(&broker, &dir.path().join("kafka-cases.ndjson"), &want, &want_finals);
}

/// An instance of group `sluice-scale` for the scale-out test: the
/// partitions' state in the shared `state` directory (as on a shared volume
/// or in one PostgreSQL database), everything else its own.
fn member(dir: &Path, broker: &Broker, name: &str) -> Command {
    let config = std::fs::read_to_string(dir.join("kafka.toml")).unwrap();
    let own = dir.join(name);
    std::fs::create_dir_all(&own).unwrap();
    std::fs::write(own.join("kafka.toml"), format!("{config}[store]\npath = {:?}\n", own.join("sluice.db"))).unwrap();
    let mut c = sluice();
    c.args(["run", "--format", "quiet", "--kafka", &broker.addr, "--topic", "wazuh-alerts", "--group", "sluice-scale"])
        .arg("--config")
        .arg(own.join("kafka.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--output")
        .arg(own.join("cases.ndjson"))
        .arg("--summary-json")
        .arg(own.join("summary.json"))
        .arg("--exit-when-caught-up")
        .env("SLUICE_LOG", "info")
        .stderr(std::fs::File::create(own.join("stderr.log")).unwrap());
    c
}

/// Scale-out: a second instance joins the group and takes half of the
/// partitions with the state the first saved for them; then the first is
/// stopped and the second takes the rest with the first one's final state.
/// Together they hand off exactly what one uninterrupted run does, never one
/// key with two contents, and their final clusters are that run's.
///
/// The first instance is stopped (SIGTERM), not killed: tansu 0.6 keeps a
/// `kill -9`ed member in the group for good (after its session expires the
/// group rebalances, but hands out the same assignment, dead member
/// included), so its partitions would never move. What a killed instance
/// leaves is its last periodic checkpoint, the same parts a stop leaves,
/// only older: `kill_dash_nine_*` covers resuming from those.
#[test]
fn a_second_instance_takes_over_partitions_with_their_state() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = setup(dir.path(), &broker, 120_000);
    let (want, want_finals) = reference(dir.path(), &input);
    let log = |name: &str| std::fs::read_to_string(dir.path().join(name).join("stderr.log")).unwrap_or_default();
    let wait_for = |name: &str, what: &str, times: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while log(name).matches(what).count() < times {
            assert!(Instant::now() < deadline, "{name} did not log {what:?} {times}× within 60 s:\n{}", log(name));
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    let mut a = member(dir.path(), &broker, "a").spawn().unwrap();
    wait_for("a", "kafka: partitions assigned", 1);
    std::thread::sleep(Duration::from_millis(800));
    let mut b = member(dir.path(), &broker, "b").spawn().unwrap();
    // The group rebalances: `a` saves the state of its partitions before
    // letting them go, and `b` starts on its share from that state.
    wait_for("a", "state saved; partitions let go", 1);
    wait_for("b", "kafka: partitions assigned", 1);
    assert!(a.try_wait().unwrap().is_none(), "a must be stopped mid-stream: it ended early");
    let stopped = Command::new("kill").arg("-TERM").arg(a.id().to_string()).status().unwrap();
    assert!(stopped.success());
    assert!(a.wait().unwrap().success(), "a stops cleanly:\n{}", log("a"));
    // `a` left the group: `b` saves its own, then gets every partition.
    wait_for("b", "kafka: partitions assigned", 2);
    let status = finish(&mut b, "a's departure");
    assert!(status.success(), "b: {status:?}\n{}", log("b"));
    let b_log = log("b");
    let took: Vec<&str> = b_log.lines().filter(|l| l.contains("their state is loaded")).collect();
    assert!(
        took.last().is_some_and(|l| (0..4).all(|p| l.contains(&format!("wazuh-alerts[{p}]")))),
        "b ends holding the state of all four partitions: {took:#?}"
    );
    let summary: Value = serde_json::from_slice(&std::fs::read(dir.path().join("b/summary.json")).unwrap()).unwrap();
    assert!(summary["restored_from"].is_u64(), "b took state over: {summary}");
    assert!(group_at_end(&broker, "sluice-scale", "wazuh-alerts", 4), "b committed every partition to its end");
    let got = exactly_one_content(consume_cases(&broker));
    assert_same(&got, &want, "hand-offs of the two instances");
    // Stopped, `a` closed nothing: its open windows went on in `b`.
    let (_, a_finals) = read_cases(&dir.path().join("a/cases.ndjson"));
    assert!(a_finals.is_empty(), "a, stopped, closed clusters: {:?}", a_finals.keys());
    let (_, finals) = read_cases(&dir.path().join("b/cases.ndjson"));
    assert_same(&finals, &want_finals, "final clusters");
}

/// Every message of a topic with its headers, read to the end of all
/// `partitions` partitions.
fn consume_all(broker: &Broker, topic: &str, partitions: usize) -> Vec<(BTreeMap<String, String>, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.addr)
        .set("group.id", format!("read-{topic}-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut at_end = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions {
        assert!(Instant::now() < deadline, "{topic} not read to its end within 60 s");
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (h.key.to_string(), String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((headers, m.payload().unwrap_or_default().to_vec()));
            }
        }
    }
    out
}

/// One run to the end of the topics with this config; cases, dead letters
/// and the summary go to `cases.ndjson`, `dead.ndjson` and the returned JSON.
fn caught_up_run(dir: &Path, broker: &Broker, config: &str, group: &str) -> Value {
    std::fs::write(dir.join("run.toml"), config).unwrap();
    let summary = dir.join("summary.json");
    ok(sluice()
        .args(["run", "--format", "quiet", "--kafka", &broker.addr, "--group", group, "--exit-when-caught-up"])
        .arg("--config")
        .arg(dir.join("run.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--output")
        .arg(dir.join("cases.ndjson"))
        .arg("--dead-letters")
        .arg(dir.join("dead.ndjson"))
        .arg("--summary-json")
        .arg(&summary));
    serde_json::from_slice(&std::fs::read(&summary).unwrap()).unwrap()
}

#[test]
fn tenant_from_the_topic_name_and_bad_messages_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = dir.path().join("alerts.json");
    ok(sluice().args(["generate", "--tenants", "2", "--alerts", "4000", "--seed", "3", "-o"]).arg(&input));
    // One topic per tenant; every record claims the same manager, so only
    // the topic can tell the tenants apart.
    let mut per_tenant: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        let tenant = v["manager"]["name"].as_str().unwrap().to_string();
        v["manager"]["name"] = "mssp-manager".into();
        let buf = per_tenant.entry(tenant).or_default();
        buf.extend_from_slice(v.to_string().as_bytes());
        buf.push(b'\n');
    }
    assert_eq!(per_tenant.len(), 2);
    let tenants: Vec<String> = per_tenant.keys().cloned().collect();
    per_tenant.get_mut(&tenants[0]).unwrap().extend_from_slice(b"this is not json\n");
    // Over decode.max_record_bytes below (generated alerts are far smaller).
    let huge = serde_json::json!({"timestamp": "2026-11-01T00:00:00.000+0000", "full_log": "A".repeat(200_000)});
    per_tenant.get_mut(&tenants[1]).unwrap().extend_from_slice(format!("{huge}\n").as_bytes());
    for (tenant, data) in &per_tenant {
        let file = dir.path().join(format!("{tenant}.json"));
        std::fs::write(&file, data).unwrap();
        let topic = format!("wazuh-alerts-{tenant}");
        ok(sluice()
            .args(["produce", "--kafka", &broker.addr, "--topic", &topic, "--partitions", "2", "-i"])
            .arg(&file));
    }
    let config = "[kafka]\ntopics = [\"^wazuh-alerts-.*\"]\ntenant_from = \"topic\"\nidle_timeout = \"1s\"\n\
                  [decode]\nmax_record_bytes = 100000\n";
    let s = caught_up_run(dir.path(), &broker, config, "by-topic");
    let (cases, dead) = (dir.path().join("cases.ndjson"), dir.path().join("dead.ndjson"));
    assert_eq!(s["alerts_read"], 4002);
    assert_eq!(s["dead_lettered"], 2);
    let seen: std::collections::BTreeSet<String> = s["tenants"].as_object().unwrap().keys().cloned().collect();
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), tenants, "tenants come from the topic names");
    let (handoffs, _) = read_cases(&cases);
    assert!(handoffs.values().all(|c| tenants.contains(&c["tenant"].as_str().unwrap().to_string())));
    // The bad messages, on the dead-letter topic with where they came from.
    let mut letters = consume_all(&broker, "sluice.dead-letters", 3);
    assert_eq!(letters.len(), 2, "{letters:?}");
    letters.sort_by(|a, b| a.0["reason_code"].cmp(&b.0["reason_code"]));
    let (headers, payload) = &letters[1];
    assert_eq!(headers["reason_code"], "too_large");
    assert_eq!(payload.len(), huge.to_string().len(), "whole, under the dead-letter topic's limit");
    assert_eq!(headers["source_topic"], format!("wazuh-alerts-{}", tenants[1]));
    let (headers, payload) = &letters[0];
    assert_eq!(payload, b"this is not json");
    assert_eq!(headers["reason_code"], "not_json");
    assert_eq!(headers["source_topic"], format!("wazuh-alerts-{}", tenants[0]));
    assert!(headers["source_partition"].parse::<i32>().is_ok(), "{headers:?}");
    assert!(headers["source_offset"].parse::<u64>().is_ok(), "{headers:?}");
    let file_letters: Vec<Value> =
        std::fs::read_to_string(&dead).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let not_json = file_letters.iter().find(|l| l["code"] == "not_json").expect("in the dead-letter file too");
    assert_eq!(not_json["offset"].to_string(), headers["source_offset"], "the Kafka offset, in both places");
}

#[test]
fn tenant_from_a_message_header_and_never_a_default() {
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let sample = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/wazuh-sample-alert-5712.ndjson"),
    )
    .unwrap();
    let alert = sample.trim();
    // `produce` of an empty file creates the topic; the messages below carry headers.
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "").unwrap();
    ok(sluice()
        .args(["produce", "--kafka", &broker.addr, "--topic", "by-header", "--partitions", "1", "-i"])
        .arg(&empty));
    let producer: BaseProducer = ClientConfig::new().set("bootstrap.servers", &broker.addr).create().unwrap();
    for tenant in ["acme", "globex", ""] {
        let mut record = BaseRecord::<(), str>::to("by-header").payload(alert);
        if !tenant.is_empty() {
            record = record.headers(OwnedHeaders::new().insert(Header { key: "tenant", value: Some(tenant) }));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let config = "[kafka]\ntopics = [\"by-header\"]\ntenant_from = \"header\"\nidle_timeout = \"1s\"\n";
    let s = caught_up_run(dir.path(), &broker, config, "h");
    let dead = dir.path().join("dead.ndjson");
    assert_eq!(s["alerts_read"], 3);
    assert_eq!(s["decoded"], 2);
    let tenants: Vec<&String> = s["tenants"].as_object().unwrap().keys().collect();
    assert_eq!(tenants, ["acme", "globex"], "the header, not the record's manager.name");
    let letter: Value = serde_json::from_str(std::fs::read_to_string(&dead).unwrap().trim()).unwrap();
    assert_eq!(letter["code"], "no_tenant");
    assert!(letter["reason"].as_str().unwrap().contains("header"), "{letter}");
    assert_eq!(letter["source"], "by-header/0");
}

/// Waits for a run to end (3 minutes at most after `since`).
fn finish(child: &mut Child, since: &str) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "the run did not finish within 3 minutes of {since}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The hand-offs on `sluice.cases` and the final clusters in `cases` are
/// those of the uninterrupted file run, no key with two contents.
fn assert_like_the_file_run(
    broker: &Broker,
    cases: &Path,
    want: &BTreeMap<String, Value>,
    want_finals: &BTreeMap<String, Value>,
) {
    let got = exactly_one_content(consume_cases(broker));
    assert_same(&got, want, "hand-offs");
    let (_, finals) = read_cases(cases);
    assert_same(&finals, want_finals, "final clusters");
}

/// Sends a signal to the broker process (`STOP` freezes it, `CONT` resumes).
fn signal(broker: &Broker, sig: &str) {
    let ok = Command::new("kill").arg(format!("-{sig}")).arg(broker.child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{sig}");
}

#[test]
fn a_broker_outage_mid_stream_is_waited_out_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = setup(dir.path(), &broker, 120_000);
    let (want, want_finals) = reference(dir.path(), &input);
    // A short socket timeout, so the outage is felt (requests time out, all
    // brokers are down, connections are made again), and a session long
    // enough to outlive it: tansu 0.6 does not finish a consumer's rejoin
    // after its session expired while the broker was frozen.
    let config = std::fs::read_to_string(dir.path().join("kafka.toml"))
        .unwrap()
        .replace("[kafka.properties]\n", "[kafka.properties]\n\"socket.timeout.ms\" = \"2000\"\n")
        .replace("\"session.timeout.ms\" = \"6000\"", "\"session.timeout.ms\" = \"30000\"");
    std::fs::write(dir.path().join("kafka.toml"), config).unwrap();
    let mut child = kafka_run(dir.path(), &broker, "outage").stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the run must still be reading when the broker goes away");
    signal(&broker, "STOP");
    std::thread::sleep(Duration::from_secs(8));
    signal(&broker, "CONT");
    let status = finish(&mut child, "the broker's return");
    assert!(status.success(), "the run survives the outage: {status:?}");
    assert_like_the_file_run(&broker, &dir.path().join("kafka-cases.ndjson"), &want, &want_finals);
}

/// The broker is killed mid-stream and started again (SQLite storage, so
/// its topics, records and the group's offsets survive): Sluice waits,
/// reconnects and finishes with the hand-offs and final clusters of an
/// uninterrupted run.
#[test]
fn a_broker_restart_mid_stream_is_waited_out_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let Some(mut broker) = Broker::start_persistent(dir.path(), port) else { return };
    let input = setup(dir.path(), &broker, 120_000);
    let (want, want_finals) = reference(dir.path(), &input);
    // A session that outlives the restart (see the outage test).
    let config = std::fs::read_to_string(dir.path().join("kafka.toml"))
        .unwrap()
        .replace("\"session.timeout.ms\" = \"6000\"", "\"session.timeout.ms\" = \"30000\"");
    std::fs::write(dir.path().join("kafka.toml"), config).unwrap();
    let mut child = kafka_run(dir.path(), &broker, "restart").stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the run must still be reading when the broker goes away");
    broker.child.kill().unwrap(); // SIGKILL: no orderly shutdown
    broker.child.wait().unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let broker = Broker::start_persistent(dir.path(), port).expect("tansu started once already");
    let status = finish(&mut child, "the broker's restart");
    assert!(status.success(), "the run survives the restart: {status:?}");
    assert_like_the_file_run(&broker, &dir.path().join("kafka-cases.ndjson"), &want, &want_finals);
}

/// A resume offset inside one of the broker's record batches. A fetch there
/// must start at that offset; tansu 0.6 answers with the *next* batch, which
/// would silently skip the rest of this one. The source seeks back and drops
/// what it had already handed over, so it resumes exactly.
#[test]
fn resuming_inside_a_record_batch_reads_on_from_exactly_that_offset() {
    use sluice_connectors::kafka::{KafkaConfig, KafkaSource, ensure_topics, produce_lines};
    use sluice_connectors::source::{Source, StopFlag};
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let config = KafkaConfig {
        brokers: broker.addr.clone(),
        group_id: "resume-inside-a-batch".into(),
        topics: vec!["resume".into()],
        exit_when_caught_up: true,
        ..KafkaConfig::default()
    };
    ensure_topics(&config, &[("resume", 1)]).unwrap();
    // Two loads of small messages: each travels as one large batch.
    let total = 10_000u64;
    for half in [0..total / 2, total / 2..total] {
        let lines: String = half.map(|i| format!("{{\"id\":\"{i}\",\"tenant\":\"t\"}}\n")).collect();
        assert_eq!(produce_lines(&config, "resume", lines.as_bytes(), "tenant").unwrap(), total / 2);
    }
    // Inside the first batch (a later one exists), inside the last one, and
    // its last message.
    for start in [2345, 7345, total - 1] {
        let mut source =
            KafkaSource::new(&KafkaConfig { group_id: format!("resume-{start}"), ..config.clone() }, StopFlag::new())
                .unwrap();
        source
            .restore(&format!(r#"{{"partitions":[{{"topic":"resume","partition":0,"offset":{start},"input":0}}]}}"#))
            .unwrap();
        let mut offsets = Vec::new();
        while let Some(chunk) = source.next_chunk().unwrap() {
            offsets.extend(chunk.positions);
        }
        let want: Vec<u64> = (start..total).collect();
        assert!(offsets == want, "resumed at {start}: read {} offsets from {:?}", offsets.len(), offsets.first());
    }
}

/// A source whose partitions are being revoked waits for the runtime to
/// save their state; dropped meanwhile (the run stopping), it answers the
/// rebalance itself, or librdkafka's close would wait for that answer
/// forever.
#[test]
fn a_source_dropped_while_a_rebalance_waits_closes() {
    use sluice_connectors::kafka::{KafkaConfig, KafkaSource, ensure_topics, produce_lines};
    use sluice_connectors::source::{Handover, Source, StopFlag};
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let config = KafkaConfig {
        brokers: broker.addr.clone(),
        group_id: "dropped-mid-rebalance".into(),
        topics: vec!["drop".into()],
        ..KafkaConfig::default()
    };
    ensure_topics(&config, &[("drop", 2)]).unwrap();
    let lines: String = (0..100).map(|i| format!("{{\"id\":\"{i}\",\"tenant\":\"t{}\"}}\n", i % 4)).collect();
    produce_lines(&config, "drop", lines.as_bytes(), "tenant").unwrap();
    let mut source = KafkaSource::new(&config, StopFlag::new()).unwrap();
    assert!(source.hand_over_inputs().is_some());
    // Polls `source` until `done` says so, answering assignments (no state).
    let poll_until = |source: &mut KafkaSource, what: &str, done: &mut dyn FnMut(&mut KafkaSource) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done(source) {
            assert!(Instant::now() < deadline, "{what}: not within 60 s");
            source.next_chunk().unwrap();
            if let Some(Handover::Acquire(_)) = source.handover() {
                source.acquired(&[]);
            }
        }
    };
    poll_until(&mut source, "both partitions assigned, data read", &mut |s| {
        let read = s.input_positions();
        read.len() == 2 && read.iter().any(|p| p.offset > 0)
    });
    // A second member joins: the group revokes the first one's partitions.
    let joined = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let second = {
        let (brokers, joined) = (broker.addr.clone(), joined.clone());
        std::thread::spawn(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", "dropped-mid-rebalance")
                .create()
                .unwrap();
            consumer.subscribe(&["drop"]).unwrap();
            while joined.load(std::sync::atomic::Ordering::SeqCst) {
                let _ = consumer.poll(Duration::from_millis(100));
            }
        })
    };
    poll_until(&mut source, "a revocation", &mut |s| matches!(s.handover(), Some(Handover::Release(_))));
    // The run stops here, without saving: the source goes.
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(source);
        let _ = done_tx.send(());
    });
    let closed = done_rx.recv_timeout(Duration::from_secs(30));
    joined.store(false, std::sync::atomic::Ordering::SeqCst);
    second.join().unwrap();
    assert!(closed.is_ok(), "dropping a source with a rebalance step waiting hung");
}

#[test]
fn consumer_lag_is_a_metric_per_partition() {
    use sluice_connectors::kafka::KafkaSource;
    use sluice_connectors::source::StopFlag;
    use sluice_pipeline::config::InputKind;
    use sluice_pipeline::metrics::Metrics;
    use sluice_pipeline::{Config, RunOptions, run};

    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    setup(dir.path(), &broker, 5_000);
    let text = std::fs::read_to_string(dir.path().join("kafka.toml")).unwrap();
    let mut config = Config::parse(&text, "kafka.toml").unwrap();
    config.input.kind = InputKind::Kafka;
    config.kafka.brokers = broker.addr.clone();
    config.kafka.topics = vec!["wazuh-alerts".into()];
    config.kafka.group_id = "sluice-lag".into();
    config.kafka.exit_when_caught_up = true;
    let stop = StopFlag::new();
    let source = KafkaSource::new(&config.kafka, stop.clone()).unwrap();
    let metrics = std::sync::Arc::new(Metrics::default());
    let options = RunOptions { metrics: Some(metrics.clone()), ..RunOptions::default() };
    let summary = run(&config, Box::new(source), &options, &stop, |_| Ok(())).unwrap();
    assert_eq!(summary.alerts_read, 5_000);
    // Read to the end: every partition is there, with nothing left.
    let lag = metrics.lag();
    let partitions: Vec<&str> = lag.keys().map(|(_, p)| p.as_str()).collect();
    assert_eq!(partitions, ["wazuh-alerts[0]", "wazuh-alerts[1]", "wazuh-alerts[2]", "wazuh-alerts[3]"], "{lag:?}");
    assert!(lag.values().all(|&n| n == 0), "{lag:?}");
    let text = sluice_pipeline::admin::prometheus::render(&metrics, None, 100);
    assert!(text.contains("sluice_source_lag_records{source=\""), "{text}");
    assert!(text.contains(",partition=\"wazuh-alerts[3]\"} 0\n"), "{text}");
}

/// A tenant with far more alerts in flight than `runtime.tenant_backlog`
/// is held back, again and again: its records wait in the source, and once
/// `kafka.held_records` of a partition wait, the partition is paused and
/// later resumed. Nothing is lost, read twice or changed by it.
#[test]
fn a_held_back_tenants_partitions_are_paused_and_nothing_is_lost() {
    use sluice_connectors::kafka::KafkaSource;
    use sluice_connectors::source::StopFlag;
    use sluice_pipeline::config::InputKind;
    use sluice_pipeline::metrics::Metrics;
    use sluice_pipeline::{Config, RunOptions, run};

    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = Broker::start(dir.path()) else { return };
    let input = dir.path().join("alerts.json");
    ok(sluice().args(["generate", "--tenants", "2", "--alerts", "6000", "--seed", "9", "-o"]).arg(&input));
    let mut per_tenant: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for line in std::fs::read_to_string(&input).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        let tenant = v["manager"]["name"].as_str().unwrap().to_string();
        *counts.entry(tenant.clone()).or_default() += 1;
        let buf = per_tenant.entry(tenant).or_default();
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
    }
    for (tenant, data) in &per_tenant {
        let file = dir.path().join(format!("{tenant}.json"));
        std::fs::write(&file, data).unwrap();
        ok(sluice()
            .args([
                "produce",
                "--kafka",
                &broker.addr,
                "--topic",
                &format!("wazuh-alerts-{tenant}"),
                "--partitions",
                "2",
            ])
            .arg("-i")
            .arg(&file));
    }
    let run_group = |group: &str, fair: bool, held_records: usize| {
        let mut config = Config::default();
        config.input.kind = InputKind::Kafka;
        config.kafka.brokers = broker.addr.clone();
        config.kafka.topics = vec!["^wazuh-alerts-.*".into()];
        config.kafka.tenant_from = sluice_connectors::kafka::TenantFrom::Topic;
        config.kafka.group_id = group.into();
        config.kafka.exit_when_caught_up = true;
        config.kafka.idle_timeout = sluice_operators::time::Duration::from_secs(1);
        config.runtime.fair_scheduling = fair;
        config.runtime.tenant_backlog = 50.try_into().unwrap();
        config.kafka.held_records = held_records;
        let stop = StopFlag::new();
        let source = KafkaSource::new(&config.kafka, stop.clone()).unwrap();
        let pauses = source.pauses();
        let metrics = std::sync::Arc::new(Metrics::default());
        let options = RunOptions { metrics: Some(metrics.clone()), ..RunOptions::default() };
        let summary = run(&config, Box::new(source), &options, &stop, |_| Ok(())).unwrap();
        (summary, metrics, pauses.load(std::sync::atomic::Ordering::Relaxed))
    };
    let (held, metrics, paused) = run_group("held", true, 100);
    assert!(paused > 0, "over 100 records waiting pauses the partition");
    assert_eq!(held.alerts_read, 6000);
    for (tenant, n) in &counts {
        assert_eq!(held.tenants[tenant]["dedup.records_in"], *n, "{tenant}: every alert once");
    }
    let report = metrics.backlog.report();
    assert!(report.iter().any(|r| r.spells > 0), "someone was held back: {report:?}");
    assert!(report.iter().all(|r| r.in_flight == 0 && !r.held), "nothing left in flight: {report:?}");
    let (plain, metrics, paused) = run_group("plain", false, 100);
    assert!(metrics.backlog.report().iter().all(|r| r.spells == 0), "arrival order holds nobody back");
    assert_eq!(paused, 0);
    // Held back as often, but never so long that a partition is paused:
    // the records wait in the source, and the results are the same again.
    let (waited, metrics, paused) = run_group("waited", true, 100_000);
    assert!(metrics.backlog.report().iter().any(|r| r.spells > 0), "someone was held back");
    assert_eq!(paused, 0, "fewer than kafka.held_records waited");
    assert_eq!(waited.tenants, plain.tenants);
    assert_eq!(
        (held.alerts_read, held.late, held.clusters, held.escalated, held.closed_review, held.closed_suppress),
        (plain.alerts_read, plain.late, plain.clusters, plain.escalated, plain.closed_review, plain.closed_suppress),
        "holding back changes nothing but the order"
    );
    assert_eq!(held.tenants, plain.tenants);
}
