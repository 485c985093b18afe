//! The Arrow schema of an alert batch, defined once.
//!
//! Typed columns hold what operators and rules read most; `raw` keeps the
//! original JSON record untouched for everything else. Low-cardinality
//! strings are dictionary-encoded. Extra typed columns (configured JSON paths)
//! are appended after `raw` as nullable Utf8.

use std::sync::Arc;

use arrow::array::{
    Array, BinaryArray, DictionaryArray, ListArray, RecordBatch, StringArray, TimestampMicrosecondArray,
    TimestampMillisecondArray, UInt8Array, UInt32Array,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};

use crate::error::{Error, Result};

/// Column names, in schema order.
pub mod col {
    pub const TENANT: &str = "tenant";
    pub const EVENT_TIME: &str = "event_time";
    pub const INGEST_TIME: &str = "ingest_time";
    pub const ALERT_ID: &str = "alert_id";
    pub const RULE_ID: &str = "rule_id";
    pub const RULE_LEVEL: &str = "rule_level";
    pub const RULE_DESCRIPTION: &str = "rule_description";
    pub const RULE_GROUPS: &str = "rule_groups";
    pub const MITRE_TACTICS: &str = "mitre_tactics";
    pub const MITRE_TECHNIQUES: &str = "mitre_techniques";
    pub const AGENT_ID: &str = "agent_id";
    pub const AGENT_NAME: &str = "agent_name";
    pub const AGENT_IP: &str = "agent_ip";
    pub const MANAGER: &str = "manager";
    pub const DECODER: &str = "decoder";
    pub const LOCATION: &str = "location";
    pub const SRC_IP: &str = "src_ip";
    pub const DST_IP: &str = "dst_ip";
    pub const SRC_USER: &str = "src_user";
    pub const DST_USER: &str = "dst_user";
    pub const PROCESS: &str = "process";
    pub const FILE_HASH: &str = "file_hash";
    pub const URL: &str = "url";
    pub const WIN_EVENT_ID: &str = "win_event_id";
    pub const WIN_CHANNEL: &str = "win_channel";
    pub const FULL_LOG: &str = "full_log";
    pub const RAW: &str = "raw";
}

/// Dictionary-encoded Utf8 with Int32 keys, the type DataFusion handles best.
pub fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn list_of_dict() -> DataType {
    DataType::List(Arc::new(Field::new("item", dict_utf8(), true)))
}

/// Number of columns before the configured extra fields.
pub const BASE_COLUMNS: usize = 27;

/// The alert schema, with `extra` nullable Utf8 columns appended (in order).
pub fn alert_schema(extra: &[String]) -> SchemaRef {
    let utc: Option<Arc<str>> = Some("UTC".into());
    let mut fields = vec![
        Field::new(col::TENANT, dict_utf8(), false),
        Field::new(col::EVENT_TIME, DataType::Timestamp(TimeUnit::Millisecond, utc.clone()), false),
        Field::new(col::INGEST_TIME, DataType::Timestamp(TimeUnit::Microsecond, utc), false),
        Field::new(col::ALERT_ID, DataType::Utf8, false),
        Field::new(col::RULE_ID, DataType::UInt32, false),
        Field::new(col::RULE_LEVEL, DataType::UInt8, false),
        Field::new(col::RULE_DESCRIPTION, dict_utf8(), true),
        Field::new(col::RULE_GROUPS, list_of_dict(), true),
        Field::new(col::MITRE_TACTICS, list_of_dict(), true),
        Field::new(col::MITRE_TECHNIQUES, list_of_dict(), true),
        Field::new(col::AGENT_ID, dict_utf8(), true),
        Field::new(col::AGENT_NAME, dict_utf8(), true),
        Field::new(col::AGENT_IP, dict_utf8(), true),
        Field::new(col::MANAGER, dict_utf8(), true),
        Field::new(col::DECODER, dict_utf8(), true),
        Field::new(col::LOCATION, dict_utf8(), true),
        Field::new(col::SRC_IP, DataType::Utf8, true),
        Field::new(col::DST_IP, DataType::Utf8, true),
        Field::new(col::SRC_USER, DataType::Utf8, true),
        Field::new(col::DST_USER, DataType::Utf8, true),
        Field::new(col::PROCESS, DataType::Utf8, true),
        Field::new(col::FILE_HASH, DataType::Utf8, true),
        Field::new(col::URL, DataType::Utf8, true),
        // Windows event id and channel (`data.win.system.*`): what most
        // Windows detections test first.
        Field::new(col::WIN_EVENT_ID, dict_utf8(), true),
        Field::new(col::WIN_CHANNEL, dict_utf8(), true),
        Field::new(col::FULL_LOG, DataType::Utf8, true),
        Field::new(col::RAW, DataType::Binary, false),
    ];
    debug_assert_eq!(fields.len(), BASE_COLUMNS);
    fields.extend(extra.iter().map(|name| Field::new(name, DataType::Utf8, true)));
    Arc::new(Schema::new(fields))
}

type Dict = DictionaryArray<Int32Type>;

/// Typed, borrowed access to the columns of an alert batch, downcast once per
/// batch so per-row code stays free of dynamic casts.
#[derive(Debug)]
pub struct AlertColumns<'a> {
    pub tenant: &'a Dict,
    tenant_values: &'a StringArray,
    pub event_time: &'a TimestampMillisecondArray,
    pub ingest_time: &'a TimestampMicrosecondArray,
    pub alert_id: &'a StringArray,
    pub rule_id: &'a UInt32Array,
    pub rule_level: &'a UInt8Array,
    rule_description: DictStr<'a>,
    pub mitre_tactics: &'a ListArray,
    tactic_values: DictStr<'a>,
    pub rule_groups: &'a ListArray,
    group_values: DictStr<'a>,
    agent_id: DictStr<'a>,
    agent_name: DictStr<'a>,
    agent_ip: DictStr<'a>,
    pub src_ip: &'a StringArray,
    pub dst_ip: &'a StringArray,
    pub src_user: &'a StringArray,
    pub dst_user: &'a StringArray,
    pub process: &'a StringArray,
    pub file_hash: &'a StringArray,
    pub url: &'a StringArray,
    pub full_log: &'a StringArray,
    pub raw: &'a BinaryArray,
}

