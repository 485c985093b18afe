//! Operator snapshots: a small framed binary format.
//!
//! `SLUICE1` magic, the operator name, a format version, then the state in
//! postcard. A snapshot of another operator, of another version, or with a
//! corrupt body is refused with a reason; nothing is half-loaded because the
//! state is decoded completely before it replaces the operator's own.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

const MAGIC: &[u8; 7] = b"SLUICE1";

/// Encodes `state` as a snapshot of `operator` at `version`.
pub fn encode<T: Serialize>(operator: &'static str, version: u32, state: &T) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.push(operator.len() as u8);
    out.extend_from_slice(operator.as_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    postcard::to_extend(state, out).map_err(|e| Error::Restore { operator, reason: format!("cannot encode: {e}") })
}

/// Decodes a snapshot written by [`encode`] for the same operator and version.
pub fn decode<T: DeserializeOwned>(operator: &'static str, version: u32, bytes: &[u8]) -> Result<T> {
    let err = |reason: String| Error::Restore { operator, reason };
    let rest = bytes.strip_prefix(MAGIC).ok_or_else(|| err("not a Sluice snapshot (bad magic)".into()))?;
    let (&len, rest) = rest.split_first().ok_or_else(|| err("truncated header".into()))?;
    let len = len as usize;
    if rest.len() < len + 4 {
        return Err(err("truncated header".into()));
    }
    let (name, rest) = rest.split_at(len);
    if name != operator.as_bytes() {
        return Err(err(format!("snapshot belongs to operator {:?}", String::from_utf8_lossy(name))));
    }
    let (v, body) = rest.split_at(4);
    let v = u32::from_le_bytes(v.try_into().expect("4 bytes"));
    if v != version {
        return Err(err(format!("snapshot format version {v}, this build reads {version}")));
    }
    postcard::from_bytes(body).map_err(|e| err(format!("corrupt snapshot body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        let bytes = encode("dedup", 3, &vec![(1u64, "a".to_string())]).unwrap();
        let back: Vec<(u64, String)> = decode("dedup", 3, &bytes).unwrap();
        assert_eq!(back, [(1, "a".to_string())]);
        let wrong_op = decode::<Vec<(u64, String)>>("correlate", 3, &bytes).unwrap_err().to_string();
        assert!(wrong_op.contains("dedup"), "{wrong_op}");
        let wrong_version = decode::<Vec<(u64, String)>>("dedup", 4, &bytes).unwrap_err().to_string();
        assert!(wrong_version.contains("version 3"), "{wrong_version}");
        let mut corrupt = bytes.clone();
        corrupt.truncate(bytes.len() - 1);
        assert!(decode::<Vec<(u64, String)>>("dedup", 3, &corrupt).is_err());
        assert!(decode::<Vec<(u64, String)>>("dedup", 3, b"{}").is_err());
    }
}
