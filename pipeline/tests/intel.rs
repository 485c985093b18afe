//! Threat intel and inventories through the `sluice` binary: a hit
//! escalates with a `threat_intel` line naming the IOC and its source, a
//! tenant's files never score another tenant, and files reload while
//! running (a bad one refused, the set in force kept).

mod common;

use common::cli::{lines_of, sluice, wait_for_all};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// A Wazuh alert: tenant, id, second of the minute, rule level, agent, source ip, user.
fn alert(tenant: &str, id: &str, second: u32, level: u8, agent: &str, ip: &str, user: &str) -> String {
    format!(
        r#"{{"timestamp":"2026-11-01T10:00:{second:02}.000+0000","rule":{{"level":{level},"id":"57{level:02}","description":"rule at level {level}","groups":["sshd"]}},"agent":{{"id":"id-{agent}","name":"{agent}"}},"manager":{{"name":"{tenant}"}},"id":"{id}","data":{{"srcip":"{ip}","dstuser":"{user}"}}}}"#
    ) + "\n"
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

const MISP: &str = r#"{"response": [{"Event": {"id": "77", "info": "Botnet C2", "Attribute": [
    {"type": "ip-dst", "value": "192.0.2.200", "to_ids": true},
    {"type": "comment", "value": "not an IOC"}]}}]}"#;

/// The case files (JSON lines) whose tenant and kind match, by first alert.
fn cases<'a>(lines: &'a [serde_json::Value], tenant: &str, kind: &str) -> Vec<&'a serde_json::Value> {
    lines.iter().filter(|c| c["tenant"] == tenant && c["kind"] == kind).collect()
}

fn line<'a>(case: &'a serde_json::Value, factor: &str) -> Option<&'a serde_json::Value> {
    case["breakdown"].as_array().unwrap().iter().find(|l| l["factor"] == factor)
}

