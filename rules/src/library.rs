//! The rules that ship with Sluice, compiled into the binary from
//! `rules/library/` (each with a fixture and its expected detections beside
//! it; `tests/library.rs` runs them all).

use crate::error::RuleError;
use crate::rule::{Limits, Rule};

/// `(file name, text)` of every shipped rule.
pub const FILES: &[(&str, &str)] = &[
    ("critical-file-changed-after-login.toml", include_str!("../library/critical-file-changed-after-login.toml")),
    ("ids-alert-then-login-from-source.toml", include_str!("../library/ids-alert-then-login-from-source.toml")),
    ("malware-on-several-hosts.toml", include_str!("../library/malware-on-several-hosts.toml")),
    ("new-account-after-remote-login.toml", include_str!("../library/new-account-after-remote-login.toml")),
    ("one-user-many-hosts.toml", include_str!("../library/one-user-many-hosts.toml")),
    ("password-spray.toml", include_str!("../library/password-spray.toml")),
    ("sigma-windows-discovery-burst.yml", include_str!("../library/sigma-windows-discovery-burst.yml")),
    ("sigma-windows-password-spray.yml", include_str!("../library/sigma-windows-password-spray.yml")),
    (
        "sigma-windows-service-then-log-cleared.yml",
        include_str!("../library/sigma-windows-service-then-log-cleared.yml"),
    ),
    ("same-file-hash-on-many-hosts.toml", include_str!("../library/same-file-hash-on-many-hosts.toml")),
    ("ssh-brute-force-then-login.toml", include_str!("../library/ssh-brute-force-then-login.toml")),
    ("sudo-to-root-after-remote-login.toml", include_str!("../library/sudo-to-root-after-remote-login.toml")),
    ("web-scan-then-exploit.toml", include_str!("../library/web-scan-then-exploit.toml")),
    ("windows-audit-log-cleared.toml", include_str!("../library/windows-audit-log-cleared.toml")),
    ("windows-logon-failures-then-success.toml", include_str!("../library/windows-logon-failures-then-success.toml")),
    ("windows-service-from-user-path.toml", include_str!("../library/windows-service-from-user-path.toml")),
];

/// The shipped rules, parsed.
pub fn rules(limits: Limits) -> Result<Vec<Rule>, Vec<RuleError>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (file, text) in FILES {
        match crate::rule::parse_file(text, &crate::builtin_origin(file), limits) {
            Ok(parsed) => rules.extend(parsed),
            Err(e) => errors.push(e),
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(errors) }
}
