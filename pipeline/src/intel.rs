//! `[intel]`: threat-intel and inventory files, and loading them into one
//! [`Intel`] set (the operators' side is `sluice_operators::intel`).
//!
//! ```toml
//! [intel]
//! files = ["/etc/sluice/intel/blocklist.txt", "/etc/sluice/intel/misp-export.json"]
//!
//! [intel.tenants.acme]
//! files = [{ path = "/etc/sluice/intel/acme-c2.txt", kind = "domain" }]
//! inventory = ["/etc/sluice/inventory/acme.csv"]
//! ```
//!
//! An IOC file is a MISP JSON export if it ends in `.json` (or says
//! `format = "misp"`), else a plain list, one IOC per line, whose kind is
//! told by each line's shape unless `kind` fixes it. An inventory file is
//! CSV (`.csv`) or JSON (`.json`). Every file is read and checked in full;
//! any problem refuses the whole set, naming the file, the line or JSON
//! path, and why. At start that stops the run; while running (see
//! [`crate::reload`]) the set in force stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
pub use sluice_operators::intel::Intel;
use sluice_operators::intel::{IocKind, IocStore, LoadStats, TenantIntel};

use crate::reload::{Update, Watcher};

/// `[intel]`: IOC files for every tenant, and each tenant's own.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IntelConfig {
    /// IOC files that apply to every tenant.
    pub files: Vec<IocFile>,
    /// Per tenant (by tenant name): its own IOC files and inventory.
    pub tenants: BTreeMap<String, TenantIntelConfig>,
}

/// `[intel.tenants.<name>]`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TenantIntelConfig {
    /// IOC files of this tenant only.
    pub files: Vec<IocFile>,
    /// Inventory files (`.csv` or `.json`): hosts with criticality,
    /// privileged users, known scanners, service accounts.
    pub inventory: Vec<PathBuf>,
}

/// An IOC file: a path, or a table saying what is in it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum IocFile {
    Path(PathBuf),
    Spec(IocFileSpec),
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IocFileSpec {
    pub path: PathBuf,
    /// `ip`, `domain`, `url` or `hash`: every line is one (plain lists only).
    pub kind: Option<String>,
    /// `plain` or `misp`; by default `misp` for `.json`, else `plain`.
    pub format: Option<String>,
}

impl IocFile {
    fn path(&self) -> &Path {
        match self {
            IocFile::Path(p) => p,
            IocFile::Spec(s) => &s.path,
        }
    }

    fn kind(&self) -> Option<&str> {
        match self {
            IocFile::Path(_) => None,
            IocFile::Spec(s) => s.kind.as_deref(),
        }
    }

    fn misp(&self) -> bool {
        match self {
            IocFile::Spec(IocFileSpec { format: Some(f), .. }) => f == "misp",
            _ => self.path().extension().is_some_and(|e| e.eq_ignore_ascii_case("json")),
        }
    }
}

fn is_json(p: &Path) -> bool {
    p.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

impl IntelConfig {
    /// Whether any file is configured.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.tenants.values().all(|t| t.files.is_empty() && t.inventory.is_empty())
    }

    /// Every configured file, for the reload watcher.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.files.iter().map(|f| f.path().to_path_buf()).collect();
        for t in self.tenants.values() {
            out.extend(t.files.iter().map(|f| f.path().to_path_buf()));
            out.extend(t.inventory.iter().cloned());
        }
        out
    }

    /// Problems with the section itself (not the files' contents).
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let check = |errors: &mut Vec<String>, key: &str, f: &IocFile| {
            if f.path().as_os_str().is_empty() {
                errors.push(format!("{key}: an empty path"));
            }
            if let IocFile::Spec(s) = f {
                if let Some(k) = &s.kind
                    && IocKind::parse(k).is_none()
                {
                    errors.push(format!("{key}: kind {k:?} is not ip, domain, url or hash"));
                }
                if let Some(fmt) = &s.format
                    && fmt != "plain"
                    && fmt != "misp"
                {
                    errors.push(format!("{key}: format {fmt:?} is not plain or misp"));
                }
                if s.kind.is_some() && f.misp() {
                    errors.push(format!("{key}: kind applies to plain lists only (a MISP export says each kind)"));
                }
            }
        };
        for f in &self.files {
            check(&mut errors, "intel.files", f);
        }
        for (name, t) in &self.tenants {
            if name.trim().is_empty() {
                errors.push("intel.tenants: an empty tenant name".into());
            }
            for f in &t.files {
                check(&mut errors, &format!("intel.tenants.{name}.files"), f);
            }
            for p in &t.inventory {
                let csv = p.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
                if !csv && !is_json(p) {
                    errors.push(format!("intel.tenants.{name}.inventory: {} is neither .csv nor .json", p.display()));
                }
            }
        }
        errors
    }

    /// Reads and checks every file: the loaded set and one line per file
    /// saying what it held, or every problem found.
    pub fn load(&self) -> Result<(Intel, Vec<String>), Vec<String>> {
        let mut problems = self.validate();
        if !problems.is_empty() {
            return Err(problems);
        }
        let mut intel = Intel::default();
        let mut report = Vec::new();
        for f in &self.files {
            load_iocs(&mut intel.global, f, &mut report, &mut problems);
        }
        for (name, t) in &self.tenants {
            let mut own = TenantIntel::default();
            for f in &t.files {
                load_iocs(&mut own.iocs, f, &mut report, &mut problems);
            }
            for p in &t.inventory {
                let source = p.display().to_string();
                let loaded = read(p).and_then(|text| {
                    let r = if is_json(p) {
                        own.inventory.load_json(&source, &text)
                    } else {
                        own.inventory.load_csv(&source, &text)
                    };
                    r.map_err(|e| e.to_string())
                });
                match loaded {
                    Ok(n) => report.push(format!("{source}: {n} inventory entries for tenant {name}")),
                    Err(e) => problems.push(e),
                }
            }
            intel.tenants.insert(name.clone(), own);
        }
        if problems.is_empty() { Ok((intel, report)) } else { Err(problems) }
    }
}

