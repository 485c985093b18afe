//! The Wazuh rules the generator emits, embedded from the real ruleset.
//!
//! `wazuh-rules.ndjson` holds exactly the rules listed in [`USED_RULES`]
//! (regenerate it with `extract_rules.py`). It is parsed once, when a
//! [`super::Generator`] is built, into pre-rendered fragments of the alert's
//! `rule` object so that writing an alert is a few string copies.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Deserialize;

use super::json::{esc, push_u64};
use super::mitre;

// The extraction script reads this block: keep one list, ids only.
// BEGIN USED_RULES
pub(crate) const USED_RULES: &[u32] = &[
    // syslog: sshd, PAM, sudo, accounts, cron, packages, kernel, systemd
    1002, 2833, 2902, 2932, 5104, 5402, 5403, 5501, 5502, 5706, 5710, 5712, 5715, 5716, 5720, 5901, 5902, 40704,
    52002, // Wazuh: syscheck (FIM), netstat, auditd commands
    533, 550, 553, 554, 80792, // web access logs
    31101, 31103, 31106, 31151, 31164, // Suricata, VirusTotal, MS Graph
    86601, 87105, 99548, // Windows security channel and Sysmon
    60106, 60122, 60137, 60204, 60228, 92052, 92066, 92067, 92068, 92200, 92213, 92652, 92653, 92657,
];
// END USED_RULES

static RULES_NDJSON: &str = include_str!("wazuh-rules.ndjson");

#[derive(Debug, Deserialize)]
struct RawRule {
    id: String,
    level: u8,
    description: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    compliance: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    mitre_ids: Vec<String>,
    frequency: Option<u32>,
    #[serde(default)]
    options: Vec<String>,
}

/// A piece of a rule description: literal text (already JSON-escaped) or a
/// `$(field)` placeholder that Wazuh fills from the decoded event.
#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Field(String),
}

/// One rule, pre-rendered.
#[derive(Debug)]
pub(crate) struct Rule {
    pub id: u32,
    #[cfg_attr(not(test), allow(dead_code))]
    pub level: u8,
    pub no_full_log: bool,
    desc: Vec<Seg>,
    /// `{"level":5,"description":"`
    head: String,
    /// `","id":"5710","mitre":{…},"frequency":8,"firedtimes":`
    mid: String,
    /// `,"mail":false,"groups":[…],"gdpr":[…],…}`
    tail: String,
}

/// Values for `$(field)` placeholders, kept in one reusable buffer.
#[derive(Debug, Default)]
pub(crate) struct Fields {
    buf: String,
    spans: Vec<(&'static str, usize, usize)>,
}

impl Fields {
    pub(crate) fn clear(&mut self) {
        self.buf.clear();
        self.spans.clear();
    }

    pub(crate) fn set(&mut self, name: &'static str, value: &str) {
        let start = self.buf.len();
        self.buf.push_str(value);
        self.spans.push((name, start, self.buf.len()));
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.spans.iter().rev().find(|s| s.0 == name).map(|s| &self.buf[s.1..s.2])
    }
}

impl Rule {
    /// Appends the whole `rule` object.
    pub(crate) fn write(&self, out: &mut String, fired: u64, fields: &Fields) {
        out.push_str(&self.head);
        for seg in &self.desc {
            match seg {
                Seg::Lit(s) => out.push_str(s),
                // Wazuh substitutes an empty string for a field the event lacks.
                Seg::Field(f) => esc(out, fields.get(f).unwrap_or("")),
            }
        }
        out.push_str(&self.mid);
        push_u64(out, fired);
        out.push_str(&self.tail);
    }

    /// The names of the `$(field)` placeholders of the description.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.desc.iter().filter_map(|s| match s {
            Seg::Field(f) => Some(f.as_str()),
            Seg::Lit(_) => None,
        })
    }
}

/// Splits a description into literal text and `$(field)` placeholders.
fn parse_description(d: &str) -> Vec<Seg> {
    let mut segs = Vec::new();
    let mut rest = d;
    while let Some(p) = rest.find("$(") {
        let Some(close) = rest[p..].find(')') else {
            break;
        };
        if p > 0 {
            let mut lit = String::new();
            esc(&mut lit, &rest[..p]);
            segs.push(Seg::Lit(lit));
        }
        segs.push(Seg::Field(rest[p + 2..p + close].to_string()));
        rest = &rest[p + close + 1..];
    }
    if !rest.is_empty() {
        let mut lit = String::new();
        esc(&mut lit, rest);
        segs.push(Seg::Lit(lit));
    }
    segs
}

fn json_str_array(out: &mut String, items: impl IntoIterator<Item = impl AsRef<str>>) {
    out.push('[');
    for (i, it) in items.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        esc(out, it.as_ref());
        out.push('"');
    }
    out.push(']');
}