#[test]
fn an_ioc_hit_escalates_a_case_naming_the_ioc_and_its_source_and_tenants_never_mix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let global = write(d, "misp-export.json", MISP);
    let acme_iocs = write(d, "acme-iocs.txt", "# acme's own\n198.51.100.23\n");
    let inventory =
        write(d, "acme.csv", "kind,value,criticality\nhost,dc01,critical\nprivileged_user,administrator,\n");
    let config = write(
        d,
        "sluice.toml",
        &format!(
            "[correlate]\nbaseline_warmup = \"0s\"\nreport_all_closed = true\n\
             [intel]\nfiles = [{global:?}]\n\
             [intel.tenants.acme]\nfiles = [{acme_iocs:?}]\ninventory = [{inventory:?}]\n"
        ),
    );
    let input = [
        alert("acme", "a.1", 0, 10, "web-01", "198.51.100.23", "www"),
        alert("globex", "g.1", 1, 10, "web-01", "198.51.100.23", "www"),
        alert("globex", "g.2", 2, 10, "db-01", "192.0.2.200", "postgres"),
        alert("acme", "a.2", 3, 6, "dc01", "10.0.0.99", r"ACME\\Administrator"),
    ]
    .concat();
    let input = write(d, "alerts.json", &input);
    let cases_path = d.join("cases.ndjson");
    let out = sluice()
        .args(["run", "--input", &input, "--config", &config, "--format", "json", "--show-final"])
        .args(["--output", cases_path.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let printed: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let written: Vec<serde_json::Value> =
        std::fs::read_to_string(&cases_path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();

    // acme's IOC: an escalated case file with a threat_intel line.
    let acme = cases(&written, "acme", "escalate");
    assert_eq!(acme.len(), 1, "{written:#?}");
    let hit = line(acme[0], "threat_intel").expect("a threat_intel line");
    let detail = hit["detail"].as_str().unwrap();
    assert!(detail.contains("ip 198.51.100.23 is an IOC") && detail.contains("acme-iocs.txt"), "{detail}");
    // The global MISP IOC scores globex, named with its event.
    let globex = cases(&written, "globex", "escalate");
    assert_eq!(globex.len(), 1, "only g.2 escalates: {written:#?}");
    let detail = line(globex[0], "threat_intel").unwrap()["detail"].as_str().unwrap();
    assert!(detail.contains("192.0.2.200") && detail.contains("MISP event 77: Botnet C2"), "{detail}");
    // acme's IOC never scores globex: the same ip there is no hit.
    let g1 = printed
        .iter()
        .find(|c| c["kind"] == "close" && c["tenant"] == "globex" && c["entities"]["host"][0] == "web-01")
        .expect("g.1's final state");
    assert!(line(g1, "threat_intel").is_none(), "{g1:#}");
    assert_eq!(g1["decision"], "suppress");
    // The critical host and the privileged user: named, and over the floor
    // the cluster is at least review.
    let dc =
        printed.iter().find(|c| c["kind"] == "close" && c["entities"]["host"][0] == "dc01").expect("a.2's final state");
    assert_eq!(line(dc, "critical_asset").unwrap()["points"], 30.0, "{dc:#}");
    assert!(line(dc, "privileged_user").unwrap()["detail"].as_str().unwrap().contains("Administrator"));
    assert_eq!(dc["decision"], "review", "{dc:#}");
    // A bad file stops the start, named with its line.
    write(d, "acme-iocs.txt", "198.51.100.23\nnot an ioc\n");
    let out = sluice().args(["run", "--input", &input, "--config", &config]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("acme-iocs.txt: line 2: \"not an ioc\" is not an ip, domain, url or hash"), "{stderr}");
    let out = sluice().args(["validate", &config]).output().unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("acme-iocs.txt: line 2"));
}

#[test]
fn intel_reloads_on_change_and_sighup_and_a_bad_file_keeps_the_set_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let iocs = write(d, "acme-iocs.txt", "203.0.113.1\n");
    let config = write(
        d,
        "sluice.toml",
        &format!(
            "[correlate]\nbaseline_warmup = \"0s\"\nreport_all_closed = true\n\
             [intel.tenants.acme]\nfiles = [{iocs:?}]\n"
        ),
    );
    let mut child = sluice()
        .env("SLUICE_LOG", "info")
        .args(["run", "--input", "-", "--format", "json", "--show-final", "--config", &config])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, err) = (lines_of(child.stdout.take().unwrap()), lines_of(child.stderr.take().unwrap()));
    let mut log = Vec::new();
    let stop = |child: &mut std::process::Child, log: &[String], why: &str| -> ! {
        let _ = child.kill();
        panic!("{why}; log:\n{}", log.join("\n"));
    };
    if !wait_for_all(&err, &mut log, &["intel loaded", "1 ips"]) {
        stop(&mut child, &log, "the intel was not loaded at start");
    }
    // A bad file: refused with the file, line and reason.
    write(d, "acme-iocs.txt", "198.51.100.23\nnot an ioc\n");
    if !wait_for_all(&err, &mut log, &["intel not reloaded", "acme-iocs.txt: line 2", "an intel file changed"]) {
        stop(&mut child, &log, "a bad intel file was not refused");
    }
    // Fixed: loaded in full.
    write(d, "acme-iocs.txt", "198.51.100.23\n");
    if !wait_for_all(&err, &mut log, &["intel reloaded", "an intel file changed"]) {
        stop(&mut child, &log, "a changed intel file was not loaded");
    }
    // SIGHUP reloads too.
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    if !wait_for_all(&err, &mut log, &["intel reloaded", "SIGHUP"]) {
        stop(&mut child, &log, "SIGHUP did not reload the intel");
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(alert("acme", "r.1", 0, 10, "web-01", "198.51.100.23", "www").as_bytes()).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    log.extend(err.iter());
    assert!(status.success(), "{log:?}");
    let seen: Vec<serde_json::Value> = out.iter().map(|l| serde_json::from_str(&l).unwrap()).collect();
    let last = seen.last().expect("the cluster's final state");
    let hit = line(last, "threat_intel").unwrap_or_else(|| panic!("the reloaded IOC counts: {last:#}"));
    assert!(hit["detail"].as_str().unwrap().contains("198.51.100.23"), "{hit}");
}
