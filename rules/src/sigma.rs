//! Sigma correlation rules (Sigma specification v2), compiled to the same
//! SQL engine as every other rule.
//!
//! A Sigma file (`.yml`/`.yaml`) holds YAML documents separated by `---`:
//! detection rules (`logsource` + `detection`) and correlation rules
//! (`correlation`) that refer to them by `name` or `id`. Each correlation
//! becomes one Sluice rule; the detection rules it names become SQL
//! predicates over the `alerts` table. A correlation may only name
//! detection rules of its own file.
//!
//! **Correlation types.** `event_count` (matching events per group),
//! `value_count` (distinct values of `condition.field` per group),
//! `temporal` (every named rule matched in the group) and
//! `temporal_ordered` (the named rules matched in that order), each with
//! `group-by`, `timespan` and, where it applies, a `condition`
//! (`gt`/`gte`/`lt`/`lte`/`eq`/`neq`; a range is two of them).
//!
//! **Time.** A correlation runs on hopping windows as long as its
//! `timespan`, one starting every quarter of it. Every match whose events
//! lie within three quarters of the timespan is found; one spread over
//! more of it may be missed when no window holds all of it; events
//! further apart than the timespan never match. Overlapping windows that
//! find the same group with shared alerts report it once.
//!
//! **Entities.** A detection joins a cluster by its entities, so at least
//! one `group-by` field must name one (a user, an IP, a host, a process, a
//! hash or a URL: see [`entity_of`]).
//!
//! **Fields.** Sigma field names reach Wazuh alert fields as follows (the
//! table is also in `rules/README.md`):
//!
//! | Sigma field | Wazuh alert |
//! |---|---|
//! | `EventID`, `Channel` | the typed columns `win_event_id`, `win_channel` (`data.win.system.eventID`, `.channel`) |
//! | `Provider_Name`, `Computer` | `data.win.system.providerName`, `.computer` |
//! | any other name starting with a capital (`TargetUserName`, `Image`) | `data.win.eventdata.` + the name with its first letter lower-cased |
//! | a name starting with a lower-case letter, no dot (`srcip`, `dstuser`) | `data.` + the name |
//! | a dotted path (`data.url`, `syscheck.path`) | that path of the alert |
//! | `agent.name`, `agent.id`, `agent.ip`, `manager.name`, `rule.id`, `rule.level`, `rule.description`, `decoder.name`, `location`, `full_log` | the typed column |
//! | `rule.groups`, `rule.mitre.id`, `rule.mitre.tactic` | list columns: the value must be an item |
//!
//! Strings match case-insensitively, as Sigma says, with `*` and `?`
//! wildcards. Modifiers: `contains`, `startswith`, `endswith`, `all`,
//! `re`, `cased`, `exists`, `gt`, `gte`, `lt`, `lte`. Conditions: `and`,
//! `or`, `not`, parentheses, `1 of x*`, `all of x*`, `1 of them`,
//! `all of them`. Anything else is refused with the file, the key and the
//! reason: nothing is silently ignored.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};
use sluice_operators::cluster::EntityKind;

use crate::error::RuleError;
use crate::rule::{Limits, MAX_HOPS, Rule, Scope, Window, severity_word, valid_name};

/// Whether a YAML file is Sigma: some document has `detection` or
/// `correlation` at its top.
pub fn is_sigma(text: &str) -> bool {
    serde_yaml_ng::Deserializer::from_str(text).any(|doc| {
        Value::deserialize(doc)
            .ok()
            .and_then(|v| v.as_mapping().map(|m| m.contains_key("detection") || m.contains_key("correlation")))
            .unwrap_or(false)
    })
}

/// A detection rule of the file, compiled to an SQL predicate.
struct Base {
    /// Its `name` and `id`: what a correlation may refer to it by.
    refs: Vec<String>,
    predicate: String,
}

/// Keys of every Sigma rule (its metadata).
const COMMON_KEYS: &[&str] = &[
    "title",
    "id",
    "name",
    "status",
    "description",
    "references",
    "author",
    "date",
    "modified",
    "tags",
    "falsepositives",
    "level",
    "license",
    "taxonomy",
];
/// Keys of a detection rule besides the common ones.
const DETECTION_KEYS: &[&str] = &["logsource", "detection", "fields", "related", "scope"];
/// Keys of a correlation rule besides the common ones.
const CORRELATION_KEYS: &[&str] = &["correlation"];

/// Parses a Sigma file into one rule per correlation. Every problem of
/// every document is reported, each with its key.
pub fn parse(text: &str, origin: &Path, limits: Limits) -> Result<Vec<Rule>, RuleError> {
    let mut problems = Vec::new();
    let mut bases = Vec::new();
    let mut correlations = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let at = format!("document {}", i + 1);
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let Some(map) = value.as_mapping() else {
            problems.push(format!("{at}: not a mapping of keys"));
            continue;
        };
        let at = match text_of(map, "title") {
            Some(title) => format!("{at} ({title:?})"),
            None => at,
        };
        if map.contains_key("correlation") {
            unknown_keys(map, &keys_of(CORRELATION_KEYS), &at, &mut problems);
            correlations.push((at, map.clone()));
        } else if map.contains_key("detection") {
            unknown_keys(map, &keys_of(DETECTION_KEYS), &at, &mut problems);
            if let Some(base) = base_rule(map, &at, &mut problems) {
                bases.push(base);
            }
        } else {
            problems.push(format!("{at}: neither a detection rule (`detection`) nor a correlation (`correlation`)"));
        }
    }
    if correlations.is_empty() {
        problems.push(
            "no correlation rule in this file: Sluice runs Sigma correlations (`correlation:`), \
             each over the detection rules of its file"
                .into(),
        );
    }
    let several = correlations.len() > 1;
    let mut rules = Vec::new();
    for (at, map) in &correlations {
        if let Some(rule) = correlation(map, at, several, &bases, origin, limits, &mut problems) {
            rules.push(rule);
        }
    }
    if problems.is_empty() { Ok(rules) } else { Err(RuleError::Invalid { origin: origin.to_path_buf(), problems }) }
}