/// `[intel]` for a run: the set in force, as an operator update to apply to
/// every shard before the first alert, and the watcher that reloads it (see
/// [`crate::reload`]); `None` without intel files. A bad file stops the start.
pub fn start(config: &IntelConfig) -> Result<Option<(Update, Option<Watcher>)>, sluice_operators::Error> {
    if config.is_empty() {
        return Ok(None);
    }
    // Watching first: a change made while the set loads is seen.
    let watcher = Watcher::intel(config.clone())
        .inspect_err(
            |e| tracing::warn!(error = %e, "intel will not reload while running (SIGHUP or file watch failed)"),
        )
        .ok();
    let (intel, report) = config.load().map_err(|problems| {
        sluice_operators::Error::Config(format!("{} intel problem(s):\n  {}", problems.len(), problems.join("\n  ")))
    })?;
    tracing::info!(files = %report.join("; "), "intel loaded: {}", intel.describe());
    Ok(Some((Arc::new(Arc::new(intel)), watcher)))
}

fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()))
}

fn load_iocs(store: &mut IocStore, f: &IocFile, report: &mut Vec<String>, problems: &mut Vec<String>) {
    let source = f.path().display().to_string();
    let loaded = read(f.path()).and_then(|text| {
        let r = if f.misp() {
            store.load_misp(&source, &text)
        } else {
            store.load_plain(&source, &text, f.kind().and_then(IocKind::parse))
        };
        r.map_err(|e| e.to_string())
    });
    match loaded {
        Ok(LoadStats { loaded, duplicates, skipped }) => {
            let mut line = format!("{source}: {loaded} IOCs");
            if duplicates > 0 {
                line.push_str(&format!(", {duplicates} already listed"));
            }
            if !skipped.is_empty() {
                let s: Vec<String> = skipped.iter().map(|(why, n)| format!("{n} {why}")).collect();
                line.push_str(&format!(", skipped {}", s.join(", ")));
            }
            report.push(line);
        }
        Err(e) => problems.push(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_global_and_tenant_files_and_refuses_the_set_naming_every_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let w = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let config = IntelConfig {
            files: vec![IocFile::Path(w("global.txt", "203.0.113.7\n"))],
            tenants: [(
                "acme".to_string(),
                TenantIntelConfig {
                    files: vec![IocFile::Spec(IocFileSpec {
                        path: w("c2.txt", "evil.example\n"),
                        kind: Some("domain".into()),
                        format: None,
                    })],
                    inventory: vec![w("acme.csv", "kind,value,criticality\nhost,dc01,critical\n")],
                },
            )]
            .into(),
        };
        let (intel, report) = config.load().unwrap();
        assert_eq!(report.len(), 3, "{report:?}");
        assert!(report[2].ends_with("acme.csv: 1 inventory entries for tenant acme"), "{report:?}");
        assert_eq!(intel.lookup("globex", sluice_operators::cluster::EntityKind::Ip, "203.0.113.7").len(), 1);
        let mut bad = config.clone();
        bad.files.push(IocFile::Path(w("bad.txt", "1.2.3.4\n???\n")));
        bad.tenants.get_mut("acme").unwrap().inventory.push(dir.path().join("missing.json"));
        let problems = bad.load().unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].ends_with("bad.txt: line 2: \"???\" is not an ip, domain, url or hash"), "{problems:?}");
        assert!(problems[1].contains("missing.json: cannot read"), "{problems:?}");
    }

    #[test]
    fn the_section_parses_from_toml_and_bad_keys_are_named() {
        let c: IntelConfig = toml::from_str(
            "files = [\"a.txt\", { path = \"b.txt\", kind = \"ipv4\" }]\n[tenants.acme]\ninventory = [\"x.yaml\"]\n",
        )
        .unwrap();
        let errors = c.validate();
        assert_eq!(
            errors,
            [
                "intel.files: kind \"ipv4\" is not ip, domain, url or hash",
                "intel.tenants.acme.inventory: x.yaml is neither .csv nor .json",
            ]
        );
        assert!(toml::from_str::<IntelConfig>("files = [{ path = \"a\", kinds = \"ip\" }]").is_err());
    }
}
