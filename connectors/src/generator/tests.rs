//! Stream-level tests: validity and shape of every line, determinism,
//! exact counts, campaign coverage, labels, rules, timestamps.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde_json::Value;

use super::rules::{RuleSet, USED_RULES};
use super::*;

/// Generates a stream; returns (lines as text, labels).
fn generate(cfg: GeneratorConfig) -> (Vec<u8>, Vec<Label>) {
    let mut g = Generator::new(cfg).unwrap();
    let mut out = Vec::new();
    let mut labels = Vec::new();
    while let Some(l) = g.next_into(&mut out) {
        if let Some(l) = l {
            labels.push(l);
        }
    }
    (out, labels)
}

fn cfg(alerts: u64, tenants: usize, seed: u64) -> GeneratorConfig {
    GeneratorConfig { alerts, tenants, seed, ..GeneratorConfig::default() }
}

fn parse(out: &[u8]) -> Vec<Value> {
    std::str::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("invalid JSON ({e}): {l}")))
        .collect()
}

/// One shared 120k-alert stream for the heavier checks.
fn big() -> &'static (Vec<u8>, Vec<Label>, Vec<Value>) {
    static BIG: std::sync::OnceLock<(Vec<u8>, Vec<Label>, Vec<Value>)> = std::sync::OnceLock::new();
    BIG.get_or_init(|| {
        let (out, labels) = generate(cfg(120_000, 5, 42));
        let values = parse(&out);
        (out, labels, values)
    })
}

fn s<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

#[test]
fn every_line_is_a_wazuh_alert() {
    let (out, _, values) = big();
    assert!(out.ends_with(b"\n"));
    assert_eq!(values.len(), 120_000);
    for v in values {
        let line = v.to_string();
        for key in ["timestamp", "rule", "agent", "manager", "id", "decoder", "location"] {
            assert!(v.get(key).is_some(), "missing {key}: {line}");
        }
        let ts = s(v, &["timestamp"]).unwrap();
        assert_eq!(ts.len(), 28, "{ts}");
        assert!(ts.ends_with("+0000") && ts.as_bytes()[10] == b'T' && ts.as_bytes()[19] == b'.');
        let rule = &v["rule"];
        assert!(rule["level"].is_u64() && rule["firedtimes"].is_u64());
        assert_eq!(rule["mail"], false);
        assert!(rule["groups"].as_array().is_some_and(|g| !g.is_empty()));
        let desc = rule["description"].as_str().unwrap();
        assert!(!desc.contains("$("), "unfilled placeholder: {desc}");
        if let Some(m) = rule.get("mitre") {
            let n = m["id"].as_array().unwrap().len();
            assert_eq!(m["technique"].as_array().unwrap().len(), n);
            assert!(!m["tactic"].as_array().unwrap().is_empty());
        }
        let tenant = s(v, &["manager", "name"]).unwrap();
        assert_eq!(s(v, &["agent", "labels", "tenant"]), Some(tenant));
        let agent_id = s(v, &["agent", "id"]).unwrap();
        assert_eq!(agent_id.len(), 3);
        assert!(s(v, &["decoder", "name"]).is_some_and(|d| !d.is_empty()));
        let id = s(v, &["id"]).unwrap();
        let (sec, off) = id.split_once('.').unwrap();
        assert!(sec.parse::<u64>().is_ok() && off.parse::<u64>().is_ok());
        if v.get("predecoder").is_some() {
            let host = s(v, &["predecoder", "hostname"]).unwrap();
            assert_eq!(Some(host), s(v, &["agent", "name"]));
            assert!(s(v, &["full_log"]).unwrap().contains(host));
        }
    }
}

#[test]
fn rules_come_from_the_embedded_index_with_their_levels() {
    let (_, _, values) = big();
    let rules = RuleSet::load().unwrap();
    let mut seen = BTreeSet::new();
    for v in values {
        let id: u32 = s(v, &["rule", "id"]).unwrap().parse().unwrap();
        assert!(USED_RULES.contains(&id));
        let idx = rules.index(id).unwrap();
        let level = rules.iter().nth(idx).unwrap().level;
        assert_eq!(v["rule"]["level"].as_u64(), Some(u64::from(level)), "rule {id}");
        seen.insert(id);
    }
    // The noise and the campaigns exercise nearly every rule.
    assert!(seen.len() >= USED_RULES.len() - 4, "only {} of {} rules used: {seen:?}", seen.len(), USED_RULES.len());
}

#[test]
fn no_placeholder_is_left_for_any_rule() {
    let rules = RuleSet::load().unwrap();
    let fields: Vec<String> =
        rules.iter().flat_map(|r| r.placeholders().map(str::to_string).collect::<Vec<_>>()).collect();
    assert!(fields.iter().any(|f| f == "win.eventdata.targetUserName"));
}