#[derive(Debug, Clone, Copy)]
struct DictStr<'a> {
    keys: &'a Dict,
    values: &'a StringArray,
}

impl<'a> DictStr<'a> {
    fn new(batch: &'a RecordBatch, name: &'static str) -> Result<Self> {
        let column = batch.column_by_name(name).ok_or(Error::Schema { operator: "schema", column: name })?;
        Self::from_array(column.as_ref(), name)
    }

    fn from_array(array: &'a dyn Array, name: &'static str) -> Result<Self> {
        let keys = array.as_any().downcast_ref::<Dict>().ok_or(Error::Schema { operator: "schema", column: name })?;
        let values = keys
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or(Error::Schema { operator: "schema", column: name })?;
        Ok(Self { keys, values })
    }

    fn get(&self, row: usize) -> Option<&'a str> {
        if self.keys.is_null(row) {
            return None;
        }
        Some(self.values.value(self.keys.keys().value(row) as usize))
    }
}

fn downcast<'a, T: 'static>(batch: &'a RecordBatch, name: &'static str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or(Error::Schema { operator: "schema", column: name })
}

/// `Some(value)` when the cell is non-null and non-empty.
pub fn opt_str(a: &StringArray, row: usize) -> Option<&str> {
    (!a.is_null(row)).then(|| a.value(row)).filter(|s| !s.is_empty())
}

impl<'a> AlertColumns<'a> {
    /// Downcasts every column; fails only if the batch is not an alert batch.
    pub fn new(batch: &'a RecordBatch) -> Result<Self> {
        let tenant = downcast::<Dict>(batch, col::TENANT)?;
        let mitre_tactics = downcast::<ListArray>(batch, col::MITRE_TACTICS)?;
        let rule_groups = downcast::<ListArray>(batch, col::RULE_GROUPS)?;
        let tenant_values = tenant
            .values()
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or(Error::Schema { operator: "schema", column: col::TENANT })?;
        Ok(Self {
            tenant,
            tenant_values,
            event_time: downcast(batch, col::EVENT_TIME)?,
            ingest_time: downcast(batch, col::INGEST_TIME)?,
            alert_id: downcast(batch, col::ALERT_ID)?,
            rule_id: downcast(batch, col::RULE_ID)?,
            rule_level: downcast(batch, col::RULE_LEVEL)?,
            rule_description: DictStr::new(batch, col::RULE_DESCRIPTION)?,
            mitre_tactics,
            tactic_values: DictStr::from_array(mitre_tactics.values().as_ref(), col::MITRE_TACTICS)?,
            rule_groups,
            group_values: DictStr::from_array(rule_groups.values().as_ref(), col::RULE_GROUPS)?,
            agent_id: DictStr::new(batch, col::AGENT_ID)?,
            agent_name: DictStr::new(batch, col::AGENT_NAME)?,
            agent_ip: DictStr::new(batch, col::AGENT_IP)?,
            src_ip: downcast(batch, col::SRC_IP)?,
            dst_ip: downcast(batch, col::DST_IP)?,
            src_user: downcast(batch, col::SRC_USER)?,
            dst_user: downcast(batch, col::DST_USER)?,
            process: downcast(batch, col::PROCESS)?,
            file_hash: downcast(batch, col::FILE_HASH)?,
            url: downcast(batch, col::URL)?,
            full_log: downcast(batch, col::FULL_LOG)?,
            raw: downcast(batch, col::RAW)?,
        })
    }

    pub fn tenant(&self, row: usize) -> &'a str {
        self.tenant_values.value(self.tenant.keys().value(row) as usize)
    }
    /// Dictionary key of the tenant in this batch (equal keys, equal tenants).
    pub fn tenant_key(&self, row: usize) -> i32 {
        self.tenant.keys().value(row)
    }
    pub fn rule_description(&self, row: usize) -> Option<&'a str> {
        self.rule_description.get(row)
    }
    pub fn agent_id(&self, row: usize) -> Option<&'a str> {
        self.agent_id.get(row)
    }
    pub fn agent_name(&self, row: usize) -> Option<&'a str> {
        self.agent_name.get(row)
    }
    pub fn agent_ip(&self, row: usize) -> Option<&'a str> {
        self.agent_ip.get(row).filter(|ip| !ip.is_empty() && *ip != "any")
    }
    /// MITRE tactics of the row, in the order the alert lists them.
    pub fn tactics(&self, row: usize) -> impl Iterator<Item = &'a str> + use<'a> {
        list_values(self.mitre_tactics, self.tactic_values, row)
    }

    /// Wazuh rule groups of the row.
    pub fn groups(&self, row: usize) -> impl Iterator<Item = &'a str> + use<'a> {
        list_values(self.rule_groups, self.group_values, row)
    }
}

fn list_values<'a>(list: &'a ListArray, values: DictStr<'a>, row: usize) -> impl Iterator<Item = &'a str> + use<'a> {
    let offsets = list.value_offsets();
    let range = if list.is_null(row) { 0..0 } else { offsets[row] as usize..offsets[row + 1] as usize };
    range.filter_map(move |i| values.get(i))
}
