//! Detections: what a correlation rule found in one tenant's window.
//!
//! Rules (the `sluice-rules` crate) run SQL over a tenant's alerts when a
//! window closes; every result row becomes a [`Detection`]. It flows down
//! the operator chain like a batch does, and [`crate::correlate`] joins it
//! to the cluster holding its entities (or starts one), where it adds a
//! line to the score breakdown.

use serde::{Deserialize, Serialize};

use crate::cluster::EntityKind;
use crate::time::EventTime;

/// One result row of a rule, in one tenant's window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub rule: String,
    pub tenant: String,
    /// 0–100.
    pub severity: u8,
    /// MITRE ids and other labels from the rule.
    pub tags: Vec<String>,
    /// The window, `[start, end)` in event time (ms).
    pub window_start: EventTime,
    pub window_end: EventTime,
    /// Earliest and latest event time of the alerts in the window.
    pub first: EventTime,
    pub last: EventTime,
    /// The row's entity columns, by the kind the rule maps them to.
    pub entities: Vec<(EntityKind, String)>,
    /// The matching alerts, when the rule returns them (`alert_ids`), capped.
    pub alert_ids: Vec<String>,
    /// The rule's `summary` column, if it returns one.
    pub summary: Option<String>,
    /// The newest alert of the window and when Sluice read it, for latency.
    pub trigger_alert: String,
    pub trigger_ingest_us: i64,
}

/// A detection as reported in a cluster.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DetectionReport {
    pub rule: String,
    pub severity: u8,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tags: Vec<String>,
    /// How many windows of this rule fired into the cluster.
    pub count: u64,
    /// The latest firing's window, RFC 3339.
    pub window_start: String,
    pub window_end: String,
    pub entities: Vec<(EntityKind, String)>,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub alert_ids: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}
