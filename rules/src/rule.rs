//! The rule file: what a detection engineer writes. Three forms say the
//! same thing; the file's extension picks the form.
//!
//! TOML (`.toml`), with the SQL inside:
//!
//! ```toml
//! name = "ssh-brute-force-then-login"
//! description = "Failed logins from one source, then a success from it"
//! severity = 80                      # 0–100, or "low" | "medium" | "high" | "critical"
//! tags = ["T1110", "T1078"]
//! window = { kind = "tumbling", size = "15m" }   # hopping: size + slide; session: gap
//! entities = { ip = "src_ip", host = "host" }    # result column per entity kind
//! tenants = ["acme"]                 # optional: default every tenant
//! enabled = true                     # optional
//! sql = """
//! SELECT src_ip, max(agent_name) AS host, array_agg(alert_id) AS alert_ids
//! FROM alerts WHERE ... GROUP BY src_ip HAVING ...
//! """
//! ```
//!
//! YAML (`.yaml`, `.yml`) with the same keys, or a Sigma correlation rule
//! (see [`crate::sigma`]); and `.sql`: the SQL, after a header of `--`
//! comment lines holding the other keys as YAML:
//!
//! ```sql
//! -- severity: high
//! -- window: { kind: tumbling, size: 15m }
//! -- entities: { ip: src_ip }
//! SELECT src_ip, array_agg(alert_id) AS alert_ids FROM alerts GROUP BY src_ip
//! ```
//!
//! The SQL reads the table `alerts`: one tenant's alerts of one window.
//! Every result row is a detection. Besides the entity columns, a result
//! may carry `alert_ids` (a list of alert ids: the matching alerts),
//! `severity` (an integer 0–100 overriding the rule's) and `summary` (text).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use sluice_operators::cluster::EntityKind;
use sluice_operators::time::Duration;

use crate::error::RuleError;

/// A rule file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    severity: Severity,
    #[serde(default)]
    tags: Vec<String>,
    window: WindowFile,
    entities: std::collections::BTreeMap<EntityKind, String>,
    #[serde(default)]
    tenants: Option<Vec<String>>,
    #[serde(default = "yes")]
    enabled: bool,
    sql: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Severity {
    Number(i64),
    Word(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    kind: String,
    size: Option<Duration>,
    slide: Option<Duration>,
    gap: Option<Duration>,
    early: Option<Duration>,
}

/// When a rule's SQL runs, in event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Back-to-back windows of `size`, aligned to the epoch.
    Tumbling { size: i64 },
    /// Windows of `size` starting every `slide` (overlapping).
    Hopping { size: i64, slide: i64 },
    /// A run of alerts with no gap of `gap` or more; at most `max` long.
    Session { gap: i64, max: i64 },
}

impl Window {
    /// The longest stretch of event time one evaluation covers.
    pub fn span(&self) -> i64 {
        match *self {
            Window::Tumbling { size } | Window::Hopping { size, .. } => size,
            Window::Session { max, .. } => max,
        }
    }

    pub fn describe(&self) -> String {
        let d = |ms: i64| Duration(ms).to_string();
        match *self {
            Window::Tumbling { size } => format!("tumbling {}", d(size)),
            Window::Hopping { size, slide } => format!("hopping {} every {}", d(size), d(slide)),
            Window::Session { gap, max } => format!("session, gap {} (at most {})", d(gap), d(max)),
        }
    }
}

/// Which tenants a rule runs for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Only(Vec<String>),
}

impl Scope {
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(list) => list.iter().any(|t| t == tenant),
        }
    }
}

/// A parsed rule, its SQL not yet planned (see [`crate::engine`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub name: String,
    pub description: String,
    pub severity: u8,
    pub tags: Vec<String>,
    pub window: Window,
    /// Evaluate the next window while it is still open, every this much
    /// event time (ms), and fire as soon as it matches (`window.early`).
    pub early: Option<i64>,
    /// Result column per entity kind, in kind order.
    pub entities: Vec<(EntityKind, String)>,
    pub scope: Scope,
    pub enabled: bool,
    pub sql: String,
    /// Where the rule came from (a path, or `builtin:NAME`).
    pub origin: PathBuf,
}

/// Bounds a rule must respect (from `[rules]`).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The longest window (or session) a rule may ask for: state holds a
    /// tenant's alerts for that long.
    pub max_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_window: Duration::from_hours(24) }
    }
}

