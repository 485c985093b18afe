//! The status page in a real headless Chromium (Debian's `chromium`,
//! installed by `scripts/install-servers`): `sluice run` follows a file
//! with the admin server on a free port and a token; the page, opened with
//! the token, must render the running pipeline's data (tenants, charts, the
//! top escalated clusters). A screenshot is written to
//! `target/test-artifacts/status-page.png`.
//!
//! Without Chromium the test is skipped with a message, except under
//! `CI=true`, where it fails.

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "status-page-test-token";

struct Sluice(Child);

impl Drop for Sluice {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium() -> Option<PathBuf> {
    let found = ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("chromium is not installed: run scripts/install-servers (CI must not skip the browser test)");
        }
        eprintln!("skipping: chromium is not installed (scripts/install-servers installs it)");
    }
    found
}

fn get(url: &str) -> Option<serde_json::Value> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent.get(url).header("Authorization", format!("Bearer {TOKEN}")).call().ok()?;
    serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
}

/// Runs headless Chromium on `url` with `extra` arguments; returns stdout.
fn browse(chromium: &Path, profile: &Path, url: &str, extra: &[&str]) -> String {
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,1100",
            // Let the page fetch and draw before the DOM is taken.
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_status_page_shows_a_running_pipeline() {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.json");
    let sluice = env!("CARGO_BIN_EXE_sluice");
    let status = Command::new(sluice)
        .args(["generate", "--tenants", "2", "--alerts", "200000", "--seed", "7", "-o"])
        .arg(&alerts)
        .status()
        .unwrap();
    assert!(status.success());
    let port = common::cli::free_port();
    let config = dir.path().join("sluice.toml");
    let mut f = std::fs::File::create(&config).unwrap();
    writeln!(f, "[admin]\nlisten = \"127.0.0.1:{port}\"\ntoken_env = \"SLUICE_TEST_STATUS_TOKEN\"").unwrap();
    drop(f);
    let _run = Sluice(
        Command::new(sluice)
            .args(["run", "--follow", "--config"])
            .arg(&config)
            .arg("--input")
            .arg(&alerts)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--dead-letters")
            .arg(dir.path().join("dead.ndjson"))
            .current_dir(dir.path())
            .env("SLUICE_TEST_STATUS_TOKEN", TOKEN)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The pipeline is running (it follows the file) once it has read the
    // whole file and escalated; the page then has data to show.
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(s) = get(&format!("{base}/api/v1/status"))
            && s["read"] == 200_000
            && s["top_clusters"].as_array().is_some_and(|c| !c.is_empty())
        {
            break;
        }
        assert!(Instant::now() < deadline, "sluice did not read the file and escalate within 2 minutes");
        std::thread::sleep(Duration::from_millis(200));
    }

    let profile = dir.path().join("chromium-profile");
    let url = format!("{base}/#token={TOKEN}");
    let dom = browse(&chromium, &profile, &url, &["--dump-dom"]);
    assert!(dom.contains("data-loaded=\"true\""), "the page did not load its data:\n{dom}");
    assert!(dom.contains("<div id=\"error\"></div>"), "the page reported an error");
    // The numbers and charts come from the running pipeline.
    assert!(dom.contains("<b id=\"read-total\">200k</b>"), "alerts read not shown");
    for tenant in ["acme", "globex"] {
        assert!(dom.contains(&format!(">{tenant}</text>")), "tenant {tenant} missing from the per-tenant chart");
    }
    let chart = dom.split("id=\"tenant-bars\"").nth(1).unwrap().split("</svg>").next().unwrap();
    assert!(chart.matches("<rect").count() >= 4, "alerts in and cases out bars for both tenants");
    let latency = dom.split("id=\"latency\"").nth(1).unwrap().split("</svg>").next().unwrap();
    assert!(latency.contains("<rect"), "the latency histogram has bars");
    let table = dom.split("id=\"top-clusters\"").nth(1).unwrap().split("</table>").next().unwrap();
    assert!(table.matches("<tr>").count() >= 2, "the top clusters table has rows");
    assert!(table.contains("max_level +"), "each top cluster shows its breakdown");
    assert!(dom.contains("class=\"badge ready\""), "the pipeline is ready while it follows the file");
    // The token stays out of the address bar.
    assert!(!dom.contains(TOKEN));

    // The screenshot, as a test artifact.
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    browse(&chromium, &profile, &url, &[&format!("--screenshot={}", shot.display())]);
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 20_000, "a real screenshot ({} bytes)", png.len());
    eprintln!("status page screenshot: {}", shot.display());
}
