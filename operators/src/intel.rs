//! Threat intel and inventories: what Sluice knows about entities before it
//! sees them, per tenant and global.
//!
//! * **IOCs** ([`IocStore`]): ip addresses, domains, urls and file hashes
//!   from plain files (one per line) and MISP JSON exports, each with the
//!   source it came from. Lookups are hash-map probes on normalised values:
//!   ips are canonicalised (`::FFFF:1.2.3.4` style spellings do not hide an
//!   address) and may be networks (`198.51.100.0/24`: one probe per prefix
//!   length in use), domains, hosts and hashes are lower-cased, and a domain
//!   matches itself and its parent domains (`a.b.evil.example` hits an IOC
//!   `evil.example`: one probe per label). A url matches as written (scheme
//!   and host lower-cased), and its host is looked up as a domain or ip.
//! * **Inventory** ([`Inventory`], per tenant): hosts with a criticality,
//!   privileged users, known scanners and service accounts.
//!
//! [`Intel`] is one loaded set of both: global IOCs, and per tenant its own
//! IOCs and inventory. A tenant's set never answers for another tenant;
//! global IOCs answer for all. It is built in full (by the pipeline, from
//! files) and reaches the correlate operator as an update, which swaps its
//! `Arc` and re-checks the live clusters: a reload is atomic and keeps all
//! state. The correlate operator looks an entity value up once, when it
//! first joins a cluster, and keeps what was found ([`Finding`]) in the
//! cluster; scoring reads only that.
//!
//! Everything here parses from memory; reading files is the caller's.
//! Errors name the source and the line (or JSON path) and say why.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster::EntityKind;
use crate::hash::FastMap;
use crate::inventory::{Criticality, Inventory};

/// What an IOC is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IocKind {
    Ip,
    Domain,
    Url,
    Hash,
}

impl IocKind {
    pub fn as_str(self) -> &'static str {
        match self {
            IocKind::Ip => "ip",
            IocKind::Domain => "domain",
            IocKind::Url => "url",
            IocKind::Hash => "hash",
        }
    }

    /// Parses a kind as written in config (`ip`, `domain`, `url`, `hash`).
    pub fn parse(s: &str) -> Option<IocKind> {
        match s {
            "ip" => Some(IocKind::Ip),
            "domain" => Some(IocKind::Domain),
            "url" => Some(IocKind::Url),
            "hash" => Some(IocKind::Hash),
            _ => None,
        }
    }
}

/// What the inventory or threat intel says about an entity of a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Finding {
    /// The value (or, for a url, its host) is an IOC.
    Ioc {
        kind: IocKind,
        ioc: String,
        source: String,
    },
    /// A host of the inventory, with its criticality.
    Asset {
        criticality: Criticality,
        source: String,
    },
    PrivilegedUser {
        source: String,
    },
    KnownScanner {
        source: String,
    },
    ServiceAccount {
        source: String,
    },
}

/// Canonical text of an ip address, or `None` if `s` is not one.
pub fn canonical_ip(s: &str) -> Option<String> {
    let ip: IpAddr = s.trim().parse().ok()?;
    Some(match ip {
        IpAddr::V6(v6) => v6.to_canonical().to_string(),
        v4 => v4.to_string(),
    })
}

/// The canonical text of an ip or network (`10.1.0.0/16`; the address is
/// masked to the network, a full-length prefix is the plain address).
fn canonical_ip_or_net(s: &str) -> Option<String> {
    let s = s.trim();
    let Some((ip, prefix)) = s.split_once('/') else { return canonical_ip(s) };
    let (v6, len, masked) = net_key(ip.parse().ok()?, prefix.parse().ok()?)?;
    if len == if v6 { 128 } else { 32 } {
        return canonical_ip(ip);
    }
    let addr = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::from(masked))
    } else {
        IpAddr::V4(std::net::Ipv4Addr::from(masked as u32))
    };
    Some(format!("{addr}/{len}"))
}