#[test]
fn same_seed_same_bytes_other_seed_differs() {
    let a = generate(cfg(20_000, 3, 7)).0;
    let b = generate(cfg(20_000, 3, 7)).0;
    let c = generate(cfg(20_000, 3, 8)).0;
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn count_is_exact() {
    for n in [0u64, 1, 2, 999, 12_345] {
        let (out, _) = generate(cfg(n, 2, 1));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count() as u64, n);
    }
    let mut g = Generator::new(cfg(10, 1, 1)).unwrap();
    let mut out = Vec::new();
    while g.next_into(&mut out).is_some() {}
    assert_eq!(g.emitted(), 10);
    assert!(g.next_into(&mut out).is_none());
}

#[test]
fn every_tenant_gets_every_kind_with_every_step() {
    let (_, labels, _) = big();
    let g = Generator::new(cfg(120_000, 5, 42)).unwrap();
    for tenant in g.tenant_names() {
        for kind in CampaignKind::all() {
            let steps: BTreeSet<u8> =
                labels.iter().filter(|l| &l.tenant == tenant && l.kind == kind).map(|l| l.step).collect();
            let want: BTreeSet<u8> = (1..=kind.step_names().len() as u8).collect();
            assert_eq!(steps, want, "{tenant} {kind}");
        }
    }
    // Every campaign is complete: all its steps are present.
    let mut by_campaign: BTreeMap<&str, (CampaignKind, BTreeSet<u8>)> = BTreeMap::new();
    for l in labels {
        let e = by_campaign.entry(&l.campaign).or_insert((l.kind, BTreeSet::new()));
        assert_eq!(e.0, l.kind);
        e.1.insert(l.step);
        assert_eq!(l.step_name, l.kind.step_names()[usize::from(l.step) - 1]);
        assert!(l.campaign.starts_with(&format!("{}/c", l.tenant)));
    }
    assert_eq!(by_campaign.len(), 30);
    for (id, (kind, steps)) in by_campaign {
        assert_eq!(steps.len(), kind.step_names().len(), "{id}");
    }
}

#[test]
fn labels_point_at_unique_alerts_that_exist() {
    let (_, labels, values) = big();
    let mut ids: HashMap<(&str, &str), &Value> = HashMap::new();
    for v in values {
        let key = (s(v, &["manager", "name"]).unwrap(), s(v, &["id"]).unwrap());
        assert!(ids.insert(key, v).is_none(), "duplicate alert id {key:?}");
    }
    let mut seen = HashSet::new();
    for l in labels {
        assert!(seen.insert((&l.tenant, &l.alert_id)), "label twice: {l:?}");
        let v = ids.get(&(l.tenant.as_str(), l.alert_id.as_str())).unwrap_or_else(|| panic!("no alert for {l:?}"));
        assert_eq!(s(v, &["manager", "name"]), Some(l.tenant.as_str()));
    }
    // Campaigns are a small fraction of the stream.
    let frac = labels.len() as f64 / values.len() as f64;
    assert!(frac > 0.002 && frac < 0.05, "{frac}");
}

#[test]
fn labels_serialize_as_ndjson() {
    let (mut a, mut l) = (Vec::new(), Vec::new());
    let mut calls = 0;
    let stats = write_stream(cfg(30_000, 2, 3), &mut a, &mut l, |_| calls += 1).unwrap();
    assert_eq!(stats.alerts, 30_000);
    assert_eq!(stats.campaigns, 12);
    let labels: Vec<Label> =
        std::str::from_utf8(&l).unwrap().lines().map(|x| serde_json::from_str(x).unwrap()).collect();
    assert_eq!(labels.len() as u64, stats.campaign_alerts);
    assert_eq!(calls, 0);
    let v: Value = serde_json::from_str(std::str::from_utf8(&l).unwrap().lines().next().unwrap()).unwrap();
    assert!(v["kind"].as_str().is_some_and(|k| CampaignKind::all().iter().any(|c| c.as_str() == k)));
    assert_eq!(a, generate(cfg(30_000, 2, 3)).0);
}