/// Most overlapping windows per alert for a hopping rule.
pub(crate) const MAX_HOPS: i64 = 60;

/// The forms a rule file takes, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Toml,
    /// Sluice's keys, or a Sigma correlation rule (told apart by its keys).
    Yaml,
    /// SQL after a `--` header of YAML keys.
    Sql,
}

impl Format {
    pub const EXTENSIONS: &[&str] = &["toml", "yaml", "yml", "sql"];

    pub fn of(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()? {
            "toml" => Some(Format::Toml),
            "yaml" | "yml" => Some(Format::Yaml),
            "sql" => Some(Format::Sql),
            _ => None,
        }
    }
}

/// Parses a rule file of any form: one rule, or (a Sigma file) one per
/// correlation in it. Every problem found is listed.
pub fn parse_file(text: &str, origin: &Path, limits: Limits) -> Result<Vec<Rule>, RuleError> {
    let fail = |problems: Vec<String>| RuleError::Invalid { origin: origin.to_path_buf(), problems };
    let Some(format) = Format::of(origin) else {
        return Err(fail(vec![format!(
            "not a rule file: the name must end in {}",
            Format::EXTENSIONS.iter().map(|e| format!(".{e}")).collect::<Vec<_>>().join(", ")
        )]));
    };
    match format {
        Format::Toml => Rule::parse(text, origin, limits).map(|r| vec![r]),
        Format::Yaml if crate::sigma::is_sigma(text) => crate::sigma::parse(text, origin, limits),
        Format::Yaml => {
            let file: RuleFile = serde_yaml_ng::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
            Rule::from_file(file, origin, limits).map(|r| vec![r])
        }
        Format::Sql => {
            let (header, sql) = split_sql_header(text);
            let mut file: RuleFile = serde_yaml_ng::from_str(&header)
                .map_err(|e| fail(vec![format!("the `--` header: {e} (header lines are YAML `key: value`)")]))?;
            if file.sql.is_some() {
                return Err(fail(vec!["sql: a .sql rule's SQL is the file's body, not a header key".into()]));
            }
            file.sql = Some(sql);
            Rule::from_file(file, origin, limits).map(|r| vec![r])
        }
    }
}

/// The leading `--` comment lines (markers stripped) and the rest.
fn split_sql_header(text: &str) -> (String, String) {
    let mut header = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (line, next) = rest.split_once('\n').unwrap_or((rest, ""));
        let trimmed = line.trim_start();
        if let Some(body) = trimmed.strip_prefix("--") {
            header.push_str(body.strip_prefix(' ').unwrap_or(body));
            header.push('\n');
        } else if !trimmed.is_empty() {
            break;
        }
        rest = next;
    }
    (header, rest.to_string())
}

impl Rule {
    /// Parses a TOML rule file's text; every problem found is listed.
    pub fn parse(text: &str, origin: &Path, limits: Limits) -> Result<Rule, RuleError> {
        let file: RuleFile = toml::from_str(text).map_err(|e| RuleError::Invalid {
            origin: origin.to_path_buf(),
            problems: vec![e.to_string().trim().to_string()],
        })?;
        Rule::from_file(file, origin, limits)
    }

    fn from_file(file: RuleFile, origin: &Path, limits: Limits) -> Result<Rule, RuleError> {
        let fail = |problems: Vec<String>| RuleError::Invalid { origin: origin.to_path_buf(), problems };
        let mut problems = Vec::new();
        let name = file
            .name
            .clone()
            .unwrap_or_else(|| origin.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default());
        if !valid_name(&name) {
            problems.push(format!("name = {name:?}: use letters, digits, '-', '_' or '.'"));
        }
        let severity = match &file.severity {
            Severity::Number(n) if (0..=100).contains(n) => *n as u8,
            Severity::Number(n) => {
                problems.push(format!("severity = {n}: must be 0–100 or low|medium|high|critical"));
                0
            }
            Severity::Word(w) => severity_word(w).unwrap_or_else(|| {
                problems.push(format!("severity = {w:?}: must be 0–100 or informational|low|medium|high|critical"));
                0
            }),
        };
        let window = parse_window(&file.window, limits, &mut problems);
        let early = parse_early(&file.window, window, &mut problems);
        if file.entities.is_empty() {
            problems.push(
                "entities: map at least one entity kind (host, user, ip, process, hash, url) to a result column, \
                 so that a detection joins the right cluster"
                    .into(),
            );
        }
        let sql = file.sql.unwrap_or_default();
        if sql.trim().is_empty() {
            problems.push("sql is missing or empty".into());
        }
        let scope = match file.tenants {
            None => Scope::All,
            Some(list) if list.is_empty() => {
                problems.push("tenants = []: list at least one tenant, or leave the key out for every tenant".into());
                Scope::All
            }
            Some(list) => Scope::Only(list),
        };
        if !problems.is_empty() {
            return Err(fail(problems));
        }
        Ok(Rule {
            name,
            description: file.description,
            severity,
            tags: file.tags,
            window: window.expect("no problems"),
            early,
            entities: file.entities.into_iter().collect(),
            scope,
            enabled: file.enabled,
            sql,
            origin: origin.to_path_buf(),
        })
    }
}