/// (is ipv6, prefix length, masked address) of a network; `None` if the
/// prefix is too long for the address.
fn net_key(ip: IpAddr, len: u8) -> Option<(bool, u8, u128)> {
    let (v6, bits, value) = match ip {
        IpAddr::V4(v4) => (false, 32u8, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => (false, 32, u128::from(u32::from(v4))),
            None => (true, 128, u128::from(v6)),
        },
    };
    if len > bits {
        return None;
    }
    let host_bits = u32::from(bits - len);
    let mask = if host_bits >= 128 { 0 } else { !0u128 << host_bits };
    Some((v6, len, value & mask))
}

/// A domain as stored: lower case, without a trailing dot or a `*.` wildcard.
/// Internationalised names are kept as written (lower-cased), not punycoded.
fn canonical_domain(s: &str) -> Option<String> {
    let d = s.trim().trim_end_matches('.');
    let d = d.strip_prefix("*.").unwrap_or(d);
    let d = if d.is_ascii() { d.to_ascii_lowercase() } else { d.to_lowercase() };
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| !l.is_empty() && l.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_'));
    ok.then_some(d)
}

/// A url as stored: scheme and host lower-cased, the rest as written.
fn canonical_url(s: &str) -> Option<String> {
    let s = s.trim();
    let (scheme, rest) = s.split_once("://")?;
    if scheme.is_empty() || !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) || rest.is_empty()
    {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let path = if path == "/" { "" } else { path };
    Some(format!("{}://{}{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase(), path))
}

/// The host of a url (without user info and port), if it has one.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6.split_once(']').map(|(h, _)| h);
    }
    let host =
        host.rsplit_once(':').map_or(host, |(h, port)| if port.bytes().all(|b| b.is_ascii_digit()) { h } else { host });
    (!host.is_empty()).then_some(host)
}

/// A file hash as stored: lower-case hex of an md5, sha1, sha256 or sha512.
fn canonical_hash(s: &str) -> Option<String> {
    let s = s.trim();
    (matches!(s.len(), 32 | 40 | 64 | 128) && s.bytes().all(|b| b.is_ascii_hexdigit())).then(|| s.to_ascii_lowercase())
}

/// Normalises `value` as an IOC of `kind`; `None` if it is not one.
pub fn canonical(kind: IocKind, value: &str) -> Option<String> {
    match kind {
        IocKind::Ip => canonical_ip_or_net(value),
        IocKind::Domain => canonical_domain(value),
        IocKind::Url => canonical_url(value),
        IocKind::Hash => canonical_hash(value),
    }
}

/// The kind of an IOC by its shape: an ip address, a url (`scheme://`), a
/// hex hash of a known length, else a domain.
pub fn infer(value: &str) -> Option<(IocKind, String)> {
    if let Some(ip) = canonical_ip_or_net(value) {
        return Some((IocKind::Ip, ip));
    }
    if value.contains("://") {
        return canonical_url(value).map(|u| (IocKind::Url, u));
    }
    if let Some(h) = canonical_hash(value) {
        return Some((IocKind::Hash, h));
    }
    canonical_domain(value).filter(|d| d.contains('.')).map(|d| (IocKind::Domain, d))
}

/// A problem in an IOC or inventory source: where, and why.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{source_name}: {location}{reason}")]
pub struct LoadError {
    pub source_name: String,
    /// `line 12: `, `Event.Attribute[3]: ` or empty.
    pub location: String,
    pub reason: String,
}

impl LoadError {
    pub fn new(source: &str, location: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { source_name: source.to_string(), location: location.into(), reason: reason.into() }
    }
}

/// What a load took in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadStats {
    /// New IOCs stored.
    pub loaded: usize,
    /// IOCs already stored (by an earlier line or source): the first source stays.
    pub duplicates: usize,
    /// MISP attributes skipped, by reason (`type hostname|port` …, `to_ids false`).
    pub skipped: BTreeMap<String, usize>,
}