#[test]
fn windows_agents_carry_data_win_and_fim_carries_syscheck() {
    let (_, _, values) = big();
    let g = Generator::new(cfg(120_000, 5, 42)).unwrap();
    let windows_hosts: HashSet<&str> =
        g.tenants.iter().flat_map(|t| t.agents.iter().filter(|a| a.is_windows()).map(|a| a.name.as_str())).collect();
    let (mut win, mut fim) = (0, 0);
    for v in values {
        let agent = s(v, &["agent", "name"]).unwrap();
        let windows_host = windows_hosts.contains(agent);
        let decoder = s(v, &["decoder", "name"]).unwrap();
        if decoder == "windows_eventchannel" {
            win += 1;
            assert!(windows_host, "{agent}");
            let w = &v["data"]["win"];
            assert!(w["system"]["eventID"].is_string() && w["system"]["computer"].is_string(), "{v}");
            assert!(w["eventdata"].is_object());
            assert_eq!(s(v, &["location"]), Some("EventChannel"));
        } else if windows_host && v["rule"]["id"] != "87105" && v["rule"]["id"] != "554" {
            panic!("Windows agent without data.win: {v}");
        }
        let rule = s(v, &["rule", "id"]).unwrap();
        if matches!(rule, "550" | "553" | "554") {
            fim += 1;
            let sc = &v["syscheck"];
            assert!(sc["path"].is_string() && sc["sha256_after"].as_str().is_some_and(|h| h.len() == 64), "{v}");
            let event = sc["event"].as_str().unwrap();
            assert_eq!(
                event,
                match rule {
                    "550" => "modified",
                    "553" => "deleted",
                    _ => "added",
                }
            );
            assert!(decoder.starts_with("syscheck_"));
            assert_eq!(s(v, &["location"]), Some("syscheck"));
        }
        if rule == "31101" || rule == "31151" {
            assert!(v["data"]["url"].is_string() && v["data"]["id"].is_string() && v["data"]["srcip"].is_string());
        }
    }
    assert!(win > 1000 && fim > 10, "win {win} fim {fim}");
}

#[test]
fn timestamps_mostly_ordered_with_bounded_lateness() {
    let (_, _, values) = big();
    let start = GeneratorConfig::default().start_ms;
    let mut max = i64::MIN;
    let mut late = 0;
    let mut first = true;
    for v in values {
        let ts = parse_ts(s(v, &["timestamp"]).unwrap());
        if first {
            assert_eq!(ts, start);
            first = false;
        }
        assert!(ts >= start);
        if ts < max {
            late += 1;
            assert!(max - ts <= 5 * 60_000, "{} ms late", max - ts);
        }
        max = max.max(ts);
        // The id's seconds are the timestamp's.
        let sec: i64 = s(v, &["id"]).unwrap().split('.').next().unwrap().parse().unwrap();
        assert_eq!(sec, ts.div_euclid(1000));
    }
    let frac = f64::from(late) / values.len() as f64;
    assert!(frac > 0.005 && frac < 0.05, "late fraction {frac}");
    // The stream spans about alerts / rate seconds of event time.
    let span = (max - start) as f64 / 1000.0;
    assert!((1000.0..1600.0).contains(&span), "span {span} s for 120k alerts at 100/s");
}

fn parse_ts(t: &str) -> i64 {
    let n = |a: usize, b: usize| t[a..b].parse::<u32>().unwrap();
    civil::ms_from_civil(i64::from(n(0, 4)), n(5, 7), n(8, 10), n(11, 13), n(14, 16), n(17, 19)) + i64::from(n(20, 23))
}

#[test]
fn campaign_entities_follow_their_story() {
    let (_, labels, values) = big();
    let by_id: HashMap<(&str, &str), &Value> =
        values.iter().map(|v| ((s(v, &["manager", "name"]).unwrap(), s(v, &["id"]).unwrap()), v)).collect();
    let mut attacker_by_campaign: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for l in labels {
        let v = by_id[&(l.tenant.as_str(), l.alert_id.as_str())];
        let rule = s(v, &["rule", "id"]).unwrap();
        match (l.kind, l.step) {
            (CampaignKind::SshBruteforce, 1) => assert!(rule == "5710" || rule == "5716"),
            (CampaignKind::SshBruteforce, 2) => {
                assert!(rule == "5712" || rule == "5720");
                assert!(v["previous_output"].as_str().is_some_and(|p| p.lines().count() == 7));
            }
            (CampaignKind::WebExploit, 3) => {
                assert_eq!(rule, "554");
                assert!(s(v, &["syscheck", "path"]).unwrap().starts_with("/var/www/html/uploads/"));
            }
            (CampaignKind::PasswordSpray, 2) => assert_eq!(rule, "60204"),
            (CampaignKind::MalwareSpread, 2) => {
                assert_eq!(rule, "87105");
                let src = s(v, &["data", "virustotal", "source", "alert_id"]).unwrap();
                assert!(by_id.contains_key(&(l.tenant.as_str(), src)), "VirusTotal refers to a real FIM alert");
            }
            (CampaignKind::DataExfiltration, 3) => assert!(rule == "86601" || rule == "99548"),
            _ => {}
        }
        for ip in [s(v, &["data", "srcip"]), s(v, &["data", "win", "eventdata", "ipAddress"])].into_iter().flatten() {
            if !ip.starts_with("10.") && ip != "-" && ip != "127.0.0.1" {
                attacker_by_campaign.entry(&l.campaign).or_default().insert(ip.to_string());
            }
        }
    }
    let mut all = BTreeSet::new();
    for (c, ips) in &attacker_by_campaign {
        assert_eq!(ips.len(), 1, "{c}: {ips:?}");
        assert!(all.insert(ips.iter().next().unwrap().clone()), "attacker IP reused by {c}");
    }
}

