//! Secrets in telemetry, redacted before anything leaves Sluice (case
//! files on stdout, in files, on Kafka, to a webhook or a model).
//!
//! Alerts carry what attackers and admins typed: passwords on command
//! lines, tokens in URLs and headers, keys pasted into files. Every text a
//! case file takes from an alert goes through [`redact`], which replaces
//! each secret with `[REDACTED:<kind>]` and counts it. The rule set is
//! versioned ([`VERSION`]); a case file records the version and the counts,
//! so a receiver knows what was applied.
//!
//! | kind | what |
//! |---|---|
//! | `private_key` | a PEM private key block (to its end, or to the end of a cut excerpt) |
//! | `jwt` | a JSON Web Token (`eyJ….eyJ….…`) |
//! | `cloud_key` | AWS access key ids, Google API keys, GitHub, Slack and Stripe tokens |
//! | `authorization` | the credential of an `Authorization:` / `Proxy-Authorization:` header |
//! | `url_credentials` | the password in `scheme://user:password@host` |
//! | `secret_pair` | the value of `password=…`, `token: …`, `"api_key":"…"` and the like |
//! | `card` | a payment card number (13–19 digits with a card prefix, Luhn-checked) |
//! | `control_char` | not a secret: a control, zero-width or bidi character, written as `\u{…}` |
//!
//! What is kept: the header or key name, the URL's user and host; so an
//! analyst still sees *that* a secret was there. A marker is never taken
//! for a secret by a later pattern.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};
use serde::{Deserialize, Serialize};

/// The version of the redaction rules; bumped whenever they change.
pub const VERSION: u32 = 1;

/// What redaction did to a case file: the rules' version and how many
/// secrets of each kind it replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Redaction {
    pub version: u32,
    pub redacted: BTreeMap<String, u64>,
}

impl Redaction {
    pub fn new() -> Self {
        Redaction { version: VERSION, redacted: BTreeMap::new() }
    }

    /// Redacts `text` in place, and escapes its control and invisible
    /// formatting characters, counting what it replaced.
    pub fn apply(&mut self, text: &mut String) {
        if let Cow::Owned(clean) = redact_counting(text, &mut self.redacted) {
            *text = clean;
        }
        let hidden = text.chars().filter(|&c| hides(c)).count() as u64;
        if hidden > 0 {
            *text = escape_hidden(text);
            *self.redacted.entry("control_char".to_string()).or_default() += hidden;
        }
    }
}