/// IOCs by kind, each with the index of its source.
#[derive(Clone, Debug, Default)]
pub struct IocStore {
    maps: [FastMap<Box<str>, u32>; 4],
    /// Ip networks by (is ipv6, prefix length, masked address), with their text.
    nets: FastMap<(bool, u8, u128), (Box<str>, u32)>,
    /// The (is ipv6, prefix length) pairs in `nets`, longest prefix first.
    prefixes: Vec<(bool, u8)>,
    sources: Vec<Arc<str>>,
    source_ids: FastMap<Arc<str>, u32>,
}

impl IocStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// IOCs stored, all kinds.
    pub fn len(&self) -> usize {
        self.maps.iter().map(|m| m.len()).sum::<usize>() + self.nets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// IOCs stored of one kind.
    pub fn count(&self, kind: IocKind) -> usize {
        self.maps[kind as usize].len() + if kind == IocKind::Ip { self.nets.len() } else { 0 }
    }

    fn source_id(&mut self, source: &str) -> u32 {
        if let Some(&id) = self.source_ids.get(source) {
            return id;
        }
        let id = self.sources.len() as u32;
        let source: Arc<str> = Arc::from(source);
        self.sources.push(source.clone());
        self.source_ids.insert(source, id);
        id
    }

    /// Stores an already canonical IOC; false if it was there.
    fn insert(&mut self, kind: IocKind, value: String, source: u32) -> bool {
        if kind == IocKind::Ip
            && let Some((ip, len)) = value.split_once('/')
        {
            let key = ip.parse().ok().zip(len.parse().ok()).and_then(|(ip, len)| net_key(ip, len));
            let Some(key) = key else { return false };
            if self.nets.contains_key(&key) {
                return false;
            }
            if !self.prefixes.contains(&(key.0, key.1)) {
                self.prefixes.push((key.0, key.1));
                self.prefixes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            }
            self.nets.insert(key, (value.into_boxed_str(), source));
            return true;
        }
        match self.maps[kind as usize].entry(value.into_boxed_str()) {
            std::collections::hash_map::Entry::Occupied(_) => false,
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(source);
                true
            }
        }
    }

    /// Normalises and stores an IOC from `source`; false if `value` is not
    /// an IOC of `kind`.
    pub fn add(&mut self, kind: IocKind, value: &str, source: &str) -> bool {
        let Some(v) = canonical(kind, value) else { return false };
        let id = self.source_id(source);
        self.insert(kind, v, id);
        true
    }

    #[cfg(test)]
    fn get(&self, kind: IocKind, canonical: &str) -> Option<&Arc<str>> {
        self.find(kind, canonical).map(|(_, source)| source)
    }

    /// The IOC a canonical value matches (itself, or the network holding an
    /// ip: the longest prefix), and its source.
    fn find<'a>(&'a self, kind: IocKind, canonical: &str) -> Option<(&'a str, &'a Arc<str>)> {
        if let Some((key, &id)) = self.maps[kind as usize].get_key_value(canonical) {
            return Some((key, &self.sources[id as usize]));
        }
        if kind != IocKind::Ip || self.prefixes.is_empty() {
            return None;
        }
        let ip: IpAddr = canonical.parse().ok()?;
        let v6 = matches!(ip, IpAddr::V6(_));
        for &(net_v6, len) in self.prefixes.iter().filter(|p| p.0 == v6) {
            if let Some(key) = net_key(ip, len)
                && let Some((text, id)) = self.nets.get(&key)
            {
                debug_assert_eq!(net_v6, key.0);
                return Some((text, &self.sources[*id as usize]));
            }
        }
        None
    }

    /// Loads a plain list: one IOC per line; blank lines and `#` comments
    /// (whole lines, or after whitespace) are skipped. With `kind` every line
    /// must be of that kind, else each line's kind is told by its shape.
    pub fn load_plain(&mut self, source: &str, text: &str, kind: Option<IocKind>) -> Result<LoadStats, LoadError> {
        let id = self.source_id(source);
        let mut stats = LoadStats::default();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (n, line) in text.lines().enumerate() {
            let line = match line.find('#') {
                Some(0) => continue,
                Some(i) if line[..i].ends_with([' ', '\t']) => &line[..i],
                _ => line,
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let found = match kind {
                Some(k) => canonical(k, line).map(|v| (k, v)),
                None => infer(line),
            };
            let Some((k, v)) = found else {
                let why = match kind {
                    Some(k) => format!("{line:?} is not {} {}", if k == IocKind::Ip { "an" } else { "a" }, k.as_str()),
                    None => format!("{line:?} is not an ip, domain, url or hash"),
                };
                return Err(LoadError::new(source, format!("line {}: ", n + 1), why));
            };
            if self.insert(k, v, id) {
                stats.loaded += 1;
            } else {
                stats.duplicates += 1;
            }
        }
        Ok(stats)
    }

    /// Loads a MISP JSON export: one event (`{"Event": {…}}`), a search
    /// result (`{"response": [{"Event": {…}}, …]}`) or a list of events.
    /// Attributes of the event and of its objects count; attributes with
    /// `to_ids: false` or `deleted: true`, and types that are not an ip,
    /// domain, url or hash, are skipped and counted. A known type with a
    /// value that does not parse refuses the file, naming the attribute.
    pub fn load_misp(&mut self, source: &str, json: &str) -> Result<LoadStats, LoadError> {
        let json = json.strip_prefix('\u{feff}').unwrap_or(json);
        let bad = |e: serde_json::Error| LoadError::new(source, "", format!("not a MISP JSON export: {e}"));
        let events: Vec<(String, misp::Event<'_>)> = if json.trim_start().starts_with('[') {
            let list: Vec<misp::Wrapped<'_>> = serde_json::from_str(json).map_err(bad)?;
            list.into_iter().enumerate().map(|(i, w)| (format!("[{i}].Event"), w.event)).collect()
        } else {
            let top: misp::Top<'_> = serde_json::from_str(json).map_err(bad)?;
            match (top.event, top.response) {
                (Some(e), None) => vec![("Event".to_string(), e)],
                (None, Some(list)) => {
                    list.into_iter().enumerate().map(|(i, w)| (format!("response[{i}].Event"), w.event)).collect()
                }
                _ => {
                    return Err(LoadError::new(
                        source,
                        "",
                        "not a MISP JSON export: expected \"Event\" or \"response\"",
                    ));
                }
            }
        };
        let mut stats = LoadStats::default();
        for (path, event) in &events {
            let mut what = format!("{source} MISP event");
            if let Some(id) = &event.id {
                what.push(' ');
                what.push_str(&match id {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                });
            }
            if let Some(info) = &event.info {
                what.push_str(": ");
                what.push_str(info);
            }
            let id = self.source_id(&what);
            // Where an attribute is: (object index, attribute index); the
            // JSON path is only spelled out for an error.
            let attributes = event.attribute.iter().enumerate().map(|(i, a)| ((None, i), a));
            let in_objects = event
                .object
                .iter()
                .enumerate()
                .flat_map(|(o, obj)| obj.attribute.iter().enumerate().map(move |(i, a)| ((Some(o), i), a)));
            for ((object, i), a) in attributes.chain(in_objects) {
                if a.to_ids == Some(false) || a.deleted == Some(true) {
                    *stats
                        .skipped
                        .entry(if a.deleted == Some(true) { "deleted" } else { "to_ids false" }.into())
                        .or_default() += 1;
                    continue;
                }
                let Some(parts) = misp::parts(&a.kind, &a.value) else {
                    *stats.skipped.entry(format!("type {}", a.kind)).or_default() += 1;
                    continue;
                };
                for (kind, value) in parts {
                    let Some(v) = canonical(kind, value) else {
                        let at = match object {
                            Some(o) => format!("{path}.Object[{o}].Attribute[{i}]: "),
                            None => format!("{path}.Attribute[{i}]: "),
                        };
                        return Err(LoadError::new(
                            source,
                            at,
                            format!("{} value {value:?} is not a valid {}", a.kind, kind.as_str()),
                        ));
                    };
                    if self.insert(kind, v, id) {
                        stats.loaded += 1;
                    } else {
                        stats.duplicates += 1;
                    }
                }
            }
        }
        Ok(stats)
    }
}

/// The shapes of a MISP JSON export that Sluice reads (other fields are ignored).
mod misp {
    use super::*;

    #[derive(Deserialize)]
    pub(super) struct Top<'a> {
        #[serde(rename = "Event", borrow)]
        pub event: Option<Event<'a>>,
        #[serde(borrow)]
        pub response: Option<Vec<Wrapped<'a>>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Wrapped<'a> {
        #[serde(rename = "Event", borrow)]
        pub event: Event<'a>,
    }

    #[derive(Deserialize)]
    pub(super) struct Event<'a> {
        pub id: Option<serde_json::Value>,
        #[serde(borrow)]
        pub info: Option<Cow<'a, str>>,
        #[serde(rename = "Attribute", default, borrow)]
        pub attribute: Vec<Attribute<'a>>,
        #[serde(rename = "Object", default, borrow)]
        pub object: Vec<Object<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Object<'a> {
        #[serde(rename = "Attribute", default, borrow)]
        pub attribute: Vec<Attribute<'a>>,
    }

    #[derive(Deserialize)]
    pub(super) struct Attribute<'a> {
        #[serde(rename = "type", borrow)]
        pub kind: Cow<'a, str>,
        #[serde(borrow)]
        pub value: Cow<'a, str>,
        pub to_ids: Option<bool>,
        pub deleted: Option<bool>,
    }

    /// The IOCs in a MISP attribute of type `kind`, or `None` for a type
    /// Sluice does not match on.
    pub(super) fn parts<'v>(kind: &str, value: &'v str) -> Option<Vec<(IocKind, &'v str)>> {
        let first = || value.split_once('|').map_or(value, |(a, _)| a);
        let second = || value.split_once('|').map_or(value, |(_, b)| b);
        Some(match kind {
            "ip-src" | "ip-dst" => vec![(IocKind::Ip, value)],
            "ip-src|port" | "ip-dst|port" => vec![(IocKind::Ip, first())],
            "domain" | "hostname" => vec![(IocKind::Domain, value)],
            "hostname|port" => vec![(IocKind::Domain, first())],
            "domain|ip" => vec![(IocKind::Domain, first()), (IocKind::Ip, second())],
            "url" => vec![(IocKind::Url, value)],
            "md5" | "sha1" | "sha256" | "sha512" => vec![(IocKind::Hash, value)],
            "filename|md5" | "filename|sha1" | "filename|sha256" | "filename|sha512" => {
                vec![(IocKind::Hash, second())]
            }
            _ => return None,
        })
    }
}

