//! A tenant's asset and identity inventory: hosts (by name or ip) with a
//! criticality, privileged users, known scanners (ips or host names) and
//! service accounts, from CSV or JSON.
//!
//! CSV has a header row; the columns are `kind`, `value` and, for hosts,
//! `criticality` (other columns, e.g. `note`, are ignored):
//!
//! ```text
//! kind,value,criticality
//! host,dc01,critical
//! host,10.0.0.5,high
//! privileged_user,administrator,
//! scanner,10.0.9.9,
//! service_account,svc_backup,
//! ```
//!
//! JSON is one object; every key is optional:
//!
//! ```json
//! {"hosts": [{"name": "dc01", "ip": "10.0.0.5", "criticality": "critical"}],
//!  "privileged_users": ["administrator"], "scanners": ["10.0.9.9", "nessus01"],
//!  "service_accounts": ["svc_backup"]}
//! ```
//!
//! Host names and users match case-insensitively; a user matches without
//! its `DOMAIN\` prefix or `@domain` suffix (as the correlate operator
//! links users); a host also matches by its short name (`web01` for an
//! agent named `web01.acme.local`); ips match in canonical form.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hash::FastMap;
use crate::intel::{Finding, LoadError, canonical_ip};

/// How much a host matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Criticality {
    Low,
    Medium,
    High,
    Critical,
}

