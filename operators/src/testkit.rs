//! Helpers for tests: build alert batches from compact JSON alerts.

use crate::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};
use crate::operator::AlertBatch;

/// A Wazuh-shaped alert with the fields correlation reads.
#[derive(Clone, Debug, Default)]
pub struct A<'a> {
    pub tenant: &'a str,
    pub id: &'a str,
    /// Seconds since the epoch.
    pub t: i64,
    pub rule: u32,
    pub level: u8,
    pub tactics: &'a [&'a str],
    pub host: &'a str,
    pub src_ip: Option<&'a str>,
    pub user: Option<&'a str>,
    pub hash: Option<&'a str>,
    pub log: &'a str,
}

impl A<'_> {
    pub fn json(&self) -> String {
        let ts = crate::time::Rfc3339(self.t * 1000).to_string();
        let mut data = serde_json::Map::new();
        if let Some(ip) = self.src_ip {
            data.insert("srcip".into(), ip.into());
        }
        if let Some(u) = self.user {
            data.insert("dstuser".into(), u.into());
        }
        let mut v = serde_json::json!({
            "timestamp": ts,
            "id": self.id,
            "rule": {"id": self.rule.to_string(), "level": self.level, "description": format!("rule {}", self.rule),
                     "mitre": {"tactic": self.tactics, "id": []}, "groups": []},
            "agent": {"id": format!("id-{}", self.host), "name": self.host},
            "manager": {"name": self.tenant},
            "full_log": self.log,
            "data": data,
        });
        if let Some(h) = self.hash {
            v["syscheck"] = serde_json::json!({"sha256_after": h, "path": "/tmp/x"});
        }
        v.to_string()
    }
}

/// Decodes alerts into one batch (panics on a bad alert: test input).
pub fn batch(alerts: &[A<'_>]) -> AlertBatch {
    let text: Vec<String> = alerts.iter().map(A::json).collect();
    let mut d = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).expect("default decoder");
    let out = d.decode(&RawChunk::from_lines("test", text.join("\n").into_bytes(), 0, 0)).expect("decode");
    assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
    AlertBatch::new(out.batch.expect("at least one alert"))
}
