//! MITRE ATT&CK tactics in kill-chain order.

/// Enterprise ATT&CK tactics, in the order an intrusion progresses.
pub const KILL_CHAIN: [&str; 14] = [
    "Reconnaissance",
    "Resource Development",
    "Initial Access",
    "Execution",
    "Persistence",
    "Privilege Escalation",
    "Defense Evasion",
    "Credential Access",
    "Discovery",
    "Lateral Movement",
    "Collection",
    "Command and Control",
    "Exfiltration",
    "Impact",
];

/// Position of a tactic in the kill chain (case-insensitive), if known.
pub fn kill_chain_index(tactic: &str) -> Option<usize> {
    KILL_CHAIN.iter().position(|t| t.eq_ignore_ascii_case(tactic))
}

/// Length of the longest run of tactics, in order of first appearance, that
/// moves forward along the kill chain (longest strictly increasing
/// subsequence). Unknown tactics are skipped.
pub fn progression(tactics_in_order: &[&str]) -> usize {
    let idx: Vec<usize> = tactics_in_order.iter().filter_map(|t| kill_chain_index(t)).collect();
    // Patience sorting; n is at most 14.
    let mut tails: Vec<usize> = Vec::new();
    for x in idx {
        match tails.binary_search(&x) {
            Ok(_) => {}
            Err(pos) if pos == tails.len() => tails.push(x),
            Err(pos) => tails[pos] = x,
        }
    }
    tails.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progression_counts_forward_moves() {
        assert_eq!(progression(&[]), 0);
        assert_eq!(progression(&["Credential Access"]), 1);
        assert_eq!(progression(&["Reconnaissance", "Initial Access", "Execution", "Persistence"]), 4);
        // Going backwards does not count.
        assert_eq!(progression(&["Impact", "Exfiltration", "Execution"]), 1);
        assert_eq!(progression(&["Initial Access", "Impact", "Execution", "Persistence"]), 3);
        assert_eq!(progression(&["nonsense", "Execution"]), 1);
    }
}
