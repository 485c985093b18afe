//! The PostgreSQL checkpoint store against a real PostgreSQL (Debian's
//! package, started per test in a temporary directory on a free loopback
//! port). `scripts/install-servers` installs it; without it these tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_pipeline::checkpoint::{Checkpoint, CheckpointStore, OperatorState, PgStore};
use sluice_pipeline::watermark::WatermarkTracker;

/// A PostgreSQL server for one test; stopped on drop.
struct Postgres {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pg_bin() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// Runs a PostgreSQL binary, as the `postgres` user when we are root
/// (PostgreSQL refuses to run as root).
fn pg_command(bin: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin).args(args);
        c
    } else {
        let mut c = Command::new(bin);
        c.args(args);
        c
    }
}

impl Postgres {
    fn start() -> Option<Postgres> {
        let Some(bin) = pg_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("PostgreSQL is not installed: run scripts/install-servers (CI must not skip these tests)");
            }
            eprintln!("SKIPPED: PostgreSQL is not installed (scripts/install-servers installs it)");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        if is_root() {
            let ok = Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap().success();
            assert!(ok, "chown of the PostgreSQL directory");
        }
        let out = pg_command(&bin.join("initdb"), &["-D", data.to_str().unwrap(), "--auth=trust", "-U", "postgres"])
            .output()
            .unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let port_s = port.to_string();
        let child = pg_command(
            &bin.join("postgres"),
            &[
                "-D",
                data.to_str().unwrap(),
                "-p",
                &port_s,
                "-k",
                dir.path().to_str().unwrap(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=on",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        let pg = Postgres { child, url: format!("postgres://postgres@127.0.0.1:{port}/postgres"), _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "PostgreSQL did not listen within 30 s");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(pg)
    }
}

fn checkpoint(id: u64) -> Checkpoint {
    let mut watermark = WatermarkTracker::new(1, 30_000, 10_000);
    watermark.observe(0, 1_700_000_000_000 + id as i64);
    Checkpoint {
        id,
        created_unix_ms: 1,
        writer: "test".into(),
        source: "kafka:wazuh-alerts".into(),
        position: Some(format!(r#"{{"partitions":[{{"topic":"t","partition":0,"offset":{id},"input":0}}]}}"#)),
        watermark,
        shards: vec![vec![OperatorState { operator: "dedup".into(), state: vec![id as u8; 1000] }]],
    }
}

/// Connecting can race the server finishing its start-up.
fn connect(url: &str, instance: &str) -> PgStore {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgStore::connect(url, instance, 2) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for PostgreSQL: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn checkpoints_round_trip_per_instance_prune_and_refuse_a_corrupt_row() {
    let Some(pg) = Postgres::start() else { return };
    let a = connect(&pg.url, "a");
    let b = connect(&pg.url, "b");
    assert_eq!(a.load_latest().unwrap(), None);
    for id in 1..=4 {
        a.save(&checkpoint(id)).unwrap();
    }
    b.save(&checkpoint(9)).unwrap();
    assert_eq!(a.load_latest().unwrap(), Some(checkpoint(4)), "the newest of this instance");
    assert_eq!(a.latest_id().unwrap(), Some(4));
    assert_eq!(b.load_latest().unwrap(), Some(checkpoint(9)), "instances do not see each other's");
    // Pruned to `keep` = 2 rows, in the same transaction as the write.
    let rows = rows(&pg.url, "a");
    assert_eq!(rows, [3, 4]);
    // A reconnecting instance resumes from what is there.
    drop(a);
    let again = connect(&pg.url, "a");
    assert_eq!(again.load_latest().unwrap(), Some(checkpoint(4)));
    // A damaged row is refused with where it was read, never half-loaded.
    run_sql(
        &pg.url,
        "UPDATE sluice_checkpoints SET body = substring(body from 1 for 40) WHERE instance = 'a' AND id = 4",
    );
    let err = again.load_latest().unwrap_err().to_string();
    assert!(err.contains("row id 4") && err.contains("truncated") && err.contains("--fresh-state"), "{err}");
    again.clear().unwrap();
    assert_eq!(again.load_latest().unwrap(), None);
    assert_eq!(b.load_latest().unwrap(), Some(checkpoint(9)), "clear is per instance");
}

#[test]
fn a_bad_url_is_refused_without_showing_the_password() {
    let err = PgStore::connect("postgres://sluice:s3cret-pw@127.0.0.1:1/db", "a", 2).unwrap_err().to_string();
    assert!(err.contains("cannot connect"), "{err}");
    assert!(!err.contains("s3cret-pw"), "the password leaked: {err}");
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql").args([url, "-At", "-c", sql]).output().unwrap();
    assert!(out.status.success(), "psql: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_sql(url: &str, sql: &str) {
    psql(url, sql);
}

fn rows(url: &str, instance: &str) -> Vec<i64> {
    psql(url, &format!("SELECT id FROM sluice_checkpoints WHERE instance = '{instance}' ORDER BY id"))
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

#[test]
fn sluice_run_checkpoints_to_postgres_and_resumes_from_it() {
    let Some(pg) = Postgres::start() else { return };
    let _ = connect(&pg.url, "warm-up"); // the server is accepting connections
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("alerts.json");
    let sluice = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_sluice"));
        c.env("SLUICE_LOG", "warn").env("SLUICE_POSTGRES_URL", &pg.url).current_dir(dir.path());
        c
    };
    let out = sluice().args(["generate", "--tenants", "2", "--alerts", "3000", "-o"]).arg(&input).output().unwrap();
    assert!(out.status.success());
    std::fs::write(
        dir.path().join("pg.toml"),
        "[checkpoint]\nmode = \"on\"\nstore = \"postgres\"\ninstance = \"cli\"\n",
    )
    .unwrap();
    let run = |summary: &str| {
        let out = sluice()
            .args(["run", "--format", "quiet", "--config", "pg.toml", "--summary-json", summary, "-i"])
            .arg(&input)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let text = std::fs::read_to_string(dir.path().join(summary)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()
    };
    let first = run("first.json");
    assert_eq!(first["alerts_read"], 3000);
    assert!(first["checkpoints"].as_u64().unwrap() >= 1);
    assert!(!rows(&pg.url, "cli").is_empty(), "the checkpoint is a row in PostgreSQL");
    // The file was read to its end: the next run resumes there and reads nothing.
    let second = run("second.json");
    assert!(second["restored_from"].is_u64(), "{second}");
    assert_eq!(second["alerts_read"], 0);
}
