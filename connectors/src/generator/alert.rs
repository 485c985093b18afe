//! One alert being built ([`Draft`]) and its serialization as an
//! `alerts.json` line, keys in the order wazuh-analysisd writes them.

use super::civil;
use super::json::{J, esc, push_u64};
use super::rules::{Fields, RuleSet};
use super::tenant::Tenant;

/// Whose alert it is: an agent of the tenant, or the manager itself (000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Agent(usize),
    Manager,
}

/// The parts of an alert a log source fills in; reused for every alert so
/// that steady-state generation does not allocate.
#[derive(Debug)]
pub(crate) struct Draft {
    pub rule: u32,
    pub who: Who,
    /// The original log line; omitted when empty or when the rule has
    /// `no_full_log`.
    pub full_log: String,
    pub previous_output: String,
    /// Program name for the syslog `predecoder` block (syslog lines only).
    pub program: Option<&'static str>,
    pub decoder: &'static str,
    pub decoder_parent: Option<&'static str>,
    /// The `data` object (complete, with braces); omitted when empty.
    pub data: J,
    /// The `syscheck` object; omitted when empty.
    pub syscheck: J,
    pub location: String,
    /// The full log is the `data` JSON itself (Windows eventchannel).
    pub full_log_is_data: bool,
    /// Values for `$(field)` placeholders in the rule description.
    pub fields: Fields,
    /// Scratch space for sources (Windows eventdata, messages).
    pub ev: J,
    pub scratch: String,
}

impl Default for Draft {
    fn default() -> Self {
        Draft {
            rule: 0,
            who: Who::Manager,
            full_log: String::with_capacity(512),
            previous_output: String::new(),
            program: None,
            decoder: "",
            decoder_parent: None,
            data: J::default(),
            syscheck: J::default(),
            location: String::new(),
            full_log_is_data: false,
            fields: Fields::default(),
            ev: J::default(),
            scratch: String::new(),
        }
    }
}

impl Draft {
    pub(crate) fn reset(&mut self) {
        self.rule = 0;
        self.who = Who::Manager;
        self.full_log.clear();
        self.previous_output.clear();
        self.program = None;
        self.decoder = "";
        self.decoder_parent = None;
        self.data.clear();
        self.syscheck.clear();
        self.location.clear();
        self.full_log_is_data = false;
        self.fields.clear();
        self.ev.clear();
        self.scratch.clear();
    }
}

/// Writes `d` as one line (with `\n`) into `line`, advancing the tenant's
/// `firedtimes` and alerts-file offset. Returns the alert id's two parts
/// (unix seconds, offset).
pub(crate) fn write_line(line: &mut String, d: &Draft, rules: &RuleSet, t: &mut Tenant, ts: i64) -> (i64, u64) {
    line.clear();
    line.push_str("{\"timestamp\":\"");
    civil::write_wazuh(line, ts);
    line.push_str("\",\"rule\":");
    let (ri, rule) = rules.get(d.rule);
    t.fired[ri] += 1;
    rule.write(line, t.fired[ri], &d.fields);
    line.push(',');
    match d.who {
        Who::Agent(a) => line.push_str(&t.agents[a].header),
        Who::Manager => line.push_str(&t.manager_header),
    }
    let sec = ts.div_euclid(1000);
    let offset = t.offset;
    line.push_str(",\"id\":\"");
    push_u64(line, sec.max(0) as u64);
    line.push('.');
    push_u64(line, offset);
    line.push('"');
    if !d.previous_output.is_empty() {
        line.push_str(",\"previous_output\":\"");
        esc(line, &d.previous_output);
        line.push('"');
    }
    if !rule.no_full_log {
        let full = if d.full_log_is_data { &d.data.buf } else { &d.full_log };
        if !full.is_empty() {
            line.push_str(",\"full_log\":\"");
            esc(line, full);
            line.push('"');
        }
    }
    if !d.syscheck.is_empty() {
        line.push_str(",\"syscheck\":");
        line.push_str(&d.syscheck.buf);
    }
    if let Some(p) = d.program {
        line.push_str(",\"predecoder\":{\"program_name\":\"");
        line.push_str(p);
        line.push_str("\",\"timestamp\":\"");
        civil::write_syslog(line, ts);
        line.push_str("\",\"hostname\":\"");
        if let Who::Agent(a) = d.who {
            esc(line, &t.agents[a].name);
        } else {
            esc(line, &t.name);
        }
        line.push_str("\"}");
    }
    line.push_str(",\"decoder\":{");
    if let Some(p) = d.decoder_parent {
        line.push_str("\"parent\":\"");
        line.push_str(p);
        line.push_str("\",");
    }
    line.push_str("\"name\":\"");
    line.push_str(d.decoder);
    line.push_str("\"}");
    if !d.data.is_empty() {
        line.push_str(",\"data\":");
        line.push_str(&d.data.buf);
    }
    line.push_str(",\"location\":\"");
    esc(line, &d.location);
    line.push_str("\"}\n");
    // Wazuh's alert id is "<time>.<offset of the alert in alerts.log>".
    t.offset += line.len() as u64;
    (sec, offset)
}
