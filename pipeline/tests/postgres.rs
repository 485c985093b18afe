//! The PostgreSQL checkpoint store against a real PostgreSQL (Debian's
//! package, started per test in a temporary directory on a free loopback
//! port). `scripts/install-servers` installs it; without it these tests are
//! skipped with a message, except under `CI=true`, where they fail.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sluice_operators::cluster::ClusterReport;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::checkpoint::{Checkpoint, CheckpointStore, OperatorState, PartCheckpoint, PgStore, TenantState};
use sluice_pipeline::output::stable_case_json;
use sluice_pipeline::store::{Store, status};
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

/// Each Kafka partition's state, shared by the instances of a group: any
/// instance reads what another wrote; a rewrite replaces a partition's row
/// whole; groups and `--fresh-state` stay apart.
#[test]
fn partition_state_is_shared_by_the_instances_of_a_group() {
    let Some(pg) = Postgres::start() else { return };
    let (a, b) = (connect(&pg.url, "a"), connect(&pg.url, "b"));
    let part = |id: u64, input: &str| PartCheckpoint {
        id,
        created_unix_ms: 1,
        writer: "test".into(),
        source: "kafka:wazuh-alerts".into(),
        input: input.into(),
        offset: 100 * id as i64,
        newest: Some(1_000 * id as i64),
        idle: id.is_multiple_of(2),
        tenants: vec![TenantState {
            tenant: "acme".into(),
            operators: vec![OperatorState { operator: "correlate".into(), state: vec![id as u8; 500] }],
        }],
    };
    assert_eq!(b.load_part("sluice", "wazuh-alerts[0]").unwrap(), None);
    let both = ["wazuh-alerts[0]".to_string(), "wazuh-alerts[1]".to_string()];
    a.claim_parts("sluice", &both, "a").unwrap();
    assert_eq!(b.load_part("sluice", "wazuh-alerts[0]").unwrap(), None, "a claim holds no state");
    assert_eq!(b.latest_part_id("sluice").unwrap(), None);
    a.save_parts("sluice", &[part(1, "wazuh-alerts[0]"), part(1, "wazuh-alerts[1]")], "a").unwrap();
    a.save_parts("sluice", &[part(2, "wazuh-alerts[0]")], "a").unwrap();
    b.save_parts("other", &[part(5, "wazuh-alerts[0]")], "b").unwrap();
    assert_eq!(b.load_part("sluice", "wazuh-alerts[0]").unwrap(), Some(part(2, "wazuh-alerts[0]")));
    assert_eq!(b.load_part("sluice", "wazuh-alerts[1]").unwrap(), Some(part(1, "wazuh-alerts[1]")));
    assert_eq!(b.latest_part_id("sluice").unwrap(), Some(2));
    // `b` takes partition 0 over: `a`'s writes of it are refused from then
    // on, and nothing of such a write is kept (one transaction).
    b.claim_parts("sluice", &both[..1], "b").unwrap();
    let err = a.save_parts("sluice", &[part(3, "wazuh-alerts[1]"), part(3, "wazuh-alerts[0]")], "a").unwrap_err();
    assert!(err.to_string().contains("wazuh-alerts[0] now belongs to another instance (b)"), "{err}");
    assert_eq!(b.load_part("sluice", "wazuh-alerts[1]").unwrap(), Some(part(1, "wazuh-alerts[1]")));
    b.save_parts("sluice", &[part(3, "wazuh-alerts[0]")], "b").unwrap();
    assert_eq!(a.load_part("sluice", "wazuh-alerts[0]").unwrap(), Some(part(3, "wazuh-alerts[0]")));
    run_sql(
        &pg.url,
        "UPDATE sluice_partition_state SET body = substring(body from 1 for 40) \
         WHERE scope = 'sluice' AND input = 'wazuh-alerts[1]'",
    );
    let err = b.load_part("sluice", "wazuh-alerts[1]").unwrap_err().to_string();
    assert!(err.contains("wazuh-alerts[1]") && err.contains("truncated") && err.contains("--fresh-state"), "{err}");
    a.clear_parts("sluice").unwrap();
    assert_eq!(b.load_part("sluice", "wazuh-alerts[0]").unwrap(), None);
    assert_eq!(a.load_part("other", "wazuh-alerts[0]").unwrap(), Some(part(5, "wazuh-alerts[0]")));
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

/// psql as `url`, running each statement in turn in one session; returns
/// (success, stdout, stderr).
fn psql_session(url: &str, statements: &[&str]) -> (bool, String, String) {
    let mut c = Command::new("psql");
    c.args([url, "-qAt", "-v", "ON_ERROR_STOP=1"]);
    for s in statements {
        c.args(["-c", s]);
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn open_store(service: &str, admin: &str) -> Store {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Store::open_postgres(service, Some(admin)) {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for PostgreSQL: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn case(tenant: &str, id: &str) -> ClusterReport {
    serde_json::from_value(serde_json::json!({
        "cluster_id": id, "version": 1, "idempotency_key": format!("{id}:1"), "tenant": tenant,
        "signature": "s", "score": 80.0, "decision": "escalate", "reason": "test", "breakdown": [],
        "first_seen": "2026-11-23T10:00:00.000Z", "last_seen": "2026-11-23T10:00:00.000Z",
        "entities": {}, "tactics": [], "max_level": 10, "alerts": 1, "duplicates": 0, "rules": [],
        "representatives": []
    }))
    .unwrap()
}

/// The store on PostgreSQL: migrations as the admin, the service as a
/// member of `sluice_service`; row-level security keeps tenants apart and
/// the service role can neither disable nor bypass it.
#[test]
fn the_store_keeps_tenants_apart_with_row_level_security_the_service_cannot_bypass() {
    let Some(pg) = Postgres::start() else { return };
    let _ = connect(&pg.url, "warm-up");
    psql(&pg.url, "CREATE ROLE sluice_app LOGIN");
    let app = pg.url.replace("postgres@", "sluice_app@");
    // The service alone cannot create the schema, and says what to do.
    let err = Store::open_postgres(&app, None).unwrap_err().to_string();
    assert!(err.contains("not migrated") && err.contains("SLUICE_STORE_ADMIN_URL"), "{err}");
    // The migration creates the tables (owned by the admin) and the
    // sluice_service role; the deployer makes the service's login a member.
    drop(open_store(&app, &pg.url));
    psql(&pg.url, "GRANT sluice_service TO sluice_app");
    // From then on the service starts without the admin's URL.
    let store = Store::open_postgres(&app, None).unwrap();
    for (tenant, id) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        let r = case(tenant, id);
        assert!(
            store
                .record(ReportKind::Escalate, &r, &stable_case_json(ReportKind::Escalate, &r), &["webhook"], false, 1)
                .unwrap()
                .0
        );
    }
    // Through the store, one tenant at a time.
    let keys =
        |t: &str| -> Vec<String> { store.outbox_rows(t, status::PENDING).unwrap().into_iter().map(|r| r.1).collect() };
    assert_eq!(keys("acme"), ["a1:1", "a2:1"]);
    assert_eq!(keys("globex"), ["g1:1"]);
    // As the service role, by hand: nothing without a tenant, only that
    // tenant's rows with one.
    let scoped = |tenant: &str, sql: &str| psql_session(&app, &[&format!("SET app.tenant_id = '{tenant}'"), sql]);
    let (ok, out, err) = psql_session(&app, &["SELECT count(*) FROM case_files"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "0", "no tenant set: no rows");
    let (_, out, _) =
        scoped("acme", "SELECT string_agg(idempotency_key, ',' ORDER BY idempotency_key) FROM case_files");
    assert_eq!(out.trim(), "a1:1,a2:1");
    let (_, out, _) = scoped("acme", "SELECT count(*) FROM audit_log WHERE tenant = 'globex'");
    assert_eq!(out.trim(), "0");
    // Writes to another tenant are refused or touch nothing.
    let (ok, _, err) = scoped(
        "acme",
        "INSERT INTO case_files (tenant, idempotency_key, cluster_id, version, kind, score, body, created_us)
         VALUES ('globex', 'x:1', 'x', 1, 'escalate', 1, '{}', 1)",
    );
    assert!(!ok && err.contains("row-level security"), "{err}");
    let (ok, out, err) = scoped(
        "acme",
        "WITH u AS (UPDATE outbox SET status = 'delivered' WHERE tenant = 'globex' RETURNING 1) SELECT count(*) FROM u",
    );
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "0");
    assert_eq!(keys("globex"), ["g1:1"], "globex's case is still pending");
    // The policy cannot be switched off, dropped or bypassed.
    for sql in [
        "ALTER TABLE case_files DISABLE ROW LEVEL SECURITY",
        "ALTER TABLE case_files NO FORCE ROW LEVEL SECURITY",
        "DROP POLICY tenant_isolation ON case_files",
        "ALTER ROLE sluice_app BYPASSRLS",
    ] {
        let (ok, _, err) = psql_session(&app, &[sql]);
        assert!(!ok, "{sql} succeeded as the service role");
        assert!(
            ["must be owner", "permission denied", "must be superuser"].iter().any(|m| err.contains(m)),
            "{sql}: {err}"
        );
    }
    let (ok, _, err) = psql_session(&app, &["SET row_security = off", "SELECT count(*) FROM case_files"]);
    assert!(!ok && err.contains("row-level security"), "row_security = off must not read around the policy: {err}");
    // The audit log is append-only for the service.
    let (ok, _, err) = scoped("acme", "DELETE FROM audit_log");
    assert!(!ok && err.contains("permission denied"), "{err}");
    let (_, out, _) = psql_session(
        &pg.url,
        &["SELECT bool_or(rolbypassrls OR rolsuper) FROM pg_roles WHERE rolname IN ('sluice_service', 'sluice_app')"],
    );
    assert_eq!(out.trim(), "f");
}