fn text_of(map: &Mapping, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn unknown_keys(map: &Mapping, known: &[&str], at: &str, problems: &mut Vec<String>) {
    for key in map.keys() {
        let name = key.as_str().unwrap_or("?");
        if !known.contains(&name) {
            problems.push(format!("{at}: unknown key {name:?} (known: {})", known.join(", ")));
        }
    }
}

/// The keys a Sigma document of this kind may have.
fn keys_of(kind: &[&'static str]) -> Vec<&'static str> {
    COMMON_KEYS.iter().chain(kind).copied().collect()
}

fn base_rule(map: &Mapping, at: &str, problems: &mut Vec<String>) -> Option<Base> {
    let refs: Vec<String> = ["name", "id"].iter().filter_map(|k| text_of(map, k)).collect();
    if refs.is_empty() {
        problems.push(format!("{at}: a detection rule needs a `name` or an `id` for a correlation to refer to it"));
    }
    let before = problems.len();
    let mut source = Vec::new();
    if let Some(logsource) = map.get("logsource") {
        match logsource.as_mapping() {
            Some(ls) => source = logsource_filter(ls, at, problems),
            None => problems.push(format!("{at}: logsource must be a mapping")),
        }
    }
    // The log source (typed columns) first, then the detection.
    let mut parts = source;
    match map.get("detection").and_then(Value::as_mapping) {
        Some(det) => parts.extend(detection(det, &format!("{at}: detection"), problems)),
        None => problems.push(format!("{at}: detection must be a mapping of selections and a condition")),
    }
    (problems.len() == before).then(|| Base { refs, predicate: and_all(parts) })
}

/// `logsource` as a filter on Wazuh alerts.
fn logsource_filter(ls: &Mapping, at: &str, problems: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    let product = text_of(ls, "product");
    let channel = |name: &str| format!("win_channel = {}", quote(name));
    for (key, value) in ls {
        let key = key.as_str().unwrap_or("?");
        let value = value.as_str().unwrap_or_default();
        let unsupported = |problems: &mut Vec<String>, supported: &str| {
            problems.push(format!(
                "{at}: logsource.{key} = {value:?} has no mapping to Wazuh alerts (supported: {supported})"
            ))
        };
        match key {
            "product" => match value {
                "windows" => out.push("decoder = 'windows_eventchannel'".to_string()),
                "linux" => out.push("decoder <> 'windows_eventchannel'".to_string()),
                _ => unsupported(problems, "windows, linux"),
            },
            "service" => match (product.as_deref(), value) {
                (Some("windows"), "security") => out.push(channel("Security")),
                (Some("windows"), "system") => out.push(channel("System")),
                (Some("windows"), "sysmon") => out.push(channel("Microsoft-Windows-Sysmon/Operational")),
                (Some("windows"), "powershell") => out.push(channel("Microsoft-Windows-PowerShell/Operational")),
                (Some("linux"), "sshd" | "sudo" | "auditd" | "pam" | "su") => out.push(format!("decoder = '{value}'")),
                _ => unsupported(
                    problems,
                    "windows: security, system, sysmon, powershell; linux: sshd, sudo, auditd, pam, su",
                ),
            },
            "category" => match (product.as_deref(), value) {
                (Some("windows"), "process_creation") => {
                    out.push(format!("{} AND win_event_id = '1'", channel("Microsoft-Windows-Sysmon/Operational")));
                }
                _ => unsupported(problems, "windows: process_creation (Sysmon event 1)"),
            },
            "definition" => {}
            _ => problems
                .push(format!("{at}: logsource.{key}: unknown key (known: product, service, category, definition)")),
        }
    }
    out
}

/// A `detection` block: its selections and condition, as one predicate.
fn detection(det: &Mapping, at: &str, problems: &mut Vec<String>) -> Option<String> {
    let mut selections = BTreeMap::new();
    let mut condition = None;
    for (key, value) in det {
        let Some(name) = key.as_str() else {
            problems.push(format!("{at}: a selection name must be text"));
            continue;
        };
        if name == "condition" {
            condition = match value {
                Value::String(s) => Some(s.clone()),
                Value::Sequence(list) => {
                    let items: Option<Vec<&str>> = list.iter().map(Value::as_str).collect();
                    items.map(|items| items.iter().map(|c| format!("({c})")).collect::<Vec<_>>().join(" or "))
                }
                _ => None,
            };
            if condition.is_none() {
                problems.push(format!("{at}.condition: must be text (or a list of texts)"));
            }
            continue;
        }
        if name == "timeframe" {
            problems.push(format!(
                "{at}.timeframe: not supported (a Sigma v1 aggregation); write a correlation with `timespan`"
            ));
            continue;
        }
        if let Some(sql) = selection(value, &format!("{at}.{name}"), problems) {
            selections.insert(name.to_string(), sql);
        }
    }
    let Some(condition) = condition else {
        problems.push(format!("{at}: condition is missing"));
        return None;
    };
    match Condition::new(&condition, &selections).parse() {
        Ok(sql) => Some(sql),
        Err(why) => {
            problems.push(format!("{at}.condition {condition:?}: {why}"));
            None
        }
    }
}

/// One selection: a map (every field matches), a list of maps (any map
/// matches) or a list of keywords (any is in `full_log`).
fn selection(value: &Value, at: &str, problems: &mut Vec<String>) -> Option<String> {
    match value {
        Value::Mapping(map) => fields(map, at, problems),
        Value::Sequence(items) if items.iter().all(Value::is_mapping) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .enumerate()
                .map(|(i, m)| fields(m.as_mapping().expect("checked"), &format!("{at}[{i}]"), problems))
                .collect();
            parts.map(or_any)
        }
        Value::Sequence(items) => {
            let mut parts = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match scalar_text(item) {
                    Some(word) => parts.push(like("full_log", &format!("*{word}*"), false)),
                    None => problems.push(format!("{at}[{i}]: a keyword must be text or a number")),
                }
            }
            Some(or_any(parts))
        }
        other => match scalar_text(other) {
            Some(word) => Some(like("full_log", &format!("*{word}*"), false)),
            None => {
                problems.push(format!("{at}: must be a map of fields, a list of maps or a list of keywords"));
                None
            }
        },
    }
}

fn fields(map: &Mapping, at: &str, problems: &mut Vec<String>) -> Option<String> {
    let before = problems.len();
    let mut parts = Vec::new();
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            problems.push(format!("{at}: a field name must be text"));
            continue;
        };
        if let Some(sql) = field(key, value, &format!("{at}.{key}"), problems) {
            parts.push(sql);
        }
    }
    // Cheapest and most selective first: the rest of an AND is evaluated
    // only on the rows that passed (typed columns, such as the event id,
    // then JSON fields).
    parts.sort_by_key(|sql| cost(sql));
    (problems.len() == before).then(|| and_all(parts))
}