impl Criticality {
    pub fn as_str(self) -> &'static str {
        match self {
            Criticality::Low => "low",
            Criticality::Medium => "medium",
            Criticality::High => "high",
            Criticality::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Criticality> {
        match s.trim().to_ascii_lowercase().as_str() {
            "low" => Some(Criticality::Low),
            "medium" => Some(Criticality::Medium),
            "high" => Some(Criticality::High),
            "critical" => Some(Criticality::Critical),
            _ => None,
        }
    }
}

/// The account part of a user name, lower-cased: without a `DOMAIN\`
/// prefix or an `@domain` suffix.
pub fn user_key(value: &str) -> String {
    let value = value.trim();
    let value = value.rsplit_once('\\').map_or(value, |(_, user)| user);
    value.split_once('@').map_or(value, |(user, _)| user).to_ascii_lowercase()
}

/// A host name or ip as stored.
fn host_key(value: &str) -> String {
    canonical_ip(value).unwrap_or_else(|| value.trim().trim_end_matches('.').to_ascii_lowercase())
}

/// One tenant's inventory (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    hosts: FastMap<Box<str>, (Criticality, u32)>,
    privileged: FastMap<Box<str>, u32>,
    scanners: FastMap<Box<str>, u32>,
    service_accounts: FastMap<Box<str>, u32>,
    sources: Vec<Arc<str>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonInventory {
    #[serde(default)]
    hosts: Vec<JsonHost>,
    #[serde(default)]
    privileged_users: Vec<String>,
    #[serde(default)]
    scanners: Vec<String>,
    #[serde(default)]
    service_accounts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonHost {
    name: Option<String>,
    ip: Option<String>,
    criticality: Criticality,
}

#[derive(Clone, Copy)]
enum Entry {
    Host(Criticality),
    Privileged,
    Scanner,
    ServiceAccount,
}

impl Inventory {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
            && self.privileged.is_empty()
            && self.scanners.is_empty()
            && self.service_accounts.is_empty()
    }

    /// Sizes, for logs.
    pub fn describe(&self) -> String {
        let [hosts, privileged, scanners, service] = self.counts().map(|(_, n)| n);
        format!("{hosts} hosts, {privileged} privileged users, {scanners} scanners, {service} service accounts")
    }

    /// Entries by kind: `host`, `privileged_user`, `scanner`, `service_account`.
    pub fn counts(&self) -> [(&'static str, usize); 4] {
        [
            ("host", self.hosts.len()),
            ("privileged_user", self.privileged.len()),
            ("scanner", self.scanners.len()),
            ("service_account", self.service_accounts.len()),
        ]
    }

    fn source_id(&mut self, source: &str) -> u32 {
        match self.sources.iter().position(|s| &**s == source) {
            Some(i) => i as u32,
            None => {
                self.sources.push(Arc::from(source));
                (self.sources.len() - 1) as u32
            }
        }
    }

    /// Adds one entry; a value listed twice keeps the higher criticality.
    fn add(&mut self, entry: Entry, value: &str, source: u32) -> Result<(), String> {
        if value.trim().is_empty() {
            return Err("empty value".into());
        }
        match entry {
            Entry::Host(c) => {
                let e = self.hosts.entry(host_key(value).into()).or_insert((c, source));
                if c > e.0 {
                    *e = (c, source);
                }
            }
            Entry::Privileged => {
                self.privileged.entry(user_key(value).into()).or_insert(source);
            }
            Entry::ServiceAccount => {
                self.service_accounts.entry(user_key(value).into()).or_insert(source);
            }
            Entry::Scanner => {
                self.scanners.entry(host_key(value).into()).or_insert(source);
            }
        }
        Ok(())
    }

    /// Loads a CSV inventory (see the module docs).
    pub fn load_csv(&mut self, source: &str, text: &str) -> Result<usize, LoadError> {
        let id = self.source_id(source);
        // Spreadsheets often save CSV with a byte-order mark.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(text.as_bytes());
        let headers = reader.headers().map_err(|e| LoadError::new(source, "line 1: ", e.to_string()))?.clone();
        let column = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
        let (Some(kind_col), Some(value_col)) = (column("kind"), column("value")) else {
            return Err(LoadError::new(
                source,
                "line 1: ",
                format!(
                    "the header must name the columns kind and value (and criticality for hosts), not {:?}",
                    headers.iter().collect::<Vec<_>>()
                ),
            ));
        };
        let crit_col = column("criticality");
        let mut rows = 0;
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(String::new(), |p| format!("line {}: ", p.line()));
                LoadError::new(source, line, e.to_string())
            })?;
            let at = format!("line {}: ", record.position().map_or(0, |p| p.line()));
            let field = |i: Option<usize>| i.and_then(|i| record.get(i)).unwrap_or("");
            let (kind, value) = (field(Some(kind_col)), field(Some(value_col)));
            if kind.is_empty() && value.is_empty() {
                continue;
            }
            let entry = match kind.to_ascii_lowercase().as_str() {
                "host" => {
                    let c = field(crit_col);
                    Entry::Host(Criticality::parse(c).ok_or_else(|| {
                        LoadError::new(
                            source,
                            at.clone(),
                            format!("host {value:?}: criticality {c:?} is not low, medium, high or critical"),
                        )
                    })?)
                }
                "privileged_user" => Entry::Privileged,
                "scanner" => Entry::Scanner,
                "service_account" => Entry::ServiceAccount,
                other => {
                    return Err(LoadError::new(
                        source,
                        at,
                        format!("kind {other:?} is not host, privileged_user, scanner or service_account"),
                    ));
                }
            };
            self.add(entry, value, id).map_err(|why| LoadError::new(source, at.clone(), why))?;
            rows += 1;
        }
        Ok(rows)
    }

    /// Loads a JSON inventory (see the module docs).
    pub fn load_json(&mut self, source: &str, text: &str) -> Result<usize, LoadError> {
        let id = self.source_id(source);
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let inv: JsonInventory = serde_json::from_str(text).map_err(|e| LoadError::new(source, "", e.to_string()))?;
        let mut rows = 0;
        for (i, h) in inv.hosts.iter().enumerate() {
            let at = format!("hosts[{i}]: ");
            if h.name.is_none() && h.ip.is_none() {
                return Err(LoadError::new(source, at, "a host needs a name or an ip"));
            }
            if let Some(ip) = &h.ip
                && canonical_ip(ip).is_none()
            {
                return Err(LoadError::new(source, at, format!("ip {ip:?} is not an ip address")));
            }
            for v in h.name.iter().chain(&h.ip) {
                self.add(Entry::Host(h.criticality), v, id).map_err(|why| LoadError::new(source, at.clone(), why))?;
            }
            rows += 1;
        }
        for (key, entry, list) in [
            ("privileged_users", Entry::Privileged, &inv.privileged_users),
            ("scanners", Entry::Scanner, &inv.scanners),
            ("service_accounts", Entry::ServiceAccount, &inv.service_accounts),
        ] {
            for (i, v) in list.iter().enumerate() {
                self.add(entry, v, id).map_err(|why| LoadError::new(source, format!("{key}[{i}]: "), why))?;
                rows += 1;
            }
        }
        Ok(rows)
    }

    fn src(&self, id: u32) -> String {
        self.sources[id as usize].to_string()
    }

    /// What the inventory says about a host name (exact, then its short name).
    pub fn lookup_host(&self, name: &str) -> Vec<Finding> {
        let key = host_key(name);
        let short = key.split_once('.').map(|(s, _)| s).filter(|_| canonical_ip(&key).is_none());
        self.lookup_key(&key, short)
    }

    /// What the inventory says about an ip (canonical form).
    pub fn lookup_ip(&self, ip: &str) -> Vec<Finding> {
        self.lookup_key(ip, None)
    }

    fn lookup_key(&self, key: &str, short: Option<&str>) -> Vec<Finding> {
        let mut found = Vec::new();
        let get = |map: &FastMap<Box<str>, u32>| map.get(key).or_else(|| short.and_then(|s| map.get(s))).copied();
        let host = self.hosts.get(key).or_else(|| short.and_then(|s| self.hosts.get(s)));
        if let Some(&(criticality, src)) = host {
            found.push(Finding::Asset { criticality, source: self.src(src) });
        }
        if let Some(src) = get(&self.scanners) {
            found.push(Finding::KnownScanner { source: self.src(src) });
        }
        found
    }

    /// What the inventory says about a user.
    pub fn lookup_user(&self, user: &str) -> Vec<Finding> {
        let key = user_key(user);
        let mut found = Vec::new();
        if let Some(&src) = self.privileged.get(key.as_str()) {
            found.push(Finding::PrivilegedUser { source: self.src(src) });
        }
        if let Some(&src) = self.service_accounts.get(key.as_str()) {
            found.push(Finding::ServiceAccount { source: self.src(src) });
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "kind,value,criticality,note\n\
        host,DC01,critical,domain controller\n\
        host,10.0.0.5,high,\n\
        host,dc01,low,listed twice: the higher stays\n\
        privileged_user,ACME\\Administrator,,\n\
        scanner,10.0.9.9,,nessus\n\
        service_account,svc_backup@acme.local,,\n";

    #[test]
    fn csv_inventory_matches_case_insensitively_and_by_short_name() {
        let mut inv = Inventory::default();
        assert_eq!(inv.load_csv("acme.csv", &format!("\u{feff}{CSV}")).unwrap(), 6);
        assert_eq!(
            inv.lookup_host("dc01.acme.local"),
            [Finding::Asset { criticality: Criticality::Critical, source: "acme.csv".into() }]
        );
        assert!(matches!(&inv.lookup_ip("10.0.0.5")[..], [Finding::Asset { criticality: Criticality::High, .. }]));
        assert!(matches!(&inv.lookup_ip("10.0.9.9")[..], [Finding::KnownScanner { .. }]));
        assert!(matches!(&inv.lookup_user("administrator@acme")[..], [Finding::PrivilegedUser { .. }]));
        assert!(matches!(&inv.lookup_user("ACME\\SVC_BACKUP")[..], [Finding::ServiceAccount { .. }]));
        assert!(inv.lookup_user("alice").is_empty() && inv.lookup_host("web01").is_empty());
    }

    #[test]
    fn csv_errors_name_the_line_and_why() {
        let err = Inventory::default().load_csv("a.csv", "kind,value,criticality\nhost,web01,huge\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.csv: line 2: host \"web01\": criticality \"huge\" is not low, medium, high or critical"
        );
        let err = Inventory::default().load_csv("a.csv", "kind,value\nhost,web01\n").unwrap_err();
        assert!(err.to_string().starts_with("a.csv: line 2: host"), "{err}");
        let err = Inventory::default().load_csv("a.csv", "kind,value\nscanner,1.2.3.4\nadmin,root\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "a.csv: line 3: kind \"admin\" is not host, privileged_user, scanner or service_account"
        );
        let err = Inventory::default().load_csv("a.csv", "host,value\n").unwrap_err();
        assert!(err.to_string().starts_with("a.csv: line 1: the header must name"), "{err}");
    }

    #[test]
    fn json_inventory_loads_and_refuses_unknown_keys_and_bad_ips() {
        let mut inv = Inventory::default();
        let json = r#"{"hosts": [{"name": "web01", "ip": "10.1.1.1", "criticality": "medium"}],
            "privileged_users": ["root"], "scanners": ["nessus01"], "service_accounts": ["svc_ci"]}"#;
        assert_eq!(inv.load_json("inv.json", json).unwrap(), 4);
        assert!(matches!(&inv.lookup_ip("10.1.1.1")[..], [Finding::Asset { criticality: Criticality::Medium, .. }]));
        assert!(matches!(&inv.lookup_host("NESSUS01")[..], [Finding::KnownScanner { .. }]));
        let err = Inventory::default().load_json("inv.json", r#"{"hsts": []}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `hsts`"), "{err}");
        let err = Inventory::default()
            .load_json("inv.json", r#"{"hosts": [{"ip": "10.1.1", "criticality": "low"}]}"#)
            .unwrap_err();
        assert_eq!(err.to_string(), "inv.json: hosts[0]: ip \"10.1.1\" is not an ip address");
    }
}