/// One tenant's own IOCs and inventory.
#[derive(Clone, Debug, Default)]
pub struct TenantIntel {
    pub iocs: IocStore,
    pub inventory: Inventory,
}

/// A loaded set of threat intel and inventories (see the module docs).
#[derive(Clone, Debug, Default)]
pub struct Intel {
    /// IOCs that apply to every tenant.
    pub global: IocStore,
    pub tenants: BTreeMap<String, TenantIntel>,
}

/// See [`Intel::counts`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IntelCounts {
    pub iocs: Vec<(Option<String>, &'static str, usize)>,
    pub inventory: Vec<(String, &'static str, usize)>,
}

/// Most parent domains tried for one host name.
const MAX_LABELS: usize = 16;

impl Intel {
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.tenants.values().all(|t| t.iocs.is_empty() && t.inventory.is_empty())
    }

    /// Everything known about an entity value of `tenant`, in a stable order.
    pub fn lookup(&self, tenant: &str, kind: EntityKind, value: &str) -> Vec<Finding> {
        let mut found = Vec::new();
        let own = self.tenants.get(tenant);
        let stores = [Some(&self.global), own.map(|t| &t.iocs)];
        let ioc = |found: &mut Vec<Finding>, k: IocKind, v: &str| {
            for s in stores.iter().flatten() {
                if let Some((ioc, src)) = s.find(k, v) {
                    found.push(Finding::Ioc { kind: k, ioc: ioc.to_string(), source: src.to_string() });
                    return true;
                }
            }
            false
        };
        let domain = |found: &mut Vec<Finding>, host: &str| {
            let Some(mut d) = canonical_domain(host) else { return };
            for _ in 0..MAX_LABELS {
                if ioc(found, IocKind::Domain, &d) {
                    return;
                }
                match d.split_once('.') {
                    Some((_, parent)) if !parent.is_empty() => d = parent.to_string(),
                    _ => return,
                }
            }
        };
        match kind {
            EntityKind::Ip => {
                if let Some(ip) = canonical_ip(value) {
                    ioc(&mut found, IocKind::Ip, &ip);
                    if let Some(t) = own {
                        found.extend(t.inventory.lookup_ip(&ip));
                    }
                }
            }
            EntityKind::Hash => {
                if let Some(h) = canonical_hash(value) {
                    ioc(&mut found, IocKind::Hash, &h);
                }
            }
            EntityKind::Url => {
                if let Some(u) = canonical_url(value) {
                    ioc(&mut found, IocKind::Url, &u);
                    if let Some(host) = url_host(&u) {
                        match canonical_ip(host) {
                            Some(ip) => {
                                ioc(&mut found, IocKind::Ip, &ip);
                            }
                            None => domain(&mut found, host),
                        }
                    }
                }
            }
            EntityKind::Host => {
                if let Some(t) = own {
                    found.extend(t.inventory.lookup_host(value));
                }
            }
            EntityKind::User => {
                if let Some(t) = own {
                    found.extend(t.inventory.lookup_user(value));
                }
            }
            EntityKind::Process => {}
        }
        found
    }

    /// One line per store for logs: IOCs by kind, inventory sizes.
    /// IOCs per scope (`None`: global, else the tenant) and kind, and
    /// inventory entries per tenant and kind: what the metrics show.
    pub fn counts(&self) -> IntelCounts {
        let kinds = [IocKind::Ip, IocKind::Domain, IocKind::Url, IocKind::Hash];
        let iocs = |scope: Option<&str>, s: &IocStore| {
            kinds.map(|k| (scope.map(str::to_string), k.as_str(), s.count(k))).into_iter()
        };
        IntelCounts {
            iocs: iocs(None, &self.global)
                .chain(self.tenants.iter().flat_map(|(t, ti)| iocs(Some(t), &ti.iocs)))
                .collect(),
            inventory: self
                .tenants
                .iter()
                .flat_map(|(t, ti)| ti.inventory.counts().map(|(k, n)| (t.clone(), k, n)))
                .collect(),
        }
    }

    pub fn describe(&self) -> String {
        let iocs = |s: &IocStore| {
            format!(
                "{} ips, {} domains, {} urls, {} hashes",
                s.count(IocKind::Ip),
                s.count(IocKind::Domain),
                s.count(IocKind::Url),
                s.count(IocKind::Hash)
            )
        };
        let mut out = format!("global: {}", iocs(&self.global));
        for (name, t) in &self.tenants {
            out.push_str(&format!("; {name}: {}, inventory {}", iocs(&t.iocs), t.inventory.describe()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lists_infer_kinds_skip_comments_and_name_the_bad_line() {
        let mut s = IocStore::new();
        let text = "\u{feff}# feed\n203.0.113.7\nEvil.Example.\n\nhttps://Bad.Example/x?y=1  # drop\n\
                    D41D8CD98F00B204E9800998ECF8427E\n2001:DB8::1\n203.0.113.7\n";
        let stats = s.load_plain("feed.txt", text, None).unwrap();
        assert_eq!((stats.loaded, stats.duplicates), (5, 1));
        assert_eq!(
            [s.count(IocKind::Ip), s.count(IocKind::Domain), s.count(IocKind::Url), s.count(IocKind::Hash)],
            [2, 1, 1, 1]
        );
        assert!(s.get(IocKind::Url, "https://bad.example/x?y=1").is_some());
        assert!(s.get(IocKind::Ip, "2001:db8::1").is_some());
        let err = s.load_plain("feed.txt", "1.2.3.4\nnot an ioc\n", None).unwrap_err();
        assert_eq!(err.to_string(), "feed.txt: line 2: \"not an ioc\" is not an ip, domain, url or hash");
        let err = s.load_plain("ips.txt", "1.2.3.4\nevil.example\n", Some(IocKind::Ip)).unwrap_err();
        assert_eq!(err.to_string(), "ips.txt: line 2: \"evil.example\" is not an ip");
    }

    fn intel_with(tenant: &str, text: &str) -> Intel {
        let mut t = TenantIntel::default();
        t.iocs.load_plain("t.txt", text, None).unwrap();
        Intel { global: IocStore::new(), tenants: [(tenant.to_string(), t)].into() }
    }

    #[test]
    fn ip_networks_match_the_addresses_in_them_longest_prefix_first() {
        let mut s = IocStore::new();
        let text = "10.0.0.0/8\n10.1.2.99/24\n2001:db8::/32\n192.0.2.7/32\n";
        assert_eq!(s.load_plain("nets.txt", text, Some(IocKind::Ip)).unwrap().loaded, 4);
        assert_eq!(s.find(IocKind::Ip, "10.1.2.3").map(|f| f.0), Some("10.1.2.0/24"));
        assert_eq!(s.find(IocKind::Ip, "10.200.0.1").map(|f| f.0), Some("10.0.0.0/8"));
        assert_eq!(s.find(IocKind::Ip, "2001:db8:ffff::1").map(|f| f.0), Some("2001:db8::/32"));
        assert_eq!(s.find(IocKind::Ip, "192.0.2.7").map(|f| f.0), Some("192.0.2.7"), "a /32 is the address");
        assert!(s.find(IocKind::Ip, "11.0.0.1").is_none() && s.find(IocKind::Ip, "2001:db9::1").is_none());
        let err = s.load_plain("nets.txt", "10.0.0.0/33\n", None).unwrap_err();
        assert_eq!(err.to_string(), "nets.txt: line 1: \"10.0.0.0/33\" is not an ip, domain, url or hash");
        let intel = Intel { global: s, ..Intel::default() };
        assert!(matches!(&intel.lookup("acme", EntityKind::Ip, "10.9.9.9")[..],
            [Finding::Ioc { ioc, .. }] if ioc == "10.0.0.0/8"));
    }

    #[test]
    fn domains_match_their_subdomains_in_urls_and_case_never_matters() {
        let intel = intel_with("acme", "evil.example\nhttp://x.test/payload.exe\nBÜCHER.example\n");
        assert_eq!(intel.lookup("acme", EntityKind::Url, "https://shop.bücher.example/").len(), 1);
        let hit = |kind, v: &str| intel.lookup("acme", kind, v);
        assert!(matches!(&hit(EntityKind::Url, "HTTPS://A.B.EVIL.EXAMPLE:8443/login")[..],
            [Finding::Ioc { kind: IocKind::Domain, ioc, .. }] if ioc == "evil.example"));
        assert!(hit(EntityKind::Url, "https://notevil.example/").is_empty());
        assert!(hit(EntityKind::Url, "https://evil.example.org/").is_empty());
        assert_eq!(hit(EntityKind::Url, "http://X.test/payload.exe").len(), 1);
        assert!(hit(EntityKind::Url, "http://x.test/other").is_empty());
    }

    #[test]
    fn tenants_never_see_each_others_iocs_and_global_ones_apply_to_all() {
        let mut intel = intel_with("acme", "198.51.100.1\n");
        intel.global.load_plain("global.txt", "192.0.2.66\n", None).unwrap();
        assert_eq!(intel.lookup("acme", EntityKind::Ip, "198.51.100.1").len(), 1);
        assert!(intel.lookup("globex", EntityKind::Ip, "198.51.100.1").is_empty());
        for tenant in ["acme", "globex"] {
            assert!(matches!(&intel.lookup(tenant, EntityKind::Ip, "192.0.2.66")[..],
                [Finding::Ioc { source, .. }] if source == "global.txt"));
        }
        // An ip-shaped value under another entity kind is not looked up as an ip.
        assert!(intel.lookup("acme", EntityKind::Process, "198.51.100.1").is_empty());
    }

    const MISP_EVENT: &str = r#"{"Event": {"id": "1234", "info": "Emotet C2", "Attribute": [
        {"type": "ip-dst", "value": "203.0.113.9", "to_ids": true},
        {"type": "ip-dst", "value": "100.64.0.0/10"},
        {"type": "ip-src|port", "value": "198.51.100.4|8080"},
        {"type": "domain|ip", "value": "c2.example|192.0.2.1"},
        {"type": "comment", "value": "hello"},
        {"type": "md5", "value": "0123456789abcdef0123456789ABCDEF", "to_ids": false}],
      "Object": [{"name": "file", "Attribute": [
        {"type": "filename|sha256", "value": "x.exe|e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
        {"type": "url", "value": "http://c2.example/gate.php"}]}]}}"#;

    #[test]
    fn misp_events_in_all_three_shapes_load_and_skip_what_they_cannot_match() {
        for json in [MISP_EVENT.to_string(), format!("{{\"response\": [{MISP_EVENT}]}}"), format!("[{MISP_EVENT}]")] {
            let mut s = IocStore::new();
            let stats = s.load_misp("misp.json", &json).unwrap();
            assert_eq!(stats.loaded, 7, "{json}");
            assert_eq!(s.find(IocKind::Ip, "100.100.1.1").map(|f| f.0), Some("100.64.0.0/10"));
            assert_eq!(stats.skipped, [("to_ids false".to_string(), 1), ("type comment".to_string(), 1)].into());
            assert_eq!(s.get(IocKind::Ip, "198.51.100.4").map(|s| &**s), Some("misp.json MISP event 1234: Emotet C2"));
            assert!(s.get(IocKind::Domain, "c2.example").is_some() && s.get(IocKind::Ip, "192.0.2.1").is_some());
            assert!(s.get(IocKind::Hash, "0123456789abcdef0123456789abcdef").is_none());
            assert!(s.get(IocKind::Hash, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855").is_some());
        }
    }

    #[test]
    fn misp_errors_name_the_attribute_or_the_json_position() {
        let bad = r#"{"response": [{"Event": {"Attribute": []}}, {"Event": {"Attribute": [
            {"type": "ip-dst", "value": "1.2.3.4"}, {"type": "ip-dst", "value": "1.2.3"}]}}]}"#;
        let err = IocStore::new().load_misp("m.json", bad).unwrap_err();
        assert_eq!(err.to_string(), "m.json: response[1].Event.Attribute[1]: ip-dst value \"1.2.3\" is not a valid ip");
        let err = IocStore::new().load_misp("m.json", "{\"Event\": {\"Attribute\": [}}").unwrap_err();
        assert!(
            err.to_string().starts_with("m.json: not a MISP JSON export: ") && err.reason.contains("line 1"),
            "{err}"
        );
        let err = IocStore::new().load_misp("m.json", "{\"events\": []}").unwrap_err();
        assert!(err.reason.contains("expected \"Event\""), "{err}");
    }
}