/// How costly a predicate is to test on every alert: typed columns 0,
/// JSON fields 1.
fn cost(sql: &str) -> u8 {
    u8::from(sql.contains("json_"))
}

/// What a field name reads: a typed column or a JSON path of `raw`.
enum Target {
    Text(String),
    /// A list column: a value matches when it is one of the items.
    List(&'static str),
}

fn target(field: &str) -> Target {
    let column = match field {
        "agent.name" => Some("agent_name"),
        "agent.id" => Some("agent_id"),
        "agent.ip" => Some("agent_ip"),
        "manager.name" => Some("manager"),
        "rule.id" => Some("rule_id"),
        "rule.level" => Some("CAST(rule_level AS VARCHAR)"),
        "rule.description" => Some("rule_description"),
        "decoder.name" => Some("decoder"),
        "location" => Some("location"),
        "full_log" => Some("full_log"),
        "EventID" => Some("win_event_id"),
        "Channel" => Some("win_channel"),
        "rule.groups" => return Target::List("rule_groups"),
        "rule.mitre.id" => return Target::List("mitre_techniques"),
        "rule.mitre.tactic" => return Target::List("mitre_tactics"),
        _ => None,
    };
    if let Some(c) = column {
        return Target::Text(c.to_string());
    }
    Target::Text(json_text(&wazuh_path(field).iter().map(String::as_str).collect::<Vec<_>>()))
}

/// The Wazuh JSON path of a Sigma field name (see the module docs).
fn wazuh_path(field: &str) -> Vec<String> {
    let system = |k: &str| ["data", "win", "system", k].map(String::from).to_vec();
    match field {
        "Provider_Name" => system("providerName"),
        "Computer" => system("computer"),
        _ if field.contains('.') => field.split('.').map(String::from).collect(),
        _ if field.starts_with(|c: char| c.is_ascii_uppercase()) => {
            let mut chars = field.chars();
            let first = chars.next().expect("non-empty").to_ascii_lowercase();
            ["data", "win", "eventdata"]
                .iter()
                .map(|s| s.to_string())
                .chain([format!("{first}{}", chars.as_str())])
                .collect()
        }
        _ => vec!["data".to_string(), field.to_string()],
    }
}

fn json_text(path: &[&str]) -> String {
    let keys: Vec<String> = path.iter().map(|k| quote(k)).collect();
    format!("json_as_text(raw, {})", keys.join(", "))
}

const MODIFIERS: &[&str] =
    &["contains", "startswith", "endswith", "all", "re", "cased", "exists", "gt", "gte", "lt", "lte"];

/// One `field|modifiers: value(s)` entry.
fn field(key: &str, value: &Value, at: &str, problems: &mut Vec<String>) -> Option<String> {
    let mut parts = key.split('|');
    let name = parts.next().unwrap_or_default();
    let modifiers: Vec<&str> = parts.collect();
    if name.is_empty() {
        problems.push(format!("{at}: keyword lists with modifiers are not supported; name a field"));
        return None;
    }
    for m in &modifiers {
        if !MODIFIERS.contains(m) {
            problems.push(format!("{at}: modifier {m:?} is not supported (supported: {})", MODIFIERS.join(", ")));
            return None;
        }
    }
    let has = |m: &str| modifiers.contains(&m);
    let values: Vec<&Value> = match value {
        Value::Sequence(list) if !list.is_empty() => list.iter().collect(),
        Value::Sequence(_) => {
            problems.push(format!("{at}: an empty list matches nothing; give at least one value"));
            return None;
        }
        v => vec![v],
    };
    let target = target(name);
    let mut out = Vec::new();
    let mut patterns = Vec::new();
    for v in values {
        let expr = match (&target, v) {
            (Target::Text(e), Value::Bool(want)) if has("exists") => {
                format!("{e} IS {}NULL", if *want { "NOT " } else { "" })
            }
            (_, _) if has("exists") => {
                problems.push(format!("{at}: exists takes true or false"));
                return None;
            }
            (Target::Text(e), Value::Null) => format!("{e} IS NULL"),
            (Target::Text(e), v) if ["gt", "gte", "lt", "lte"].iter().any(|m| has(m)) => {
                let Some(n) = v.as_i64().map(|n| n.to_string()).or_else(|| v.as_f64().map(|f| f.to_string())) else {
                    problems.push(format!("{at}: {} compares numbers; {v:?} is not one", modifiers.join("|")));
                    return None;
                };
                let op = [("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")]
                    .iter()
                    .find(|(m, _)| has(m))
                    .map(|(_, op)| *op)
                    .expect("one of them");
                format!("TRY_CAST({e} AS DOUBLE) {op} {n}")
            }
            (Target::Text(e), v) if has("re") => {
                let Some(re) = v.as_str() else {
                    problems.push(format!("{at}: re takes a regular expression as text"));
                    return None;
                };
                format!("regexp_like({e}, {})", quote(re))
            }
            (Target::Text(_), v) => {
                let Some(text) = scalar_text(v) else {
                    problems.push(format!("{at}: a value must be text, a number, a boolean or null"));
                    return None;
                };
                patterns.push(if has("contains") {
                    format!("*{text}*")
                } else if has("startswith") {
                    format!("{text}*")
                } else if has("endswith") {
                    format!("*{text}")
                } else {
                    text
                });
                continue;
            }
            (Target::List(column), v) => {
                let Some(text) = scalar_text(v) else {
                    problems.push(format!("{at}: a value must be text"));
                    return None;
                };
                if !modifiers.is_empty() || text.contains(['*', '?']) {
                    problems
                        .push(format!("{at}: a list field ({column}) matches whole items: no modifiers or wildcards"));
                    return None;
                }
                format!("array_has({column}, {})", quote(&text))
            }
        };
        out.push(expr);
    }
    if let (Target::Text(e), false) = (&target, patterns.is_empty()) {
        if has("all") {
            out.extend(patterns.iter().map(|p| like(e, p, has("cased"))));
        } else {
            let test = any_of(e, &patterns, has("cased"));
            out.push(match raw_prefilter(e, &patterns, has("cased")) {
                Some(pre) => format!("({pre}) AND ({test})"),
                None => test,
            });
        }
    }
    Some(if has("all") { and_all(out) } else { or_any(out) })
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A character of a Sigma string, or a wildcard.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Piece {
    Lit(char),
    /// `*`: any run of characters.
    Many,
    /// `?`: any one character.
    One,
}

/// A Sigma string: `*`/`?` are wildcards; `\*`, `\?`, `\\` escape them; a
/// backslash before anything else is itself.
fn pieces(pattern: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(match c {
            '\\' if matches!(chars.peek(), Some('*' | '?' | '\\')) => Piece::Lit(chars.next().expect("peeked")),
            '*' => Piece::Many,
            '?' => Piece::One,
            c => Piece::Lit(c),
        });
    }
    out
}

/// Whether to compare case-insensitively: unless `cased`, or the patterns
/// have no letters (event ids, numbers have no case to ignore).
fn folds(patterns: &[Vec<Piece>], cased: bool) -> bool {
    !cased && patterns.iter().flatten().any(|p| matches!(p, Piece::Lit(c) if c.is_alphabetic()))
}

fn literal(p: &[Piece], fold: bool) -> Option<String> {
    let text: Option<String> = p.iter().map(|x| if let Piece::Lit(c) = x { Some(*c) } else { None }).collect();
    text.map(|t| if fold { t.to_lowercase() } else { t })
}

/// A Sigma string match, case-insensitive unless `cased`: equality, or
/// `LIKE` with wildcards.
fn like(expr: &str, pattern: &str, cased: bool) -> String {
    let p = pieces(pattern);
    let fold = folds(std::slice::from_ref(&p), cased);
    let expr = if fold { format!("lower({expr})") } else { expr.to_string() };
    if let Some(text) = literal(&p, fold) {
        return format!("{expr} = {}", quote(&text));
    }
    let mut sql = String::new();
    for x in p {
        match x {
            Piece::Many => sql.push('%'),
            Piece::One => sql.push('_'),
            Piece::Lit(c @ ('%' | '_' | '\\')) => {
                sql.push('\\');
                sql.push(c);
            }
            Piece::Lit(c) if fold => sql.extend(c.to_lowercase()),
            Piece::Lit(c) => sql.push(c),
        }
    }
    format!("{expr} LIKE {}", quote(&sql))
}

/// Any of several Sigma strings: one `IN` list, or one regular expression,
/// so that the field is read once per alert, not once per value.
fn any_of(expr: &str, patterns: &[String], cased: bool) -> String {
    if let [one] = patterns {
        return like(expr, one, cased);
    }
    let parsed: Vec<Vec<Piece>> = patterns.iter().map(|p| pieces(p)).collect();
    let fold = folds(&parsed, cased);
    let texts: Option<Vec<String>> = parsed.iter().map(|p| literal(p, fold)).collect();
    if let Some(texts) = texts {
        let expr = if fold { format!("lower({expr})") } else { expr.to_string() };
        return format!("{expr} IN ({})", texts.iter().map(|t| quote(t)).collect::<Vec<_>>().join(", "));
    }
    let alternatives: Vec<String> = parsed.iter().map(|p| regex_of(p)).collect();
    let flags = if fold { "(?is)" } else { "(?s)" };
    format!("regexp_like({expr}, {})", quote(&format!("{flags}^(?:{})$", alternatives.join("|"))))
}

/// A cheap test that every alert matching one of `patterns` on a JSON
/// field passes, so that the JSON is parsed only for alerts that might
/// match: the raw text must contain a literal run of each pattern. Only
/// for runs whose JSON text is the run itself (no character JSON may
/// escape) and whose case cannot differ (digits, or `cased`); `None`
/// otherwise.
fn raw_prefilter(expr: &str, patterns: &[String], cased: bool) -> Option<String> {
    if !expr.starts_with("json_as_text(raw") {
        return None;
    }
    let mut tests = Vec::new();
    for p in patterns {
        let pieces = pieces(p);
        let longest = pieces
            .split(|x| !matches!(x, Piece::Lit(_)))
            .map(|run| run.iter().map(|x| if let Piece::Lit(c) = x { *c } else { '?' }).collect::<String>())
            .max_by_key(String::len)?;
        let plain = longest.chars().all(|c| c.is_ascii_alphanumeric() || " _.:-".contains(c));
        let caseless = cased || !longest.chars().any(|c| c.is_alphabetic());
        if longest.len() < 2 || !plain || !caseless {
            return None;
        }
        tests.push(format!("strpos(raw, {}) > 0", quote(&longest)));
    }
    tests.dedup();
    Some(or_any(tests))
}

fn regex_of(p: &[Piece]) -> String {
    let mut out = String::new();
    for x in p {
        match x {
            Piece::Many => out.push_str(".*"),
            Piece::One => out.push('.'),
            Piece::Lit(c) => {
                if "\\.+*?()|[]{}^$#&-~".contains(*c) {
                    out.push('\\');
                }
                out.push(*c);
            }
        }
    }
    out
}

/// An SQL string literal.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn and_all(parts: Vec<String>) -> String {
    match parts.len() {
        0 => "true".to_string(),
        1 => parts.into_iter().next().expect("one"),
        _ => parts.iter().map(|p| format!("({p})")).collect::<Vec<_>>().join(" AND "),
    }
}