fn build(raw: RawRule) -> Result<Rule, String> {
    let id: u32 = raw.id.parse().map_err(|_| format!("rule id {:?} is not a number", raw.id))?;
    let mut head = String::new();
    let _ = write!(head, "{{\"level\":{},\"description\":\"", raw.level);
    let mut mid = String::new();
    let _ = write!(mid, "\",\"id\":\"{id}\"");
    if !raw.mitre_ids.is_empty() {
        let mut tactics: Vec<&str> = Vec::new();
        let mut names = Vec::new();
        for t in &raw.mitre_ids {
            let (_, name, tacs) =
                mitre::technique(t).ok_or_else(|| format!("rule {id}: MITRE id {t} missing from mitre.rs"))?;
            names.push(*name);
            for tac in *tacs {
                if !tactics.contains(tac) {
                    tactics.push(tac);
                }
            }
        }
        mid.push_str(",\"mitre\":{\"id\":");
        json_str_array(&mut mid, &raw.mitre_ids);
        mid.push_str(",\"tactic\":");
        json_str_array(&mut mid, &tactics);
        mid.push_str(",\"technique\":");
        json_str_array(&mut mid, &names);
        mid.push('}');
    }
    if let Some(f) = raw.frequency {
        let _ = write!(mid, ",\"frequency\":{f}");
    }
    mid.push_str(",\"firedtimes\":");
    let mut tail = String::from(",\"mail\":false,\"groups\":");
    json_str_array(&mut tail, &raw.groups);
    // Wazuh writes the compliance arrays in key order (gdpr, gpg13, hipaa,
    // nist_800_53, pci_dss, tsc); the BTreeMap keeps that order.
    for (k, v) in &raw.compliance {
        let _ = write!(tail, ",\"{k}\":");
        json_str_array(&mut tail, v);
    }
    tail.push('}');
    Ok(Rule {
        id,
        level: raw.level,
        no_full_log: raw.options.iter().any(|o| o == "no_full_log"),
        desc: parse_description(&raw.description),
        head,
        mid,
        tail,
    })
}

/// The embedded rules, sorted by id.
#[derive(Debug)]
pub(crate) struct RuleSet {
    rules: Vec<Rule>,
}

impl RuleSet {
    /// Parses the embedded index. An error means the embedded file and
    /// `USED_RULES` / `mitre.rs` disagree: a bug in this crate, not in the
    /// caller's input.
    pub(crate) fn load() -> Result<RuleSet, String> {
        let mut rules = Vec::new();
        for (n, line) in RULES_NDJSON.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let raw: RawRule =
                serde_json::from_str(line).map_err(|e| format!("wazuh-rules.ndjson line {}: {e}", n + 1))?;
            rules.push(build(raw)?);
        }
        rules.sort_by_key(|r| r.id);
        let set = RuleSet { rules };
        for id in USED_RULES {
            if set.index(*id).is_none() {
                return Err(format!("rule {id} is used but missing from wazuh-rules.ndjson (run extract_rules.py)"));
            }
        }
        Ok(set)
    }

    pub(crate) fn index(&self, id: u32) -> Option<usize> {
        self.rules.binary_search_by_key(&id, |r| r.id).ok()
    }

    /// The position of a rule (for per-rule counters) and the rule.
    ///
    /// # Panics
    /// If `id` is not in [`USED_RULES`]: a generator bug caught by the tests.
    pub(crate) fn get(&self, id: u32) -> (usize, &Rule) {
        match self.index(id) {
            Some(i) => (i, &self.rules[i]),
            None => panic!("generator emitted rule {id}, which is not in USED_RULES"),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rules.len()
    }

    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_rules_cover_used_rules_and_mitre() {
        let set = RuleSet::load().unwrap();
        assert_eq!(set.len(), USED_RULES.len(), "embedded file has exactly the used rules");
        let (_, r) = set.get(5712);
        assert_eq!(r.level, 10);
        let mut out = String::new();
        r.write(&mut out, 1, &Fields::default());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        // Same shape as the real sample alert.
        assert_eq!(v["id"], "5712");
        assert_eq!(v["mitre"]["tactic"][0], "Credential Access");
        assert_eq!(v["mitre"]["technique"][0], "Brute Force");
        assert_eq!(v["frequency"], 8);
        assert_eq!(v["mail"], false);
        assert_eq!(v["pci_dss"][0], "11.4");
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), 13);
    }

    #[test]
    fn placeholders_are_filled() {
        let set = RuleSet::load().unwrap();
        let (_, r) = set.get(92657);
        let mut f = Fields::default();
        f.set("win.eventdata.subjectDomainName", "ACME");
        f.set("win.eventdata.targetUserName", "jdoe");
        f.set("win.eventdata.workstationName", "ACME-WS-001");
        let mut out = String::new();
        r.write(&mut out, 3, &f);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let d = v["description"].as_str().unwrap();
        assert!(d.starts_with("Successful Remote Logon Detected - User:ACME\\jdoe - NTLM"), "{d}");
        assert!(d.contains("Verify that ACME-WS-001 is allowed"));
        assert_eq!(
            v["mitre"]["tactic"],
            serde_json::json!([
                "Defense Evasion",
                "Lateral Movement",
                "Persistence",
                "Privilege Escalation",
                "Initial Access"
            ])
        );
        assert_eq!(v["firedtimes"], 3);
    }

    #[test]
    fn descriptions_parse() {
        let s = parse_description("a $(x.y) b $(z)");
        assert_eq!(s.len(), 4);
        assert!(matches!(&s[1], Seg::Field(f) if f == "x.y"));
    }
}