/// Characters a reader cannot see or that act on a terminal or on the
/// text's direction: C0/C1 controls (but tab and newline), zero-width and
/// bidirectional formatting characters. An alert could use them to hide
/// text from an analyst or to drive their terminal.
fn hides(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// `text` with each hidden character written as `\u{…}`.
fn escape_hidden(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hides(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

struct Pattern {
    kind: &'static str,
    re: Regex,
    /// The replacement for a match (may keep parts of it); `None`: not a
    /// secret after all (the match stays).
    replace: fn(&Captures<'_>, &str) -> Option<String>,
}

fn whole(_: &Captures<'_>, kind: &str) -> Option<String> {
    Some(marker(kind))
}

fn marker(kind: &str) -> String {
    format!("[REDACTED:{kind}]")
}

/// Keeps the first group (a name, a scheme) and redacts the rest.
fn keep_prefix(c: &Captures<'_>, kind: &str) -> Option<String> {
    Some(format!("{}{}", &c[1], marker(kind)))
}

fn card(c: &Captures<'_>, kind: &str) -> Option<String> {
    // `\d` also matches other scripts' digits; a card number has 13–19
    // ASCII ones.
    let digits: Vec<u32> = c[0].chars().filter_map(|ch| ch.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return None;
    }
    let prefix: String = digits.iter().take(4).map(|d| char::from_digit(*d, 10).expect("a digit")).collect();
    let p2: u32 = prefix[..2].parse().unwrap_or(0);
    let p4: u32 = prefix.parse().unwrap_or(0);
    let issuer = prefix.starts_with('4')
        || (51..=55).contains(&p2)
        || (2221..=2720).contains(&p4)
        || p2 == 34
        || p2 == 37
        || p4 == 6011
        || p2 == 65
        || (3528..=3589).contains(&p4)
        || p2 == 36
        || (300..=305).contains(&(p4 / 10));
    (issuer && luhn(&digits)).then(|| marker(kind))
}

/// The Luhn checksum of a card number.
fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

static PATTERNS: LazyLock<Vec<Pattern>> = LazyLock::new(|| {
    let p = |kind, re: &str, replace| Pattern { kind, re: Regex::new(re).expect("a valid pattern"), replace };
    vec![
        p(
            "private_key",
            r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\z)",
            whole,
        ),
        p("jwt", r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*", whole),
        p(
            "cloud_key",
            r"\b(?:(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}|AIza[0-9A-Za-z_-]{35}|gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,}|xox[baprs]-[A-Za-z0-9-]{10,}|[sr]k_live_[0-9A-Za-z]{20,})\b",
            whole,
        ),
        p(
            "authorization",
            r#"(?i)(\b(?:proxy-)?authorization"?\s*[:=]\s*"?(?:(?:bearer|basic|digest|negotiate|ntlm|token|aws4-hmac-sha256)\s+)?)[^\s,;"'\[][^\s,;"']*(?:[^\S\r\n]*,[^\S\r\n]*[A-Za-z]+=[^\s,;"']+)*"#,
            keep_prefix,
        ),
        p("url_credentials", r"(?i)(\b[a-z][a-z0-9+.-]*://[^\s:/@\[\]]+:)[^\s@/\[\]]+@", |c, kind| {
            Some(format!("{}{}@", &c[1], marker(kind)))
        }),
        p(
            "secret_pair",
            r#"(?i)(\b(?:password|passwd|pwd|passphrase|secret|client_secret|token|access_token|refresh_token|auth_token|api[_-]?key|apikey|private_key|aws_secret_access_key)"?\s*(?:=|:)\s*"?)[^\s&,;"'<>\[][^\s&,;"'<>]*"#,
            keep_prefix,
        ),
        p("card", r"\b\d(?:[ -]?\d){12,18}\b", card),
    ]
});

/// Compiles the patterns and runs them once, so the first case file does
/// not pay for it: that took 10–60 ms, all of it added to the triage
/// latency of the first escalation.
pub fn warm_up() {
    let mut counts = BTreeMap::new();
    let _ = redact_counting("Authorization: Bearer x password=y https://u:p@h 4111 1111 1111 1111", &mut counts);
}

/// `text` with every secret replaced by `[REDACTED:<kind>]` (borrowed when
/// there was none).
pub fn redact(text: &str) -> Cow<'_, str> {
    redact_counting(text, &mut BTreeMap::new())
}

/// All patterns in one automaton: most texts (ips, names, descriptions)
/// hold no secret, and one pass over them says so.
static ANY: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(PATTERNS.iter().map(|p| p.re.as_str())).expect("valid patterns"));

fn redact_counting<'t>(text: &'t str, counts: &mut BTreeMap<String, u64>) -> Cow<'t, str> {
    if !ANY.is_match(text) {
        return Cow::Borrowed(text);
    }
    // Each pattern looks at the text as the ones before left it: a marker
    // can make a boundary where there was none (`\b` is Unicode-aware), so
    // a pattern that missed the original may match now.
    let mut out = Cow::Borrowed(text);
    for pattern in PATTERNS.iter() {
        if !pattern.re.is_match(&out) {
            continue;
        }
        let mut n = 0;
        let replaced = pattern.re.replace_all(&out, |c: &Captures<'_>| match (pattern.replace)(c, pattern.kind) {
            Some(r) => {
                n += 1;
                r
            }
            None => c[0].to_string(),
        });
        if n > 0 {
            *counts.entry(pattern.kind.to_string()).or_default() += n;
            out = Cow::Owned(replaced.into_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts that hold a secret: the kind that must be found, and the
    /// secret itself, which must be gone.
    const TRUE_POSITIVES: &[(&str, &str, &str)] = &[
        (
            "private_key",
            "key: -----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7x\nq9Zz\n-----END RSA PRIVATE KEY----- end",
            "MIIEpAIBAAKCAQEA7x",
        ),
        (
            "private_key",
            "cut: -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA",
            "b3BlbnNzaC1rZXktdjEAAAAA",
        ),
        (
            "jwt",
            "GET /api?t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ),
        ("cloud_key", "aws configure set aws_access_key_id AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
        ("cloud_key", "maps?key=AIzaSyA-1234567890abcdefghijklmnopqrstu", "AIzaSyA-1234567890abcdefghijklmnopqrstu"),
        (
            "cloud_key",
            "git clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/x",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        ),
        ("cloud_key", "SLACK=xoxb-123456789012-abcdefghijkl", "xoxb-123456789012-abcdefghijkl"),
        ("jwt", "access_token=eyJhbGciOiJub25lIn0.eyJzdWIiOiJib2IifQ.", "eyJzdWIiOiJib2IifQ"),
        ("authorization", "Authorization: Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("authorization", "curl -H 'Authorization: Basic dXNlcjpodW50ZXIy' http://x", "dXNlcjpodW50ZXIy"),
        ("authorization", r#"{"headers":{"authorization":"token s3cr3tvalue"}}"#, "s3cr3tvalue"),
        ("url_credentials", "mysql://app:Hunter2!@db.internal:3306/prod", "Hunter2!"),
        ("url_credentials", "wget ftp://anonymous:guest123@ftp.example.org/file", "guest123"),
        ("secret_pair", "useradd -p password=Winter2026! bob", "Winter2026!"),
        ("secret_pair", "POST /login user=bob&passwd=letmein&x=1", "letmein"),
        ("secret_pair", r#"{"user":"bob","password":"correct horse"}"#, "correct"),
        ("secret_pair", "export API_KEY=0123456789abcdef", "0123456789abcdef"),
        ("secret_pair", "client_secret: q8Z~abc", "q8Z~abc"),
        ("card", "order paid with 4111 1111 1111 1111 today", "4111 1111 1111 1111"),
        ("card", "cc=5500-0000-0000-0004", "5500-0000-0000-0004"),
        ("card", "amex 378282246310005", "378282246310005"),
    ];

    /// Texts that look like secrets to a careless pattern and are not.
    const FALSE_POSITIVES: &[&str] = &[
        "Failed password for invalid user admin from 203.0.113.7 port 52222 ssh2",
        "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost=203.0.113.7",
        "The password policy of the domain was changed.",
        "SHA256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "md5 d41d8cd98f00b204e9800998ecf8427e and uuid 123e4567-e89b-12d3-a456-426614174000",
        "S-1-5-21-3623811015-3361044348-30300820-1013",
        "GET https://example.com/login?user=bob&next=/home HTTP/1.1",
        "https://user@example.com/repo.git",
        "eyJhbGciOiJIUzI1NiJ9 alone is only a header",
        "alert id 1793527500.123456 at 2026-11-01T10:00:00.000+0000",
        "order 1234 5678 9012 3456 shipped",
        "ticket 4111111111111112 (not Luhn-valid)",
        "phone +1 555-123-4567",
        "tokenizer version: 3",
        "Windows logon type: 3, status: 0xc000006d",
    ];

    #[test]
    fn every_secret_of_the_corpus_is_redacted_with_its_kind() {
        for (kind, text, secret) in TRUE_POSITIVES {
            let mut r = Redaction::new();
            let mut s = text.to_string();
            r.apply(&mut s);
            assert!(!s.contains(secret), "{kind}: {secret:?} still in {s:?}");
            assert!(s.contains(&format!("[REDACTED:{kind}]")), "{kind} not named in {s:?}");
            assert!(r.redacted.get(*kind).is_some_and(|n| *n >= 1), "{kind} not counted: {:?}", r.redacted);
        }
    }

    #[test]
    fn look_alikes_are_left_alone() {
        for text in FALSE_POSITIVES {
            assert_eq!(redact(text), *text, "changed: {text:?}");
        }
    }

    #[test]
    fn what_an_analyst_needs_is_kept() {
        assert_eq!(redact("Authorization: Bearer abc"), "Authorization: Bearer [REDACTED:authorization]");
        assert_eq!(redact("mysql://app:pw@db:3306"), "mysql://app:[REDACTED:url_credentials]@db:3306");
        assert_eq!(redact("password=hunter2 user=bob"), "password=[REDACTED:secret_pair] user=bob");
        assert!(matches!(redact("nothing here"), Cow::Borrowed(_)), "no copy without a secret");
    }

    #[test]
    fn control_and_invisible_characters_are_escaped() {
        let mut r = Redaction::new();
        let mut s = "admin\u{1b}[2J\u{202e}gpj.exe\u{200b}\nnext\tline".to_string();
        r.apply(&mut s);
        assert_eq!(s, "admin\\u{1b}[2J\\u{202e}gpj.exe\\u{200b}\nnext\tline");
        assert_eq!(r.redacted.get("control_char"), Some(&3));
    }

    #[test]
    fn luhn_checks_card_numbers() {
        let digits = |s: &str| s.chars().filter_map(|c| c.to_digit(10)).collect::<Vec<_>>();
        assert!(luhn(&digits("4111111111111111")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(luhn(&digits("378282246310005")));
    }

    #[test]
    fn digits_of_other_scripts_neither_crash_nor_pass_for_a_card() {
        // Full-width and Arabic-Indic digits are `\d` but no card's.
        for text in ["order １２３４５６７８９０１２３４", "ref ٤١١١١١١١١١١١١١١١"] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn a_boundary_an_earlier_marker_makes_lets_a_later_pattern_match() {
        // In the original, `g٠` has no word boundary, so the card pattern
        // cannot start there; once the token is a marker, `]٠` has one.
        let text = "t=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig٠4111111111111111";
        let out = redact(text);
        assert!(!out.contains("4111111111111111") && out.contains("[REDACTED:jwt]"), "{out}");
        assert!(out.contains("[REDACTED:card]"), "{out}");
    }
}