fn or_any(parts: Vec<String>) -> String {
    match parts.len() {
        0 => "false".to_string(),
        1 => parts.into_iter().next().expect("one"),
        _ => parts.iter().map(|p| format!("({p})")).collect::<Vec<_>>().join(" OR "),
    }
}

/// A detection's condition, parsed by recursive descent:
/// `or` < `and` < `not` < atoms (a selection, `1 of x*`, `all of them`,
/// parentheses).
struct Condition<'a> {
    tokens: Vec<String>,
    at: usize,
    selections: &'a BTreeMap<String, String>,
}

impl<'a> Condition<'a> {
    fn new(text: &str, selections: &'a BTreeMap<String, String>) -> Self {
        let spaced = text.replace('(', " ( ").replace(')', " ) ");
        Condition { tokens: spaced.split_whitespace().map(String::from).collect(), at: 0, selections }
    }

    fn parse(mut self) -> Result<String, String> {
        if self.tokens.iter().any(|t| t == "|") {
            return Err("pipe aggregations (`| count() ...`) are Sigma v1; write a correlation rule".into());
        }
        let sql = self.or()?;
        match self.tokens.get(self.at) {
            None => Ok(sql),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }

    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn or(&mut self) -> Result<String, String> {
        let mut parts = vec![self.and()?];
        while self.peek() == Some("or") {
            self.at += 1;
            parts.push(self.and()?);
        }
        Ok(or_any(parts))
    }

    fn and(&mut self) -> Result<String, String> {
        let mut parts = vec![self.not()?];
        while self.peek() == Some("and") {
            self.at += 1;
            parts.push(self.not()?);
        }
        Ok(and_all(parts))
    }

    fn not(&mut self) -> Result<String, String> {
        if self.peek() == Some("not") {
            self.at += 1;
            // A selection that cannot be evaluated (a missing field) is
            // not a match, so `not` of it is.
            return Ok(format!("NOT coalesce(({}), false)", self.not()?));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<String, String> {
        let Some(token) = self.next() else { return Err("ends too early".into()) };
        match token.as_str() {
            "(" => {
                let inner = self.or()?;
                match self.next().as_deref() {
                    Some(")") => Ok(format!("({inner})")),
                    _ => Err("a `(` is not closed".into()),
                }
            }
            "1" | "all" | "any" => {
                if self.next().as_deref() != Some("of") {
                    return Err(format!("{token:?} must be followed by `of`"));
                }
                let Some(pattern) = self.next() else { return Err(format!("`{token} of` names no selections")) };
                let chosen: Vec<String> = self
                    .selections
                    .iter()
                    .filter(|(name, _)| if pattern == "them" { !name.starts_with('_') } else { glob(&pattern, name) })
                    .map(|(_, sql)| sql.clone())
                    .collect();
                if chosen.is_empty() {
                    return Err(format!("`{token} of {pattern}` matches no selection"));
                }
                Ok(if token == "all" { and_all(chosen) } else { or_any(chosen) })
            }
            "and" | "or" | "not" | ")" => Err(format!("unexpected {token:?}")),
            name => match self.selections.get(name) {
                Some(sql) => Ok(sql.clone()),
                None => Err(format!(
                    "no selection named {name:?} (selections: {})",
                    self.selections.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            },
        }
    }
}

/// Sigma's selection-name patterns: `*` matches any run of characters.
fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => {
            name.starts_with(head)
                && (0..=name.len() - head.len())
                    .any(|i| name.is_char_boundary(head.len() + i) && glob(tail, &name[head.len() + i..]))
        }
    }
}

/// The entity kind a `group-by` field names, if any.
pub fn entity_of(field: &str) -> Option<EntityKind> {
    let last = field.rsplit('.').next().unwrap_or(field).to_ascii_lowercase();
    Some(match last.as_str() {
        "targetusername" | "subjectusername" | "user" | "username" | "accountname" | "dstuser" | "srcuser"
        | "samaccountname" => EntityKind::User,
        "ipaddress" | "sourceip" | "sourceaddress" | "clientip" | "srcip" | "src_ip" | "destinationip" | "dstip"
        | "dst_ip" | "ip" => EntityKind::Ip,
        "computer" | "hostname" | "workstationname" | "host" => EntityKind::Host,
        "name" if field == "agent.name" => EntityKind::Host,
        "name" if field.ends_with("user.name") => EntityKind::User,
        "image" | "processname" | "newprocessname" | "parentimage" | "imagepath" | "servicefilename" => {
            EntityKind::Process
        }
        "hashes" | "md5" | "sha1" | "sha256" | "md5_after" | "sha1_after" | "sha256_after" => EntityKind::Hash,
        "url" => EntityKind::Url,
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    EventCount,
    ValueCount,
    Temporal,
    TemporalOrdered,
}

fn correlation(
    map: &Mapping,
    at: &str,
    several: bool,
    bases: &[Base],
    origin: &Path,
    limits: Limits,
    problems: &mut Vec<String>,
) -> Option<Rule> {
    let before = problems.len();
    let c = map.get("correlation").and_then(Value::as_mapping);
    let Some(c) = c else {
        problems.push(format!("{at}: correlation must be a mapping"));
        return None;
    };
    let at_c = format!("{at}: correlation");
    unknown_keys(c, &["type", "rules", "group-by", "timespan", "condition", "aliases", "generate"], &at_c, problems);
    if c.contains_key("aliases") {
        problems
            .push(format!("{at_c}.aliases: not supported; the group-by fields must have the same name in every rule"));
    }
    if c.get("generate").and_then(Value::as_bool) == Some(true) {
        problems.push(format!("{at_c}.generate: true is not supported (the detection rules do not fire on their own)"));
    }
    let kind = match text_of(c, "type").as_deref() {
        Some("event_count") => Some(Kind::EventCount),
        Some("value_count") => Some(Kind::ValueCount),
        Some("temporal") => Some(Kind::Temporal),
        Some("temporal_ordered") => Some(Kind::TemporalOrdered),
        other => {
            problems.push(format!(
                "{at_c}.type = {other:?}: must be event_count, value_count, temporal or temporal_ordered"
            ));
            None
        }
    };
    // The detection rules it correlates.
    let names: Vec<String> = match c.get("rules") {
        Some(Value::Sequence(list)) => list.iter().filter_map(scalar_text).collect(),
        Some(v) => scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    };
    if names.is_empty() {
        problems.push(format!("{at_c}.rules: name at least one detection rule of this file"));
    }
    let mut predicates = Vec::new();
    for name in &names {
        match bases.iter().find(|b| b.refs.contains(name)) {
            Some(b) => predicates.push(b.predicate.clone()),
            None => problems.push(format!(
                "{at_c}.rules: {name:?} is not a detection rule of this file (a correlation runs over the rules of its own file)"
            )),
        }
    }
    if matches!(kind, Some(Kind::Temporal | Kind::TemporalOrdered)) && names.len() < 2 {
        problems.push(format!("{at_c}.rules: a temporal correlation needs two rules or more"));
    }
    if names.len() > 8 {
        problems.push(format!("{at_c}.rules: at most 8 rules"));
    }
    // Group-by and the entities they name.
    let group_by: Vec<String> = match c.get("group-by") {
        Some(Value::Sequence(list)) => list.iter().filter_map(scalar_text).collect(),
        Some(v) => scalar_text(v).into_iter().collect(),
        None => Vec::new(),
    };
    let mut entities: Vec<(EntityKind, String)> = Vec::new();
    for g in &group_by {
        if let Some(kind) = entity_of(g)
            && !entities.iter().any(|(k, _)| *k == kind)
        {
            entities.push((kind, g.clone()));
        }
    }
    if entities.is_empty() {
        problems.push(format!(
            "{at_c}.group-by {group_by:?}: no field names an entity (a user, IP, host, process, hash or URL field); \
             Sluice joins a detection to a cluster by its entities"
        ));
    }
    // Timespan → window.
    let span = match c.get("timespan").and_then(Value::as_str) {
        Some(t) => match humantime::parse_duration(t) {
            Ok(d) if d.as_millis() >= 1000 && d.as_millis() <= limits.max_window.millis() as u128 => {
                Some(d.as_millis() as i64)
            }
            Ok(_) => {
                problems.push(format!(
                    "{at_c}.timespan = {t:?}: must be at least 1s and at most rules.max_window = {} \
                     (state holds a tenant's alerts that long)",
                    limits.max_window
                ));
                None
            }
            Err(e) => {
                problems.push(format!("{at_c}.timespan = {t:?}: {e} (write e.g. 5m, 1h, 1d)"));
                None
            }
        },
        None => {
            problems.push(format!("{at_c}.timespan is missing"));
            None
        }
    };
    // Condition.
    let condition = match (kind, c.get("condition")) {
        (Some(Kind::TemporalOrdered), Some(_)) => {
            problems.push(format!(
                "{at_c}.condition: temporal_ordered matches every rule, in order; it takes no condition"
            ));
            None
        }
        (Some(Kind::Temporal | Kind::TemporalOrdered) | None, None) => None,
        (Some(_), None) => {
            problems.push(format!("{at_c}.condition is missing (e.g. {{gte: 10}})"));
            None
        }
        (_, Some(Value::Mapping(m))) => Some(m.clone()),
        (_, Some(_)) => {
            problems.push(format!("{at_c}.condition must be a mapping (e.g. {{gte: 10}})"));
            None
        }
    };
    let mut having = Vec::new();
    let mut value_field = None;
    if let Some(cond) = &condition {
        for (k, v) in cond {
            let k = k.as_str().unwrap_or("?");
            let op = match k {
                "gt" => ">",
                "gte" => ">=",
                "lt" => "<",
                "lte" => "<=",
                "eq" => "=",
                "neq" => "<>",
                "field" if kind == Some(Kind::ValueCount) => {
                    value_field = v.as_str().map(String::from);
                    if value_field.is_none() {
                        problems.push(format!("{at_c}.condition.field must name a field"));
                    }
                    continue;
                }
                _ => {
                    problems.push(format!(
                        "{at_c}.condition.{k}: unknown (gt, gte, lt, lte, eq, neq{})",
                        if kind == Some(Kind::ValueCount) { ", field" } else { "" }
                    ));
                    continue;
                }
            };
            match v.as_u64() {
                Some(n) => having.push((op, n)),
                None => problems.push(format!("{at_c}.condition.{k} must be a whole number")),
            }
        }
        if having.is_empty() {
            problems.push(format!("{at_c}.condition: give a threshold (gt, gte, lt, lte, eq or neq)"));
        }
    }
    if kind == Some(Kind::ValueCount) && value_field.is_none() && condition.is_some() {
        problems.push(format!("{at_c}.condition.field: value_count counts the distinct values of a field; name it"));
    }
    // The rest of the rule.
    let name = match text_of(map, "name") {
        Some(n) => n,
        None if several => {
            problems.push(format!("{at}: name is missing (a file with several correlations must name each)"));
            String::new()
        }
        None => origin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
    };
    if !name.is_empty() && !valid_name(&name) {
        problems.push(format!("{at}: name = {name:?}: use letters, digits, '-', '_' or '.'"));
    }
    let severity = match text_of(map, "level") {
        None => 50,
        Some(level) => severity_word(&level).unwrap_or_else(|| {
            problems.push(format!("{at}: level = {level:?}: must be informational, low, medium, high or critical"));
            0
        }),
    };
    let tags = match map.get("tags") {
        Some(Value::Sequence(list)) => list.iter().filter_map(Value::as_str).map(tag).collect(),
        _ => Vec::new(),
    };
    let enabled = !matches!(text_of(map, "status").as_deref(), Some("deprecated" | "unsupported"));
    if problems.len() > before {
        return None;
    }
    let (kind, span) = (kind?, span?);
    let slide = (span / 4).max(1);
    debug_assert!(span / slide <= MAX_HOPS);
    let sql = correlation_sql(kind, &names, &predicates, &group_by, value_field.as_deref(), &having, span);
    Some(Rule {
        name,
        description: text_of(map, "description").or_else(|| text_of(map, "title")).unwrap_or_default(),
        severity,
        tags,
        window: Window::Hopping { size: span, slide },
        early: None,
        // The result names each group-by column after its field.
        entities,
        scope: Scope::All,
        enabled,
        sql,
        origin: origin.to_path_buf(),
    })
}

/// `attack.t1110.003` → `T1110.003`; other tags as written.
fn tag(t: &str) -> String {
    match t.strip_prefix("attack.") {
        Some(id) if id.starts_with('t') && id[1..].starts_with(|c: char| c.is_ascii_digit()) => id.to_uppercase(),
        _ => t.to_string(),
    }
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The SQL of a correlation over one window (see the module docs).
fn correlation_sql(
    kind: Kind,
    names: &[String],
    predicates: &[String],
    group_by: &[String],
    value_field: Option<&str>,
    having: &[(&str, u64)],
    span: i64,
) -> String {
    let text = |field: &str| match target(field) {
        Target::Text(e) => e,
        Target::List(c) => format!("array_to_string({c}, ',')"),
    };
    // hits: the alerts any named rule matched, with their group and which rules.
    let mut select = vec!["alert_id".to_string(), "event_time".to_string()];
    for (i, g) in group_by.iter().enumerate() {
        select.push(format!("{} AS g{i}", text(g)));
    }
    if let Some(v) = value_field {
        select.push(format!("lower({}) AS v", text(v)));
    }
    for (i, p) in predicates.iter().enumerate() {
        select.push(format!("coalesce(({p}), false) AS r{i}"));
    }
    // Rows without a group (or value) never count; tested after the rules'
    // predicates, which test cheap typed columns first.
    let mut keep: Vec<String> = group_by.iter().map(|g| format!("{} IS NOT NULL", text(g))).collect();
    if let Some(v) = value_field {
        keep.push(format!("{} IS NOT NULL", text(v)));
    }
    let keys: Vec<String> = (0..group_by.len()).map(|i| format!("g{i}")).collect();
    let outputs: Vec<String> = group_by.iter().enumerate().map(|(i, g)| format!("g{i} AS {}", ident(g))).collect();
    let threshold = |measure: &str| -> String {
        having.iter().map(|(op, n)| format!("{measure} {op} {n}")).collect::<Vec<_>>().join(" AND ")
    };
    let rules = names.join(", ");
    let matches: Vec<String> = predicates.iter().map(|p| format!("({p})")).collect();
    if predicates.len() == 1 {
        // Every row that passes the WHERE matched the one rule.
        select.pop();
        select.push("true AS r0".into());
    }
    let mut sql = format!(
        "-- Sigma correlation ({kind:?}) over {rules}, timespan {}\nWITH hits AS (\n  SELECT {}\n  FROM alerts\n  \
         WHERE ({}){}\n)\n",
        sluice_operators::time::Duration(span),
        select.join(",\n         "),
        matches.join("\n      OR "),
        keep.iter().map(|k| format!("\n    AND {k}")).collect::<String>(),
    );
    let group = keys.join(", ");
    match kind {
        Kind::EventCount => sql.push_str(&format!(
            "SELECT {}, count(*) AS events, array_agg(alert_id) AS alert_ids,\n       \
             concat(count(*), ' events of {}') AS summary\nFROM hits GROUP BY {group}\nHAVING {}",
            outputs.join(", "),
            rules.replace('\'', "''"),
            threshold("count(*)")
        )),
        Kind::ValueCount => sql.push_str(&format!(
            "SELECT {}, count(DISTINCT v) AS distinct_values, array_agg(alert_id) AS alert_ids,\n       \
             concat(count(DISTINCT v), ' distinct {} values') AS summary\nFROM hits GROUP BY {group}\nHAVING {}",
            outputs.join(", "),
            value_field.unwrap_or_default().replace('\'', "''"),
            threshold("count(DISTINCT v)")
        )),
        Kind::Temporal => {
            let matched: Vec<String> =
                (0..predicates.len()).map(|i| format!("CAST(bool_or(r{i}) AS BIGINT)")).collect();
            let measure = format!("({})", matched.join(" + "));
            let cond =
                if having.is_empty() { format!("{measure} = {}", predicates.len()) } else { threshold(&measure) };
            sql.push_str(&format!(
                "SELECT {}, array_agg(alert_id) AS alert_ids,\n       concat({measure}, ' of {} rules matched: {}') AS summary\n\
                 FROM hits GROUP BY {group}\nHAVING {cond}",
                outputs.join(", "),
                predicates.len(),
                rules.replace('\'', "''"),
            ));
        }
        Kind::TemporalOrdered => {
            // The earliest match of each rule after the previous rule's.
            let on =
                |a: &str, b: &str| keys.iter().map(|k| format!("{a}.{k} = {b}.{k}")).collect::<Vec<_>>().join(" AND ");
            sql.truncate(sql.len() - 1);
            sql.push_str(&format!(
                ",\ns0 AS (SELECT {group}, min(event_time) AS t FROM hits WHERE r0 GROUP BY {group})"
            ));
            for i in 1..predicates.len() {
                let cols: Vec<String> = keys.iter().map(|k| format!("h.{k}")).collect();
                sql.push_str(&format!(
                    ",\ns{i} AS (SELECT {}, min(h.event_time) AS t FROM hits h JOIN s{} p ON {} \
                     WHERE h.r{i} AND h.event_time >= p.t GROUP BY {})",
                    cols.join(", "),
                    i - 1,
                    on("h", "p"),
                    cols.join(", ")
                ));
            }
            let last = predicates.len() - 1;
            let cols: Vec<String> = keys.iter().map(|k| format!("h.{k}")).collect();
            let outs: Vec<String> =
                group_by.iter().enumerate().map(|(i, g)| format!("h.g{i} AS {}", ident(g))).collect();
            sql.push_str(&format!(
                "\nSELECT {}, array_agg(h.alert_id) AS alert_ids,\n       '{} in order' AS summary\n\
                 FROM hits h JOIN s0 ON {} JOIN s{last} e ON {}\nWHERE h.event_time >= s0.t AND h.event_time <= e.t\n\
                 GROUP BY {}",
                outs.join(", "),
                rules.replace('\'', "''"),
                on("h", "s0"),
                on("h", "e"),
                cols.join(", ")
            ));
        }
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<Vec<Rule>, RuleError> {
        parse(text, Path::new("rules/spray.yml"), Limits::default())
    }

    const SPRAY: &str = r#"
title: Failed Windows logon
name: failed_logon
logsource: { product: windows, service: security }
detection:
  selection:
    EventID: 4625
  filter:
    TargetUserName|endswith: '$'
  condition: selection and not filter
---
title: One source, many users
correlation:
  type: value_count
  rules: [failed_logon]
  group-by: [IpAddress]
  timespan: 10m
  condition: { gte: 5, field: TargetUserName }
level: high
tags: [attack.credential_access, attack.t1110.003]
"#;

    #[test]
    fn a_value_count_correlation_compiles_to_one_rule() {
        let rules = parse_text(SPRAY).unwrap();
        assert_eq!(rules.len(), 1);
        let r = &rules[0];
        assert_eq!(r.name, "spray");
        assert_eq!(r.severity, 75);
        assert_eq!(r.tags, ["attack.credential_access", "T1110.003"]);
        assert_eq!(r.window, Window::Hopping { size: 600_000, slide: 150_000 });
        assert_eq!(r.entities, vec![(EntityKind::Ip, "IpAddress".to_string())]);
        for part in [
            "win_event_id = '4625'",
            "json_as_text(raw, 'data', 'win', 'eventdata', 'targetUserName') LIKE '%$'",
            "NOT coalesce(",
            "decoder = 'windows_eventchannel'",
            "win_channel = 'Security'",
            "count(DISTINCT v) >= 5",
        ] {
            assert!(r.sql.contains(part), "{part} not in:\n{}", r.sql);
        }
        // The event id and channel are typed columns: no JSON is read for
        // them, and they are tested before the JSON fields.
        assert!(!r.sql.contains("'eventID'") && !r.sql.contains("'channel'") && !r.sql.contains("strpos"), "{}", r.sql);
        let filter = &r.sql[r.sql.find("WHERE").expect("a filter")..];
        let typed = filter.find("win_event_id = '4625'").expect("the event id");
        let json = filter.find("json_as_text").expect("a JSON field");
        assert!(typed < json, "{}", r.sql);
    }

    #[test]
    fn process_creation_is_sysmon_event_1_on_typed_columns() {
        let mut problems = Vec::new();
        let ls: Mapping = serde_yaml_ng::from_str("{product: windows, category: process_creation}").unwrap();
        let parts = logsource_filter(&ls, "t", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let sysmon = parts.iter().find(|p| p.contains("Sysmon")).expect("the Sysmon part");
        assert_eq!(sysmon, "win_channel = 'Microsoft-Windows-Sysmon/Operational' AND win_event_id = '1'");
        assert_eq!(cost(sysmon), 0);
    }

    #[test]
    fn wildcards_escapes_and_case() {
        // Sigma escapes: `\*` is a literal star, `\\*` a backslash and a wildcard,
        // a backslash before anything else is itself.
        assert_eq!(like("x", "C:\\Users\\\\*\\AppData\\*", false), "lower(x) LIKE 'c:\\\\users\\\\%\\\\appdata*'");
        assert_eq!(like("x", "50%", true), "x = '50%'");
        assert_eq!(like("x", "a\\*b", false), "lower(x) = 'a*b'");
        assert_eq!(like("x", "it's", true), "x = 'it''s'");
        assert_eq!(like("x", "a_b?", false), "lower(x) LIKE 'a\\_b_'");
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(any_of("x", &list(&["Ab", "cd"]), false), "lower(x) IN ('ab', 'cd')");
        let raw = "json_as_text(raw, 'data', 'win', 'eventdata', 'logonType')";
        assert_eq!(
            raw_prefilter(raw, &list(&["10", "11"]), false).as_deref(),
            Some("(strpos(raw, '10') > 0) OR (strpos(raw, '11') > 0)")
        );
        assert_eq!(raw_prefilter(raw, &list(&["admin"]), false), None, "letters may differ in case");
        assert_eq!(raw_prefilter(raw, &list(&["*\\x.exe"]), true), None, "a backslash is escaped in JSON");
        assert_eq!(raw_prefilter("agent_name", &list(&["4625"]), false), None, "typed columns need none");
        assert_eq!(
            any_of("x", &list(&["*\\who.exe", "net?"]), false),
            "regexp_like(x, '(?is)^(?:.*\\\\who\\.exe|net.)$')"
        );
    }

    #[test]
    fn conditions_of_selections() {
        let mut s = BTreeMap::new();
        s.insert("sel_a".to_string(), "A".to_string());
        s.insert("sel_b".to_string(), "B".to_string());
        s.insert("filter".to_string(), "F".to_string());
        let c = |text: &str| Condition::new(text, &s).parse();
        assert_eq!(c("1 of sel_* and not filter").unwrap(), "((A) OR (B)) AND (NOT coalesce((F), false))");
        assert_eq!(c("all of them").unwrap(), "(F) AND (A) AND (B)", "selections in name order");
        assert_eq!(c("(sel_a or sel_b)").unwrap(), "((A) OR (B))");
        assert!(c("sel_a and").unwrap_err().contains("ends too early"));
        assert!(c("sel_c").unwrap_err().contains("sel_c"));
        assert!(c("selection | count() > 5").unwrap_err().contains("v1"));
    }

    #[test]
    fn field_names_reach_wazuh_fields() {
        assert_eq!(wazuh_path("TargetUserName"), ["data", "win", "eventdata", "targetUserName"]);
        assert_eq!(wazuh_path("Provider_Name"), ["data", "win", "system", "providerName"]);
        assert!(matches!(target("EventID"), Target::Text(c) if c == "win_event_id"));
        assert!(matches!(target("Channel"), Target::Text(c) if c == "win_channel"));
        assert_eq!(wazuh_path("srcip"), ["data", "srcip"]);
        assert_eq!(wazuh_path("syscheck.path"), ["syscheck", "path"]);
        assert!(matches!(target("agent.name"), Target::Text(c) if c == "agent_name"));
        assert!(matches!(target("rule.groups"), Target::List("rule_groups")));
        assert_eq!(entity_of("TargetUserName"), Some(EntityKind::User));
        assert_eq!(entity_of("data.srcip"), Some(EntityKind::Ip));
        assert_eq!(entity_of("agent.name"), Some(EntityKind::Host));
        assert_eq!(entity_of("EventID"), None);
    }

    #[test]
    fn what_is_not_supported_is_refused_with_key_and_reason() {
        let bad = SPRAY
            .replace("EventID: 4625", "EventID|base64: 4625")
            .replace("group-by: [IpAddress]", "group-by: [EventID]\n  aliases: {}")
            .replace("rules: [failed_logon]", "rules: [failed_logon, elsewhere]")
            .replace("timespan: 10m", "timespan: 3days");
        let Err(RuleError::Invalid { origin, problems }) = parse_text(&bad) else { panic!("must fail") };
        assert_eq!(origin, Path::new("rules/spray.yml"));
        let all = problems.join("\n");
        for needle in [
            "detection.selection.EventID|base64: modifier \"base64\" is not supported",
            "correlation.aliases: not supported",
            "\"elsewhere\" is not a detection rule of this file",
            "no field names an entity",
            "rules.max_window",
        ] {
            assert!(all.contains(needle), "{needle:?} not in:\n{all}");
        }
        let e = parse_text(&SPRAY.replace("level: high", "level: high\nfrequency: 5")).unwrap_err().to_string();
        assert!(e.contains("unknown key \"frequency\""), "{e}");
    }
}