/// A severity level's points (Sigma's `level` words).
pub(crate) fn severity_word(word: &str) -> Option<u8> {
    Some(match word {
        "informational" => 10,
        "low" => 25,
        "medium" => 50,
        "high" => 75,
        "critical" => 90,
        _ => return None,
    })
}

/// Whether `name` may name a rule (detections and metrics are keyed by it).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `window.early`: shorter than the window; not for sessions, whose end is
/// not known in advance.
fn parse_early(w: &WindowFile, window: Option<Window>, problems: &mut Vec<String>) -> Option<i64> {
    let early = w.early?;
    match window {
        Some(Window::Session { .. }) => {
            problems.push("window.early does not apply to a session window".into());
            None
        }
        Some(Window::Tumbling { size } | Window::Hopping { size, .. })
            if early.millis() <= 0 || early.millis() >= size =>
        {
            problems.push(format!("window.early = {early} must be longer than zero and shorter than window.size"));
            None
        }
        _ => Some(early.millis()),
    }
}

fn parse_window(w: &WindowFile, limits: Limits, problems: &mut Vec<String>) -> Option<Window> {
    let not_applicable: &[(&str, bool)] = match w.kind.as_str() {
        "tumbling" => &[("slide", w.slide.is_some()), ("gap", w.gap.is_some())],
        "hopping" => &[("gap", w.gap.is_some())],
        "session" => &[("slide", w.slide.is_some())],
        _ => &[],
    };
    for (key, _) in not_applicable.iter().filter(|(_, set)| *set) {
        problems.push(format!("window.{key} does not apply to a {} window", w.kind));
    }
    let max = limits.max_window.millis();
    let mut positive = |key: &str, d: Option<Duration>| -> Option<i64> {
        match d {
            None => {
                problems.push(format!("window.{key} is missing for a {} window", w.kind));
                None
            }
            Some(d) if d.millis() <= 0 => {
                problems.push(format!("window.{key} = {d} must be longer than zero"));
                None
            }
            Some(d) if d.millis() > max => {
                problems.push(format!(
                    "window.{key} = {d} is longer than rules.max_window = {} (state holds a tenant's alerts that long)",
                    limits.max_window
                ));
                None
            }
            Some(d) => Some(d.millis()),
        }
    };
    match w.kind.as_str() {
        "tumbling" => positive("size", w.size).map(|size| Window::Tumbling { size }),
        "hopping" => match (positive("size", w.size), positive("slide", w.slide)) {
            (Some(size), Some(slide)) if slide > size => {
                problems.push(format!(
                    "window.slide = {} is longer than window.size = {}",
                    Duration(slide),
                    Duration(size)
                ));
                None
            }
            (Some(size), Some(slide)) if size / slide > MAX_HOPS => {
                problems.push(format!(
                    "window: size / slide = {} overlapping windows per alert; at most {MAX_HOPS}",
                    size / slide
                ));
                None
            }
            (Some(size), Some(slide)) => Some(Window::Hopping { size, slide }),
            _ => None,
        },
        "session" => {
            let gap = positive("gap", w.gap);
            let size = w.size.map_or(Some(max), |s| positive("size", Some(s)));
            gap.zip(size).map(|(gap, max)| Window::Session { gap, max })
        }
        other => {
            problems.push(format!("window.kind = {other:?}: must be tumbling, hopping or session"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Rule, RuleError> {
        Rule::parse(text, Path::new("rules/test-rule.toml"), Limits::default())
    }

    const GOOD: &str = r#"
severity = "high"
tags = ["T1110"]
window = { kind = "hopping", size = "10m", slide = "5m" }
entities = { ip = "src_ip" }
sql = "SELECT src_ip FROM alerts GROUP BY src_ip"
"#;

    #[test]
    fn a_good_rule_parses_with_defaults() {
        let r = parse(GOOD).unwrap();
        assert_eq!(r.name, "test-rule", "named after the file");
        assert_eq!(r.severity, 75);
        assert_eq!(r.window, Window::Hopping { size: 600_000, slide: 300_000 });
        assert_eq!(r.entities, vec![(EntityKind::Ip, "src_ip".to_string())]);
        assert_eq!(r.scope, Scope::All);
        assert!(r.enabled);
        assert_eq!(r.early, None);
    }

    #[test]
    fn early_firing_needs_a_window_with_a_known_end_and_a_shorter_step() {
        let with = |w: &str| parse(&GOOD.replace(r#"{ kind = "hopping", size = "10m", slide = "5m" }"#, w));
        assert_eq!(with(r#"{ kind = "tumbling", size = "1h", early = "1m" }"#).unwrap().early, Some(60_000));
        let e = with(r#"{ kind = "session", gap = "5m", early = "1m" }"#).unwrap_err().to_string();
        assert!(e.contains("window.early does not apply to a session"), "{e}");
        let e = with(r#"{ kind = "tumbling", size = "1h", early = "2h" }"#).unwrap_err().to_string();
        assert!(e.contains("window.early = 2h"), "{e}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = r#"
severity = 120
window = { kind = "tumbling", size = "48h", gap = "1m" }
entities = {}
tenants = []
sql = " "
"#;
        let Err(RuleError::Invalid { origin, problems }) = parse(text) else { panic!("must fail") };
        assert_eq!(origin, Path::new("rules/test-rule.toml"));
        let all = problems.join("\n");
        for key in
            ["severity = 120", "window.size = 2days", "rules.max_window", "window.gap", "entities", "tenants", "sql"]
        {
            assert!(all.contains(key), "{key} not reported in:\n{all}");
        }
    }

    #[test]
    fn toml_yaml_and_sql_files_say_the_same_rule() {
        let yaml = r#"
severity: high
tags: [T1110]
window: { kind: hopping, size: 10m, slide: 5m }
entities: { ip: src_ip }
sql: SELECT src_ip FROM alerts GROUP BY src_ip
"#;
        let sql = "-- severity: high\n-- tags: [T1110]\n--\n-- window: { kind: hopping, size: 10m, slide: 5m }\n\
                   -- entities: { ip: src_ip }\nSELECT src_ip FROM alerts GROUP BY src_ip\n";
        let limits = Limits::default();
        let from = |text: &str, file: &str| parse_file(text, Path::new(file), limits).map(|mut v| v.remove(0));
        let want = from(GOOD, "rules/test-rule.toml").unwrap();
        for (text, file) in [(yaml, "rules/test-rule.yaml"), (sql, "rules/test-rule.sql")] {
            let got = from(text, file).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(
                (&got.name, got.severity, &got.tags, got.window, &got.entities, got.sql.trim()),
                (&want.name, want.severity, &want.tags, want.window, &want.entities, want.sql.trim()),
                "{file}"
            );
        }
        let e = from(&sql.replace("-- entities", "-- sql: SELECT 1\n-- entities"), "r.sql").unwrap_err().to_string();
        assert!(e.contains("body, not a header key"), "{e}");
        let e = from(&yaml.replace("severity: high", "severity: high\nthreshold: 5"), "r.yml").unwrap_err().to_string();
        assert!(e.contains("threshold") && e.contains("r.yml"), "{e}");
        let e = from(GOOD, "r.json").unwrap_err().to_string();
        assert!(e.contains(".toml, .yaml, .yml, .sql"), "{e}");
    }

    #[test]
    fn unknown_keys_and_entity_kinds_are_refused_by_name() {
        let e = parse(&format!("{GOOD}\nthreshold = 5\n")).unwrap_err().to_string();
        assert!(e.contains("threshold") && e.contains("test-rule.toml"), "{e}");
        let e = parse(&GOOD.replace("{ ip = ", "{ ipaddr = ")).unwrap_err().to_string();
        assert!(e.contains("ipaddr"), "{e}");
    }
}