#[test]
fn config_is_validated() {
    let err = Generator::new(GeneratorConfig { tenants: 0, rate: f64::NAN, ..Default::default() }).unwrap_err();
    match err {
        GeneratorError::InvalidConfig(p) => assert_eq!(p.len(), 2),
        e => panic!("{e}"),
    }
    assert!(Generator::new(GeneratorConfig { rate: 0.0, ..Default::default() }).is_err());
    assert!(Generator::new(GeneratorConfig { rate: -1.0, ..Default::default() }).is_err());
    assert!(Generator::new(GeneratorConfig { rate: f64::INFINITY, ..Default::default() }).is_err());
}

#[test]
fn many_tenants_and_few_alerts() {
    let (out, labels) = generate(cfg(5_000, 12, 5));
    let values = parse(&out);
    assert_eq!(values.len(), 5_000);
    let tenants: BTreeSet<&str> = values.iter().map(|v| s(v, &["manager", "name"]).unwrap()).collect();
    assert!(tenants.contains("tenant-11") && tenants.contains("acme"));
    // Campaigns are capped at half the stream.
    assert!(labels.len() <= 2_500);
}

#[test]
fn kinds_serialize_snake_case() {
    assert_eq!(serde_json::to_string(&CampaignKind::SshBruteforce).unwrap(), "\"ssh_bruteforce\"");
    assert_eq!(CampaignKind::DataExfiltration.to_string(), "data_exfiltration");
    for k in CampaignKind::all() {
        assert_eq!(serde_json::to_string(&k).unwrap(), format!("\"{k}\""));
    }
}

#[test]
fn the_recurring_scan_sweeps_the_same_two_servers_each_period_unlabelled() {
    // 40k alerts at 4/s: about 2.8 hours of event time; a sweep every 30 min.
    let config = GeneratorConfig { rate: 4.0, recurring_scan: Some(30 * 60_000), ..cfg(40_000, 2, 5) };
    let (out, labels) = generate(config.clone());
    let labelled: HashSet<&str> = labels.iter().map(|l| l.alert_id.as_str()).collect();
    let scans: Vec<Value> = parse(&out)
        .into_iter()
        .filter(|v| s(v, &["full_log"]).is_some_and(|l| l.contains("Nessus SOAP") || l.contains(" from 10.")))
        .filter(|v| s(v, &["data", "srcip"]).is_some_and(|ip| ip.contains(".250.")))
        .collect();
    assert!(!scans.is_empty(), "no scan alert");
    assert!(scans.iter().all(|v| !labelled.contains(s(v, &["id"]).unwrap())), "scans are not campaigns");
    // Per tenant: whole sweeps of 18 alerts, on the same two servers, with
    // the same rules every time.
    let mut by_tenant: BTreeMap<&str, Vec<&Value>> = BTreeMap::new();
    for v in &scans {
        by_tenant.entry(s(v, &["manager", "name"]).unwrap()).or_default().push(v);
    }
    assert_eq!(by_tenant.len(), 2);
    for (tenant, alerts) in by_tenant {
        let sweeps: Vec<&[&Value]> = alerts.chunks(18).collect();
        assert!(sweeps.len() >= 3, "{tenant}: {} sweeps", sweeps.len());
        let shape = |sweep: &[&Value]| -> Vec<(String, String)> {
            sweep
                .iter()
                .map(|v| (s(v, &["rule", "id"]).unwrap().to_string(), s(v, &["agent", "name"]).unwrap().to_string()))
                .collect()
        };
        for sweep in sweeps.iter().filter(|s| s.len() == 18) {
            assert_eq!(shape(sweep), shape(sweeps[0]), "{tenant}: every sweep is the same script");
        }
        let hosts: BTreeSet<&str> = alerts.iter().map(|v| s(v, &["agent", "name"]).unwrap()).collect();
        assert!(hosts.len() <= 2, "{tenant}: {hosts:?}");
    }
    // Off by default: no scan at all.
    let (plain, _) = generate(GeneratorConfig { recurring_scan: None, ..config });
    assert!(!std::str::from_utf8(&plain).unwrap().contains("Nessus SOAP"));
}
