//! Dead letters: records Sluice could not take, with the reason and where
//! they came from. Nothing is dropped silently: every rejected record ends up
//! in a dead-letter output, byte for byte.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// Why a record was rejected. The `code` is stable for metrics and tooling.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The bytes are not JSON (the parser's message says where).
    NotJson { detail: String },
    /// The bytes are not valid UTF-8.
    InvalidUtf8,
    /// Valid JSON, but not an object.
    NotObject,
    /// A required field is absent.
    MissingField { field: String },
    /// A field has the wrong type, e.g. `rule.level` is a string.
    WrongType { field: String, expected: &'static str },
    /// The timestamp is present but not a time Sluice can read.
    BadTimestamp { value: String },
    /// Over `decode.max_record_bytes`.
    TooLarge { bytes: usize, limit: usize },
    /// Nested deeper than `decode.max_depth`.
    TooDeep { depth: usize, limit: usize },
    /// No tenant could be resolved (and Sluice never guesses one). `field`
    /// says where Sluice looked.
    NoTenant { field: String },
}

impl Reason {
    /// The stable snake_case code of the reason.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::NotJson { .. } => "not_json",
            Reason::InvalidUtf8 => "invalid_utf8",
            Reason::NotObject => "not_object",
            Reason::MissingField { .. } => "missing_field",
            Reason::WrongType { .. } => "wrong_type",
            Reason::BadTimestamp { .. } => "bad_timestamp",
            Reason::TooLarge { .. } => "too_large",
            Reason::TooDeep { .. } => "too_deep",
            Reason::NoTenant { .. } => "no_tenant",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NotJson { detail } => write!(f, "not JSON: {detail}"),
            Reason::InvalidUtf8 => write!(f, "not valid UTF-8"),
            Reason::NotObject => write!(f, "JSON value is not an object"),
            Reason::MissingField { field } => write!(f, "required field `{field}` is missing"),
            Reason::WrongType { field, expected } => {
                write!(f, "field `{field}` has the wrong type (expected {expected})")
            }
            Reason::BadTimestamp { value } => write!(f, "unreadable timestamp {value:?}"),
            Reason::TooLarge { bytes, limit } => {
                write!(f, "record is {bytes} bytes, over the limit of {limit} (decode.max_record_bytes)")
            }
            Reason::TooDeep { depth, limit } => {
                write!(f, "record nests {depth} levels, over the limit of {limit} (decode.max_depth)")
            }
            Reason::NoTenant { field } => {
                write!(f, "no tenant: {field} is missing or empty")
            }
        }
    }
}

/// One rejected record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Where it came from: a file path, `-` for stdin, `generator`, a topic.
    pub source: Arc<str>,
    /// Byte offset of the record's first byte in that source.
    pub offset: u64,
    pub reason: Reason,
    /// The record exactly as read (without its line terminator).
    pub record: Vec<u8>,
}

#[derive(Serialize)]
struct DeadLetterJson<'a> {
    source: &'a str,
    offset: u64,
    reason: String,
    #[serde(flatten)]
    code: &'a Reason,
    /// The record as text when it is UTF-8 …
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<&'a str>,
    /// … and as hex when it is not, so no byte is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_hex: Option<String>,
}

impl DeadLetter {
    /// One NDJSON line (without the newline) describing this dead letter.
    pub fn to_json(&self) -> String {
        let text = std::str::from_utf8(&self.record).ok();
        let hex = text.is_none().then(|| self.record.iter().map(|b| format!("{b:02x}")).collect::<String>());
        let json = DeadLetterJson {
            source: &self.source,
            offset: self.offset,
            reason: self.reason.to_string(),
            code: &self.reason,
            record: text,
            record_hex: hex,
        };
        serde_json::to_string(&json).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_json_keeps_every_byte() {
        let dl = DeadLetter {
            source: "alerts.json".into(),
            offset: 42,
            reason: Reason::InvalidUtf8,
            record: vec![b'{', 0xff, b'}'],
        };
        let v: serde_json::Value = serde_json::from_str(&dl.to_json()).unwrap();
        assert_eq!(v["code"], "invalid_utf8");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["record_hex"], "7bff7d");
        assert!(v.get("record").is_none());
    }
}
