//! ATT&CK names for the technique ids the generator's rules carry.
//!
//! The Wazuh rules index only has technique ids; an alert carries
//! `rule.mitre.{id,tactic,technique}`, which Wazuh fills from its own MITRE
//! database. This table holds, for each id that a rule used by the generator
//! references, the technique name and its tactics in the order Wazuh emits
//! them. A test checks that every id referenced by an embedded rule is here.

/// One technique: (id, name, tactics).
pub(crate) type Technique = (&'static str, &'static str, &'static [&'static str]);

const VALID_ACCOUNTS_TACTICS: &[&str] = &["Defense Evasion", "Persistence", "Privilege Escalation", "Initial Access"];
const SCHEDULED_TACTICS: &[&str] = &["Execution", "Persistence", "Privilege Escalation"];

/// Sorted by id (binary-searched).
const TECHNIQUES: &[Technique] = &[
    ("T1021", "Remote Services", &["Lateral Movement"]),
    ("T1021.001", "Remote Desktop Protocol", &["Lateral Movement"]),
    ("T1021.004", "SSH", &["Lateral Movement"]),
    ("T1040", "Network Sniffing", &["Credential Access", "Discovery"]),
    ("T1053", "Scheduled Task/Job", SCHEDULED_TACTICS),
    ("T1053.003", "Cron", SCHEDULED_TACTICS),
    ("T1055", "Process Injection", &["Defense Evasion", "Privilege Escalation"]),
    ("T1059", "Command and Scripting Interpreter", &["Execution"]),
    ("T1059.001", "PowerShell", &["Execution"]),
    ("T1059.003", "Windows Command Shell", &["Execution"]),
    ("T1070.004", "File Deletion", &["Defense Evasion"]),
    ("T1078", "Valid Accounts", VALID_ACCOUNTS_TACTICS),
    ("T1078.002", "Domain Accounts", VALID_ACCOUNTS_TACTICS),
    ("T1105", "Ingress Tool Transfer", &["Command and Control"]),
    ("T1110", "Brute Force", &["Credential Access"]),
    ("T1110.001", "Password Guessing", &["Credential Access"]),
    ("T1136", "Create Account", &["Persistence"]),
    ("T1190", "Exploit Public-Facing Application", &["Initial Access"]),
    ("T1203", "Exploitation for Client Execution", &["Execution"]),
    ("T1485", "Data Destruction", &["Impact"]),
    ("T1531", "Account Access Removal", &["Impact"]),
    ("T1548.003", "Sudo and Sudo Caching", &["Privilege Escalation", "Defense Evasion"]),
    ("T1550.002", "Pass the Hash", &["Defense Evasion", "Lateral Movement"]),
    ("T1560.001", "Archive via Utility", &["Collection"]),
    ("T1565.001", "Stored Data Manipulation", &["Impact"]),
    ("T1569.002", "Service Execution", &["Execution"]),
    ("T1595.002", "Vulnerability Scanning", &["Reconnaissance"]),
    // Rule 99548 (MS Graph) references the exfiltration tactic itself.
    ("TA0010", "Exfiltration", &["Exfiltration"]),
];

/// The technique with this ATT&CK id, if the table has it.
pub(crate) fn technique(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.binary_search_by(|t| t.0.cmp(id)).ok().map(|i| &TECHNIQUES[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_unique() {
        for w in TECHNIQUES.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
    }

    #[test]
    fn known_mappings() {
        assert_eq!(technique("T1110").unwrap().1, "Brute Force");
        assert_eq!(technique("T1078").unwrap().2.len(), 4);
        assert_eq!(technique("T1548.003").unwrap().2, &["Privilege Escalation", "Defense Evasion"]);
        assert!(technique("T9999").is_none());
    }
}
