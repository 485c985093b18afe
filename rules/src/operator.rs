//! The rules operator: buffers each tenant's alerts, runs every rule when
//! one of its windows closes, and sends the detections down the chain
//! (dedup → **rules** → correlate).
//!
//! **When a window closes.** On the tenant's own clock: the tenant's newest
//! event time minus the allowed lateness. A window `[start, end)` closes
//! when that clock reaches `end`, *before* the alert that moved the clock
//! is passed on, so a detection reaches correlate at the same place among
//! the tenant's alerts whatever the batch size, shard count or the way
//! Kafka partitions interleave. A quiet tenant's windows close on the
//! overall watermark once it is `allowed_lateness` past the end: by then no
//! record on time can fall before it, so the place is the same too.
//!
//! **Tenants never mix.** Each tenant has its own buffer and clock, and a
//! rule's `alerts` table holds one tenant's rows of one window.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{
    Array, ArrayData, ArrayRef, AsArray, BooleanArray, MutableArrayData, RecordBatch, StringArray, UInt32Array,
    make_array, new_null_array,
};
use arrow::compute::{and, take};
use arrow::datatypes::{DataType, Field, SchemaRef, TimestampMicrosecondType, TimestampMillisecondType};
use arrow::error::ArrowError;
use serde::{Deserialize, Serialize};
use sluice_operators::detection::Detection;
use sluice_operators::hash::StableHasher;
use sluice_operators::operator::{AlertBatch, Collector, Context, DedupMarks, Operator, Output, Tenants};
use sluice_operators::policy::Policies;
use sluice_operators::schema::{AlertColumns, col};
use sluice_operators::time::EventTime;

use crate::engine::{Compiled, Engine, Guard, cell_severity, cell_text, list_texts, prefilter_mask, to_table_rows};
use crate::rule::{Rule, Window};

const NAME: &str = "rules";
/// 6: pieces hold wide columns for some rows only; 5: pieces hold the
/// Windows columns (`win_event_id`, `win_channel`), otherwise as 4; 3: no
/// blank columns. Older formats are read, and their pieces take the
/// current columns by name.
const SNAPSHOT_VERSION: u32 = 6;
/// Alert ids kept per detection.
const MAX_ALERT_IDS: usize = 50;

/// Per-rule figures for the workbench and benchmarks (wall clock: reporting
/// only, never semantics).
#[derive(Debug, Clone, Default)]
pub struct RuleStats {
    pub windows: u64,
    /// Evaluations whose SQL ran: windows (and early evaluations) that
    /// met the rule's guards (see [`crate::engine::Guard`]).
    pub evaluated: u64,
    pub detections: u64,
    pub time: Duration,
}

/// Rows of one tenant buffered for its open windows: only rows that some
/// rule can read (see [`crate::engine::prefilter_mask`]).
#[derive(Debug, Clone)]
struct Piece {
    rows: RecordBatch,
    /// Per column: it holds the rows' values (the others are blank: no
    /// rule read them when the piece was buffered).
    real: Arc<[bool]>,
    /// The wide columns (see [`Blanks::WIDE`]) held for some rows only
    /// (their `real` is false): the rows, the others left blank. Only the
    /// rules that read such a column read those rows of it.
    some: HeldRows,
    min_t: EventTime,
    max_t: EventTime,
    /// Per rule (aligned with `Rules::rules`): the rows it reads; `None`:
    /// all of them.
    masks: Vec<Option<BooleanArray>>,
    /// Per rule, per guard of the rule: the rows that pass its test.
    guards: Vec<Vec<BooleanArray>>,
}

/// Per rule (aligned with `Rules::rules`): the rows it reads (`None`:
/// all), and per guard of the rule the rows that pass its test.
type Masks = (Vec<Option<BooleanArray>>, Vec<Vec<BooleanArray>>);

/// Per column held for some rows only: the column, the rows (see
/// [`Piece::some`]).
type HeldRows = Vec<(usize, BooleanArray)>;

/// Where one rule stands for one tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RuleState {
    /// Windows ending at or before this are evaluated (sessions: rows
    /// before it are).
    done_until: EventTime,
    /// The oldest row not yet in an evaluated window.
    oldest: Option<EventTime>,
    /// When the tenant's clock must next close a window.
    due: EventTime,
    /// When the tenant's clock must next evaluate the window ending at
    /// `due` early (`window.early`; `MAX`: not until new rows arrive).
    early: EventTime,
    /// Detections of windows that overlap the next ones (hopping): an
    /// overlapping window that finds the same entities with some of the
    /// same alerts has found the same thing, and does not report it again.
    #[serde(default)]
    recent: Vec<Reported>,
}

#[derive(Debug, Clone, Default)]
struct TenantRules {
    /// Newest event time seen.
    newest: EventTime,
    pieces: Vec<Piece>,
    rows: usize,
    /// Aligned with `Rules::rules` (snapshots key them by rule name, so
    /// state survives a rule set that changes between runs).
    rules: Vec<RuleState>,
    due: EventTime,
    /// Hopping windows overlap: the rows of one slide, gathered for a
    /// window, serve the next windows too. (rule, slide start) → (slide
    /// end, rows); forgotten once no window of the rule still to come reads
    /// the slide, or when rows arrive in it (not state: made again).
    slides: BTreeMap<(usize, EventTime), (EventTime, Vec<RecordBatch>)>,
}

/// A detection reported by a window that may overlap later ones.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Reported {
    entities: u64,
    alerts: Vec<u64>,
    window_end: EventTime,
}

impl Reported {
    fn of(d: &Detection) -> Self {
        let mut h = StableHasher::new();
        for (kind, value) in &d.entities {
            h.u64(*kind as u64).field(value.as_bytes());
        }
        let alerts = d.alert_ids.iter().map(|id| StableHasher::new().field(id.as_bytes()).finish()).collect();
        Reported { entities: h.finish(), alerts, window_end: d.window_end }
    }

    /// The same finding: the same entities, and a shared alert (or neither
    /// lists alerts).
    fn same(&self, other: &Reported) -> bool {
        self.entities == other.entities
            && ((self.alerts.is_empty() && other.alerts.is_empty())
                || self.alerts.iter().any(|a| other.alerts.contains(a)))
    }
}

impl RuleState {
    fn new() -> Self {
        RuleState {
            done_until: EventTime::MIN,
            oldest: None,
            due: EventTime::MAX,
            early: EventTime::MAX,
            recent: Vec::new(),
        }
    }

    /// When the tenant's clock must next do something for this rule.
    fn next(&self) -> EventTime {
        self.due.min(self.early)
    }

    /// A rule whose windows ending at or before `done_until` are evaluated:
    /// the oldest buffered row still ahead of it decides its next window.
    fn after(rule: &Rule, done_until: EventTime, pieces: &[Piece]) -> Self {
        let window = rule.window;
        // From the pieces' bounds, not their rows: at most this early, so a
        // window is never missed (an empty one is skipped without SQL).
        let from = first_open_row(window, done_until);
        let oldest = pieces.iter().filter(|p| p.max_t >= from).map(|p| p.min_t.max(from)).min();
        let due = oldest.map_or(EventTime::MAX, |t| next_due(window, done_until, t));
        let early = match (rule.early, oldest) {
            (Some(step), Some(t)) => Some(tick_after(t, step)).filter(|&tick| tick < due).unwrap_or(EventTime::MAX),
            _ => EventTime::MAX,
        };
        RuleState { done_until, oldest, due, early, recent: Vec::new() }
    }
}

/// A new rule set for a running rules stage (a reload): each shard plans
/// it with its own engine. A rule whose definition is unchanged keeps its
/// state; a new or changed rule starts with the windows still open, over
/// the alerts already buffered with every column it reads.
#[derive(Debug, Clone)]
pub struct Reload(pub Vec<crate::rule::Rule>);

/// The rules stage of a shard.
pub struct Rules {
    engine: Engine,
    rules: Vec<Compiled>,
    lateness: i64,
    max_rows: usize,
    table_schema: SchemaRef,
    /// Stand-ins for the columns no rule reads.
    blanks: Blanks,
    tenants: BTreeMap<Arc<str>, TenantRules>,
    stats: BTreeMap<String, RuleStats>,
    /// Which rules each tenant's policy enables (not state: from config).
    policies: Arc<Policies>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| r.rule.name.as_str()).collect();
        f.debug_struct("Rules").field("rules", &names).finish_non_exhaustive()
    }
}

impl Rules {
    /// `rules` must have been compiled by `engine`; disabled ones are skipped.
    pub fn new(engine: Engine, rules: Vec<Compiled>, allowed_lateness_ms: i64, max_rows_per_tenant: usize) -> Self {
        let table_schema = engine.schema().clone();
        let rules: Vec<Compiled> = rules.into_iter().filter(|r| r.rule.enabled).collect();
        let stats = rules.iter().map(|r| (r.rule.name.clone(), RuleStats::default())).collect();
        Rules {
            engine,
            blanks: Blanks::new(&table_schema, &rules),
            rules,
            lateness: allowed_lateness_ms.max(0),
            max_rows: max_rows_per_tenant.max(1),
            table_schema,
            tenants: BTreeMap::new(),
            stats,
            policies: Arc::new(Policies::default()),
        }
    }

    pub fn stats(&self) -> &BTreeMap<String, RuleStats> {
        &self.stats
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    fn tenant(&mut self, name: &str) -> &mut TenantRules {
        if !self.tenants.contains_key(name) {
            let t = TenantRules {
                newest: EventTime::MIN,
                due: EventTime::MAX,
                rules: vec![RuleState::new(); self.rules.len()],
                ..TenantRules::default()
            };
            self.tenants.insert(Arc::from(name), t);
        }
        self.tenants.get_mut(name).expect("inserted above")
    }

    /// Notes a row of `tenant` at `t`. Returns false, without noting it,
    /// when the row moves the tenant's clock past a window end: those
    /// windows must close first (then call again).
    fn observe(&mut self, tenant: &str, t: EventTime) -> bool {
        self.tenant(tenant);
        let state = self.tenants.get_mut(tenant).expect("created above");
        if state.newest.max(t).saturating_sub(self.lateness) >= state.due {
            return false;
        }
        state.newest = state.newest.max(t);
        for (rule, rs) in self.rules.iter().zip(state.rules.iter_mut()) {
            let window = rule.rule.window;
            if t < first_open_row(window, rs.done_until)
                || !(rule.rule.scope.includes(tenant) && self.policies.rule_enabled(tenant, &rule.rule.name))
            {
                continue;
            }
            if rs.oldest.is_none_or(|o| t < o) {
                rs.oldest = Some(t);
                rs.due = rs.due.min(next_due(window, rs.done_until, t));
            }
            // A row of the next window: evaluate it early at the next tick.
            if let Some(step) = rule.rule.early
                && t < rs.due
            {
                let tick = tick_after(t, step);
                if tick < rs.due {
                    rs.early = rs.early.min(tick);
                }
            }
            state.due = state.due.min(rs.next());
        }
        true
    }

    /// Which rows of `rows` each rule reads (`None`: all), and which pass
    /// each of its guards' tests (none listed: the guards count as met).
    /// Session rules read all: any alert of the tenant keeps a session
    /// going. A rule reads nothing of rows whose columns it reads are not
    /// all held: `real` (buffered under a rule set that did not need them;
    /// `None`: fresh rows, every column real), or held for some rows only
    /// (`some`, see [`Piece::some`]).
    fn masks_of(&self, rows: &RecordBatch, real: Option<(&[bool], &HeldRows)>) -> Masks {
        self.rules
            .iter()
            .map(|r| {
                let held = |i: usize, real: &[bool], some: &HeldRows| real[i] || some.iter().any(|(c, _)| *c == i);
                let readable = match real {
                    None => true,
                    Some((real, some)) => (0..real.len()).filter(|&i| r.reads_column(i)).all(|i| held(i, real, some)),
                };
                if !readable {
                    let none = BooleanArray::from(vec![false; rows.num_rows()]);
                    return (Some(none.clone()), vec![none; r.guards.len()]);
                }
                // Nothing to test (a session rule reads every row: only its
                // guards need tests).
                let session = matches!(r.rule.window, Window::Session { .. });
                let (mask, guards) = if r.guards.is_empty() && (session || r.prefilter.is_none()) {
                    (None, Vec::new())
                } else {
                    // A test that failed reads every row and guards nothing.
                    let (mask, guards) = prefilter_mask(r, &r.test_view(rows)).unwrap_or_else(|e| {
                        tracing::warn!(error = %e, "rules: prefilter failed; the rule reads every row");
                        (None, Vec::new())
                    });
                    (mask.filter(|_| !session), guards)
                };
                // Only the rows whose wide columns the rule reads are held.
                let part = real.iter().flat_map(|(_, some)| some.iter()).filter(|(c, _)| r.reads_column(*c));
                let Some(held) = part.map(|(_, m)| m.clone()).reduce(|a, b| and(&a, &b).expect("equal lengths")) else {
                    return (mask, guards);
                };
                let only_held = |m: BooleanArray| and(&m, &held).expect("equal lengths");
                (Some(mask.map_or(held.clone(), only_held)), guards.into_iter().map(only_held).collect())
            })
            .unzip()
    }

    /// Buffers rows `[from, to)` of a batch (already table rows, with
    /// `tests`: what [`Rules::masks_of`] says of the whole batch) by
    /// tenant: the rows some rule reads.
    fn buffer(&mut self, table: &RecordBatch, tests: &Masks, cols: &AlertColumns<'_>, from: usize, to: usize) {
        if from == to {
            return;
        }
        let slice = table.slice(from, to - from);
        let cut = |m: &BooleanArray| m.slice(from, to - from);
        let masks: Vec<Option<BooleanArray>> = tests.0.iter().map(|m| m.as_ref().map(cut)).collect();
        let guards: Vec<Vec<BooleanArray>> = tests.1.iter().map(|g| g.iter().map(cut).collect()).collect();
        let every_row = masks.iter().any(Option::is_none);
        let mut by_tenant: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for i in 0..slice.num_rows() {
            if every_row || masks.iter().flatten().any(|m| m.value(i)) {
                by_tenant.entry(cols.tenant(from + i)).or_default().push(i as u32);
            }
        }
        for (tenant, rows) in by_tenant {
            if !self
                .rules
                .iter()
                .any(|r| r.rule.scope.includes(tenant) && self.policies.rule_enabled(tenant, &r.rule.name))
            {
                continue;
            }
            let times: Vec<EventTime> = rows.iter().map(|&r| cols.event_time.value(from + r as usize)).collect();
            let indices = UInt32Array::from(rows);
            let pick = |m: &BooleanArray| take(m, &indices, None).expect("in range").as_boolean().clone();
            let piece_masks: Vec<Option<BooleanArray>> = masks.iter().map(|m| m.as_ref().map(pick)).collect();
            let piece_guards = guards.iter().map(|g| g.iter().map(pick).collect()).collect();
            // A wide column is held for the rows of the rules that read it.
            let wanted = |i: usize| -> Option<BooleanArray> {
                let mut readers = self.rules.iter().zip(&piece_masks).filter(|(r, _)| r.reads_column(i));
                readers.try_fold(BooleanArray::from(vec![false; indices.len()]), |rows, (_, mask)| {
                    mask.as_ref().map(|m| arrow::compute::or(&rows, m).expect("equal lengths"))
                })
            };
            let (taken, real, some) = self.blanks.take(&slice, &indices, wanted);
            let max_rows = self.max_rows;
            let (min_t, max_t) = (*times.iter().min().expect("non-empty"), *times.iter().max().expect("non-empty"));
            let state = self.tenant(tenant);
            state.rows += taken.num_rows();
            state.pieces.push(Piece {
                rows: taken,
                real,
                some,
                min_t,
                max_t,
                masks: piece_masks,
                guards: piece_guards,
            });
            // Rows behind the clock (late, still buffered) change the slides they fall in.
            state.slides.retain(|&(_, from), (to, _)| max_t < from || *to <= min_t);
            while state.rows > max_rows && state.pieces.len() > 1 {
                let dropped = state.pieces.remove(0);
                state.rows -= dropped.rows.num_rows();
                state.slides.clear();
            }
        }
    }

    /// Closes every window of `tenant` that its clock (or `floor`, from the
    /// overall watermark) has passed, in order of window end.
    fn close(&mut self, tenant: &str, floor: EventTime, ctx: &mut Context, out: &mut dyn Collector) {
        let Some((name, _)) = self.tenants.get_key_value(tenant) else { return };
        let name = name.clone();
        let state = self.tenants.get(tenant).expect("present");
        let clock = state.newest.saturating_sub(self.lateness).max(floor);
        if clock < state.due {
            return;
        }
        let mut detections = Vec::new();
        loop {
            // The rule whose next window ends first (ties: rule order).
            let state = self.tenants.get(tenant).expect("present");
            let next = state
                .rules
                .iter()
                .enumerate()
                .map(|(i, s)| (s.next(), i))
                .filter(|&(due, _)| due <= clock && due != EventTime::MAX)
                .min();
            let Some((_, i)) = next else { break };
            self.close_one(&name, i, clock, &mut detections);
        }
        let state = self.tenants.get_mut(tenant).expect("present");
        state.due = state.rules.iter().map(RuleState::next).min().unwrap_or(EventTime::MAX);
        let needed = self
            .rules
            .iter()
            .zip(&state.rules)
            .map(|(r, s)| first_open_row(r.rule.window, s.done_until))
            .min()
            .unwrap_or(EventTime::MAX);
        let before = state.pieces.len();
        state.pieces.retain(|p| p.max_t >= needed);
        if state.pieces.len() != before {
            state.rows = state.pieces.iter().map(|p| p.rows.num_rows()).sum();
        }
        ctx.counters.add(NAME, "detections", &name, detections.len() as u64);
        for d in detections {
            out.collect(Output::Detection(Box::new(d)));
        }
    }

    /// Evaluates rule `i`'s next window for `tenant` and moves the rule on
    /// (or evaluates it early, while still open).
    fn close_one(&mut self, tenant: &Arc<str>, i: usize, clock: EventTime, detections: &mut Vec<Detection>) {
        let rule = &self.rules[i];
        let state = self.tenants.get_mut(tenant).expect("present");
        let rs = state.rules[i].clone();
        if rs.early < rs.due {
            return self.fire_early(tenant, i, clock, detections);
        }
        let (start, end, done_until) = match rule.rule.window {
            Window::Tumbling { size } | Window::Hopping { size, .. } => {
                let end = rs.due;
                (end - size, end, end)
            }
            Window::Session { gap, max } => {
                // The session starting at the oldest unevaluated row.
                let mut times: Vec<EventTime> = rows_times(&state.pieces, rs.done_until, EventTime::MAX);
                times.sort_unstable();
                let first = times.first().copied().unwrap_or(rs.done_until);
                let mut last = first;
                for &t in &times {
                    if t >= last.saturating_add(gap) || t >= first.saturating_add(max) {
                        break;
                    }
                    last = t;
                }
                let complete =
                    clock >= last.saturating_add(gap) || times.iter().any(|&t| t >= first.saturating_add(max));
                if !complete {
                    state.rules[i].due = last.saturating_add(gap);
                    return;
                }
                (first, last.saturating_add(1), last.saturating_add(1))
            }
        };
        let rows = match (guards_met(&state.pieces, start, end, i, &rule.guards), rule.rule.window) {
            (false, _) => Vec::new(),
            (true, Window::Hopping { size, slide }) if size % slide == 0 => {
                let mut rows = Vec::new();
                for from in (start..end).step_by(slide as usize) {
                    let (_, part) = state.slides.entry((i, from)).or_insert_with(|| {
                        let to = from + slide;
                        (to, window_rows(&state.pieces, from, to, i, rule.reads.as_deref(), &mut self.blanks))
                    });
                    rows.extend(part.iter().cloned());
                }
                rows
            }
            (true, _) => window_rows(&state.pieces, start, end, i, rule.reads.as_deref(), &mut self.blanks),
        };
        // The rule's next window starts a slide later at least.
        state.slides.retain(|&(r, from), _| r != i || from > start);
        detections.extend(self.evaluate(tenant, i, rows, (start, end), true));
        // Move on: the oldest row still ahead of this rule decides its next window.
        let rule = &self.rules[i];
        let state = self.tenants.get_mut(tenant).expect("present");
        let recent = std::mem::take(&mut state.rules[i].recent);
        state.rules[i] = RuleState { recent, ..RuleState::after(&rule.rule, done_until, &state.pieces) };
    }

    /// Evaluates rule `i`'s next window for `tenant` over its rows before
    /// the early tick: rows at or past the tenant's clock are final, so what
    /// fires does not depend on how sources interleave. A match fires now;
    /// the window's later evaluations do not report it again.
    fn fire_early(&mut self, tenant: &Arc<str>, i: usize, clock: EventTime, detections: &mut Vec<Detection>) {
        let rule = &self.rules[i];
        let step = rule.rule.early.expect("an early tick is set only with window.early");
        let state = self.tenants.get_mut(tenant).expect("present");
        let rs = &state.rules[i];
        let (end, at) = (rs.due, rs.early);
        let start = end.saturating_sub(rule.rule.window.span());
        let rows = match guards_met(&state.pieces, start, at, i, &rule.guards) {
            true => window_rows(&state.pieces, start, at, i, rule.reads.as_deref(), &mut self.blanks),
            false => Vec::new(),
        };
        detections.extend(self.evaluate(tenant, i, rows, (start, end), false));
        // The next tick, if rows of this window arrived at or after this one
        // (later rows schedule one as they come).
        let state = self.tenants.get_mut(tenant).expect("present");
        let more = state.pieces.iter().any(|p| p.max_t >= at && p.min_t < end);
        let next = at.saturating_add(step).max(clock.div_euclid(step) * step);
        state.rules[i].early = if more && next < end { next } else { EventTime::MAX };
    }

    /// Runs rule `i` over `rows` of `tenant`'s window `[start, end)` (all of
    /// it when `closing`, else an early evaluation); returns what was not
    /// reported yet, and counts the cost.
    fn evaluate(
        &mut self,
        tenant: &Arc<str>,
        i: usize,
        rows: Vec<RecordBatch>,
        (start, end): (EventTime, EventTime),
        closing: bool,
    ) -> Vec<Detection> {
        let rule = &self.rules[i];
        let started = Instant::now();
        let mut found = Vec::new();
        let run = rows.iter().any(|b| b.num_rows() > 0);
        if run {
            let summary = WindowSummary::of(&rows);
            match self.engine.evaluate(rule, rows) {
                Ok(results) => found = detections_of(rule, tenant, start, end, &summary, &results),
                Err(e) => tracing::warn!(error = %e, tenant = %tenant, "rules: evaluation failed; window skipped"),
            }
        }
        // What an overlapping earlier window (or an early evaluation of this
        // one) already reported is not news.
        let recent = &mut self.tenants.get_mut(tenant).expect("present").rules[i].recent;
        only_news(recent, &mut found, end, rule.rule.window.span());
        let stats = self.stats.entry(rule.rule.name.clone()).or_default();
        stats.windows += u64::from(closing);
        stats.evaluated += u64::from(run);
        stats.detections += found.len() as u64;
        stats.time += started.elapsed();
        found
    }

    /// Takes a new rule set (see [`Reload`]), planned by this stage's engine.
    pub fn replace(&mut self, rules: Vec<Compiled>) {
        let rules: Vec<Compiled> = rules.into_iter().filter(|r| r.rule.enabled).collect();
        for (tenant, state) in self.tenants.iter_mut() {
            let clock = state.newest.saturating_sub(self.lateness);
            let states: Vec<RuleState> = rules
                .iter()
                .map(|r| match self.rules.iter().position(|old| old.rule == r.rule) {
                    Some(i) => state.rules[i].clone(),
                    None if state.newest == EventTime::MIN
                        || !(r.rule.scope.includes(tenant) && self.policies.rule_enabled(tenant, &r.rule.name)) =>
                    {
                        RuleState::new()
                    }
                    None => RuleState::after(&r.rule, last_closed_end(r.rule.window, clock), &state.pieces),
                })
                .collect();
            state.due = states.iter().map(|r| r.due).min().unwrap_or(EventTime::MAX);
            state.rules = states;
        }
        for r in &rules {
            self.stats.entry(r.rule.name.clone()).or_default();
        }
        self.blanks = Blanks::new(&self.table_schema, &rules);
        self.rules = rules;
        self.remask();
    }

    /// Recomputes every buffered piece's masks for the current rules.
    fn remask(&mut self) {
        self.remask_of(|_| true);
    }

    /// [`Rules::remask`] for the tenants `which` picks.
    fn remask_of(&mut self, which: impl Fn(&str) -> bool) {
        let mut tenants = std::mem::take(&mut self.tenants);
        for (_, tenant) in tenants.iter_mut().filter(|(name, _)| which(name)) {
            tenant.slides.clear();
            for piece in tenant.pieces.iter_mut() {
                (piece.masks, piece.guards) = self.masks_of(&piece.rows, Some((&piece.real, &piece.some)));
            }
        }
        self.tenants = tenants;
    }
}

/// The first tick of `step` after `t`.
fn tick_after(t: EventTime, step: i64) -> EventTime {
    (t.div_euclid(step) + 1).saturating_mul(step)
}

/// Drops from `found` what an overlapping window (or an earlier evaluation
/// of this one) already reported, and remembers the rest.
fn only_news(recent: &mut Vec<Reported>, found: &mut Vec<Detection>, end: EventTime, span: i64) {
    recent.retain(|r| r.window_end > end.saturating_sub(span));
    found.retain(|d| {
        let this = Reported::of(d);
        let new = !recent.iter().any(|r| r.same(&this));
        if new {
            recent.push(this);
        }
        new
    });
}

/// The end of the last window that closed at or before `clock` (sessions:
/// `clock`), for a rule that starts running at `clock`.
fn last_closed_end(window: Window, clock: EventTime) -> EventTime {
    match window {
        Window::Tumbling { size } => clock.div_euclid(size) * size,
        Window::Hopping { slide, .. } => clock.div_euclid(slide) * slide,
        Window::Session { .. } => clock,
    }
}

/// The oldest event time a window ending after `done_until` can hold:
/// older rows are in no window still to be evaluated.
fn first_open_row(window: Window, done_until: EventTime) -> EventTime {
    match window {
        Window::Tumbling { .. } | Window::Session { .. } => done_until,
        Window::Hopping { size, slide } => done_until.saturating_sub(size).saturating_add(slide),
    }
}

/// The end of the first window after `done_until` that holds a row at `t`
/// (sessions: the earliest the session can be complete).
fn next_due(window: Window, done_until: EventTime, t: EventTime) -> EventTime {
    match window {
        Window::Tumbling { size } => (t.div_euclid(size) + 1) * size,
        Window::Hopping { size, slide } => {
            let first = (t.saturating_sub(size).div_euclid(slide) + 1) * slide + size;
            let after = (done_until.div_euclid(slide) + 1) * slide;
            first.max(if done_until == EventTime::MIN { first } else { after })
        }
        Window::Session { gap, .. } => t.saturating_add(gap),
    }
}

/// Event times of buffered rows in `[from, to)`.
fn rows_times(pieces: &[Piece], from: EventTime, to: EventTime) -> Vec<EventTime> {
    let mut out = Vec::new();
    for p in pieces.iter().filter(|p| p.max_t >= from && p.min_t < to) {
        let t = p.rows.column_by_name(col::EVENT_TIME).expect("event_time").as_primitive::<TimestampMillisecondType>();
        out.extend(t.values().iter().copied().filter(|&v| v >= from && v < to));
    }
    out
}

/// Whether enough buffered rows with event time in `[start, end)` pass
/// each of rule `rule`'s guards for its query to return anything.
fn guards_met(pieces: &[Piece], start: EventTime, end: EventTime, rule: usize, guards: &[Guard]) -> bool {
    guards.iter().enumerate().all(|(g, guard)| {
        let mut count = 0;
        for p in pieces.iter().filter(|p| p.max_t >= start && p.min_t < end) {
            // No test for these rows (it failed): met.
            let Some(passes) = p.guards.get(rule).and_then(|gs| gs.get(g)) else { return true };
            if p.min_t >= start && p.max_t < end {
                count += passes.true_count();
            } else {
                let t = p
                    .rows
                    .column_by_name(col::EVENT_TIME)
                    .expect("event_time")
                    .as_primitive::<TimestampMillisecondType>();
                count +=
                    t.values().iter().zip(passes.values()).filter(|&(&v, pass)| pass && v >= start && v < end).count();
            }
            if count >= guard.min_rows {
                return true;
            }
        }
        false
    })
}

/// The buffered rows with event time in `[start, end)` that rule `rule`
/// reads, with the columns it reads (`columns`; `None`: all), as one batch:
/// DataFusion's operators pay per batch, and a window gathers rows from
/// many pieces.
fn window_rows(
    pieces: &[Piece],
    start: EventTime,
    end: EventTime,
    rule: usize,
    columns: Option<&[usize]>,
    blanks: &mut Blanks,
) -> Vec<RecordBatch> {
    // Per piece in the window: the rows to take (`None`: all).
    let mut picks: Vec<(&RecordBatch, Option<BooleanArray>)> = Vec::new();
    for p in pieces.iter().filter(|p| p.max_t >= start && p.min_t < end) {
        let reads = p.masks.get(rule).and_then(Option::as_ref);
        if p.min_t >= start && p.max_t < end {
            match reads {
                None => picks.push((&p.rows, None)),
                Some(m) if m.true_count() == 0 => {}
                Some(m) => picks.push((&p.rows, Some(m.clone()))),
            }
            continue;
        }
        let t = p.rows.column_by_name(col::EVENT_TIME).expect("event_time").as_primitive::<TimestampMillisecondType>();
        let mask: BooleanArray = t
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| Some(v >= start && v < end && reads.is_none_or(|m| m.value(i))))
            .collect();
        if mask.true_count() > 0 {
            picks.push((&p.rows, Some(mask)));
        }
    }
    if let [(rows, None)] = picks.as_slice() {
        return vec![(*rows).clone()];
    }
    let mut out = Vec::new();
    let mut chunk = 0..0;
    let mut rows = 0;
    for (i, (batch, mask)) in picks.iter().enumerate() {
        let n = mask.as_ref().map_or(batch.num_rows(), BooleanArray::true_count);
        if rows + n > WINDOW_BATCH_ROWS && !chunk.is_empty() {
            out.extend(blanks.gather(&picks[chunk.clone()], columns));
            (chunk, rows) = (i..i, 0);
        }
        (chunk.end, rows) = (i + 1, rows + n);
    }
    if !chunk.is_empty() {
        out.extend(blanks.gather(&picks[chunk], columns));
    }
    out
}

/// Most rows a window's batch gathers from its pieces.
const WINDOW_BATCH_ROWS: usize = 65_536;

/// Copying a column into a window costs; most rules read a few of the
/// `alerts` columns. The columns nobody reads are replaced by a slice of a
/// blank column (nulls, or empty values where the schema forbids nulls),
/// which costs nothing; the columns this stage itself reads are always kept.
#[derive(Debug)]
struct Blanks {
    schema: SchemaRef,
    /// Per column: some rule (or this stage) reads it, or it cannot be
    /// blanked.
    kept: Arc<[bool]>,
    /// Per column: this stage reads it itself (one of `ALWAYS`).
    always: Vec<bool>,
    /// Per column: one of `WIDE`, held only for the rows of the rules that
    /// read it.
    wide: Vec<bool>,
    /// Per column: a blank at least as long as any asked for so far.
    cache: Vec<Option<ArrayRef>>,
}

impl Blanks {
    /// Columns this stage reads itself: tenants, clocks, window summaries.
    const ALWAYS: [&str; 4] = [col::TENANT, col::EVENT_TIME, col::INGEST_TIME, col::ALERT_ID];
    /// The text columns that hold most bytes: the raw JSON (about a
    /// kilobyte an alert) and the log line. Few rules read them, for few of
    /// the rows the rules buffer.
    const WIDE: [&str; 2] = [col::RAW, col::FULL_LOG];

    fn new(schema: &SchemaRef, rules: &[Compiled]) -> Self {
        // A non-null column has a blank only if zeros or empty values are
        // valid for its type (not for a dictionary or a nested type).
        let blankable = |f: &Field| {
            f.is_nullable()
                || f.data_type().is_primitive()
                || matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
                )
        };
        let always: Vec<bool> = schema.fields().iter().map(|f| Self::ALWAYS.contains(&f.name().as_str())).collect();
        let mut kept: Vec<bool> = schema.fields().iter().zip(&always).map(|(f, &a)| a || !blankable(f)).collect();
        for r in rules {
            match &r.reads {
                Some(columns) => columns.iter().for_each(|&i| kept[i] = true),
                None => kept.iter_mut().for_each(|k| *k = true),
            }
        }
        let wide = schema
            .fields()
            .iter()
            .map(|f| Self::WIDE.contains(&f.name().as_str()) && f.data_type() == &DataType::Utf8)
            .collect();
        Blanks { schema: schema.clone(), cache: vec![None; kept.len()], kept: kept.into(), always, wide }
    }

    /// Column `i`, blank, `len` rows long.
    fn blank(&mut self, i: usize, len: usize) -> ArrayRef {
        let field = self.schema.field(i);
        let cached = &mut self.cache[i];
        if cached.as_ref().is_none_or(|c| c.len() < len) {
            let nulls = new_null_array(field.data_type(), len.next_power_of_two());
            let blank = match field.is_nullable() {
                true => nulls,
                // Zeros and empty strings; only such types are blanked
                // (`ALWAYS` holds the non-null dictionary).
                false => make_array(nulls.into_data().into_builder().nulls(None).build().expect("a valid blank")),
            };
            *cached = Some(blank);
        }
        cached.as_ref().expect("made above").slice(0, len)
    }

    /// The rows `indices` of `rows`, with the kept columns only; which
    /// columns those are; and the wide columns held for some of the rows
    /// only (`wanted`: per column, the rows some rule reads; `None`: all).
    fn take(
        &mut self,
        rows: &RecordBatch,
        indices: &UInt32Array,
        wanted: impl Fn(usize) -> Option<BooleanArray>,
    ) -> (RecordBatch, Arc<[bool]>, HeldRows) {
        let mut real = self.kept.to_vec();
        let mut some = Vec::new();
        let mut columns = Vec::with_capacity(rows.num_columns());
        for (i, held) in real.iter_mut().enumerate() {
            let part = match self.kept[i] && self.wide[i] {
                true => wanted(i).filter(|m| m.true_count() < m.len()),
                false => None,
            };
            let column = match (self.kept[i], part) {
                (false, _) => self.blank(i, indices.len()),
                (true, None) => take(rows.column(i), indices, None).expect("row indices are in range"),
                (true, Some(part)) if part.true_count() == 0 => {
                    *held = false;
                    self.blank(i, indices.len())
                }
                (true, Some(part)) => {
                    *held = false;
                    // Text taken at the held rows; the others empty.
                    let at = arrow::compute::nullif(indices, &arrow::compute::not(&part).expect("a mask"))
                        .expect("equal lengths");
                    let taken = take(rows.column(i), &at, None).expect("row indices are in range");
                    some.push((i, part));
                    match self.schema.field(i).is_nullable() {
                        true => taken,
                        // The blanks as empty text, not null.
                        false => {
                            let text = taken.as_string::<i32>();
                            Arc::new(StringArray::new(text.offsets().clone(), text.values().clone(), None)) as ArrayRef
                        }
                    }
                }
            };
            columns.push(column);
        }
        (RecordBatch::try_new(rows.schema(), columns).expect("the same schema"), real.into(), some)
    }

    /// The rows `picks` take from their batches (`None`: all), with the
    /// columns `reads` (`None`: all) and those this stage reads: one batch,
    /// each value copied once; one batch per pick where text of one batch
    /// would be too long for 32-bit offsets.
    fn gather(&mut self, picks: &[(&RecordBatch, Option<BooleanArray>)], reads: Option<&[usize]>) -> Vec<RecordBatch> {
        match self.gather_one(picks, reads) {
            Ok(batch) => vec![batch],
            Err(_) if picks.len() > 1 => {
                picks.iter().map(|pick| self.gather_one(std::slice::from_ref(pick), reads).expect("fits")).collect()
            }
            Err(e) => panic!("rows of one batch fit one batch: {e}"),
        }
    }

    fn gather_one(
        &mut self,
        picks: &[(&RecordBatch, Option<BooleanArray>)],
        reads: Option<&[usize]>,
    ) -> Result<RecordBatch, ArrowError> {
        let len: usize = picks.iter().map(|(rows, m)| m.as_ref().map_or(rows.num_rows(), |m| m.true_count())).sum();
        let columns = (0..self.schema.fields().len())
            .map(|i| match self.always[i] || reads.is_none_or(|r| r.contains(&i)) {
                // Dictionaries (each input batch has its own) are merged, to
                // the values the rows use: appended as they are, they would
                // hold every piece's whole dictionary.
                true if has_dictionary(self.schema.field(i).data_type()) => {
                    let parts = picks
                        .iter()
                        .map(|(rows, mask)| match mask {
                            None => Ok(rows.column(i).clone()),
                            Some(m) => arrow::compute::filter(rows.column(i), m),
                        })
                        .collect::<Result<Vec<_>, ArrowError>>()?;
                    arrow::compute::concat(&parts.iter().map(AsRef::as_ref).collect::<Vec<_>>())
                }
                true => {
                    let data: Vec<ArrayData> = picks.iter().map(|(rows, _)| rows.column(i).to_data()).collect();
                    let mut out = MutableArrayData::new(data.iter().collect(), false, len);
                    for (k, (rows, mask)) in picks.iter().enumerate() {
                        match mask {
                            None => out.try_extend(k, 0, rows.num_rows())?,
                            Some(m) => {
                                for (from, to) in m.values().set_slices() {
                                    out.try_extend(k, from, to)?;
                                }
                            }
                        }
                    }
                    Ok(make_array(out.freeze()))
                }
                false => Ok(self.blank(i, len)),
            })
            .collect::<Result<_, ArrowError>>()?;
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}

/// Whether values of this type hold a dictionary (lists of dictionaries too).
fn has_dictionary(data_type: &DataType) -> bool {
    match data_type {
        DataType::Dictionary(..) => true,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => has_dictionary(f.data_type()),
        DataType::Struct(fields) => fields.iter().any(|f| has_dictionary(f.data_type())),
        _ => false,
    }
}

/// What a detection reports of its window besides the rule's result.
struct WindowSummary {
    first: EventTime,
    last: EventTime,
    trigger: String,
    trigger_ingest: i64,
}

impl WindowSummary {
    fn of(rows: &[RecordBatch]) -> Self {
        let mut s =
            WindowSummary { first: EventTime::MAX, last: EventTime::MIN, trigger: String::new(), trigger_ingest: 0 };
        for b in rows {
            let t = b.column_by_name(col::EVENT_TIME).expect("event_time").as_primitive::<TimestampMillisecondType>();
            let ingest =
                b.column_by_name(col::INGEST_TIME).expect("ingest_time").as_primitive::<TimestampMicrosecondType>();
            let ids = b.column_by_name(col::ALERT_ID).expect("alert_id").as_string::<i32>();
            for row in 0..b.num_rows() {
                let (v, id) = (t.value(row), ids.value(row));
                s.first = s.first.min(v);
                // The newest alert (ties: the greatest id) triggers the detection.
                if v > s.last || (v == s.last && id > s.trigger.as_str()) {
                    s.last = v;
                    s.trigger = id.to_string();
                    s.trigger_ingest = ingest.value(row);
                }
            }
        }
        s
    }
}

fn detections_of(
    rule: &Compiled,
    tenant: &str,
    start: EventTime,
    end: EventTime,
    w: &WindowSummary,
    results: &[RecordBatch],
) -> Vec<Detection> {
    let mut out = Vec::new();
    for b in results {
        for row in 0..b.num_rows() {
            let entities: Vec<_> = rule
                .entity_columns
                .iter()
                .filter_map(|&(kind, i)| cell_text(b.column(i), row).filter(|v| !v.is_empty()).map(|v| (kind, v)))
                .collect();
            if entities.is_empty() {
                continue;
            }
            let mut alert_ids = rule.alert_ids_column.map(|i| list_texts(b.column(i), row)).unwrap_or_default();
            alert_ids.sort();
            alert_ids.dedup();
            alert_ids.truncate(MAX_ALERT_IDS);
            out.push(Detection {
                rule: rule.rule.name.clone(),
                tenant: tenant.to_string(),
                severity: rule
                    .severity_column
                    .and_then(|i| cell_severity(b.column(i), row))
                    .unwrap_or(rule.rule.severity),
                tags: rule.rule.tags.clone(),
                window_start: start,
                window_end: end,
                first: w.first,
                last: w.last,
                entities,
                alert_ids,
                summary: rule.summary_column.and_then(|i| cell_text(b.column(i), row)),
                trigger_alert: w.trigger.clone(),
                trigger_ingest_us: w.trigger_ingest,
            });
        }
    }
    // The engine's row order is deterministic, but say so in the data.
    out.sort_by(|a, b| (&a.entities, &a.alert_ids).cmp(&(&b.entities, &b.alert_ids)));
    out
}

fn slice(batch: &AlertBatch, from: usize, to: usize) -> AlertBatch {
    if from == 0 && to == batch.num_rows() {
        return batch.clone();
    }
    AlertBatch {
        batch: batch.batch.slice(from, to - from),
        dedup: batch.dedup.as_ref().map(|m| DedupMarks {
            fingerprint: m.fingerprint[from..to].to_vec(),
            duplicate: m.duplicate[from..to].to_vec(),
        }),
    }
}

impl Operator for Rules {
    fn name(&self) -> &'static str {
        NAME
    }

    fn state_sizes(&self, out: &mut dyn FnMut(&'static str, &Arc<str>, u64)) {
        for (tenant, state) in &self.tenants {
            out("window_rows", tenant, state.rows as u64);
            // Copies of hopping windows' slides, kept for the next windows.
            let slides = state.slides.values().flat_map(|(_, rows)| rows).map(RecordBatch::num_rows).sum::<usize>();
            out("window_slide_rows", tenant, slides as u64);
        }
    }

    fn process(
        &mut self,
        batch: AlertBatch,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> sluice_operators::Result<()> {
        if self.rules.is_empty() {
            out.collect(Output::Batch(batch));
            return Ok(());
        }
        let table = to_table_rows(&batch.batch, &self.table_schema)
            .map_err(|e| sluice_operators::Error::Config(e.to_string()))?;
        let cols = AlertColumns::new(&batch.batch)?;
        // Every rule's tests run once over the whole batch, not once per
        // slice of it that `buffer` takes.
        let tests = self.masks_of(&table, None);
        let mut from = 0;
        for row in 0..batch.num_rows() {
            let tenant = cols.tenant(row);
            let t = cols.event_time.value(row);
            if !self.observe(tenant, t) {
                // The rows before go first; then the windows this row's time
                // closes; then this row.
                self.buffer(&table, &tests, &cols, from, row);
                if row > from {
                    out.collect(Output::Batch(slice(&batch, from, row)));
                }
                from = row;
                let state = self.tenants.get_mut(tenant).expect("observed");
                state.newest = state.newest.max(t);
                self.close(tenant, EventTime::MIN, ctx, out);
                let noted = self.observe(tenant, t);
                debug_assert!(noted, "closing leaves nothing due before the clock");
            }
        }
        self.buffer(&table, &tests, &cols, from, batch.num_rows());
        out.collect(Output::Batch(slice(&batch, from, batch.num_rows())));
        Ok(())
    }

    fn on_watermark(
        &mut self,
        wm: EventTime,
        which: Tenants<'_>,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> sluice_operators::Result<()> {
        let floor = wm.saturating_sub(self.lateness);
        let tenants: Vec<Arc<str>> = self.tenants.keys().filter(|t| which.includes(t)).cloned().collect();
        for t in tenants {
            self.close(&t, floor, ctx, out);
        }
        Ok(())
    }

    fn on_end(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> sluice_operators::Result<()> {
        let tenants: Vec<Arc<str>> = self.tenants.keys().cloned().collect();
        for t in tenants {
            self.close(&t, EventTime::MAX, ctx, out);
        }
        Ok(())
    }

    fn snapshot(&self) -> sluice_operators::Result<Vec<u8>> {
        let tenants =
            self.tenants.iter().map(|(name, t)| self.tenant_snapshot(name, t)).collect::<Result<Vec<_>, _>>()?;
        sluice_operators::snapshot::encode(NAME, SNAPSHOT_VERSION, &tenants)
    }

    fn snapshot_tenant(&self, tenant: &str) -> sluice_operators::Result<Option<Vec<u8>>> {
        let Some((name, t)) = self.tenants.get_key_value(tenant) else { return Ok(None) };
        let one: &[TenantSnapshot] = &[self.tenant_snapshot(name, t)?];
        sluice_operators::snapshot::encode(NAME, SNAPSHOT_VERSION, &one).map(Some)
    }

    fn forget(&mut self, tenant: &str) {
        self.tenants.remove(tenant);
    }

    fn reconfigure(&mut self, update: &(dyn std::any::Any + Send + Sync)) -> sluice_operators::Result<()> {
        if let Some(policies) = update.downcast_ref::<Arc<Policies>>() {
            self.policies = policies.clone();
        }
        let Some(Reload(rules)) = update.downcast_ref::<Reload>() else { return Ok(()) };
        // The set was checked before it was sent; should planning fail here
        // all the same, the running rules stay.
        match crate::compile_all(&self.engine, rules.clone()) {
            Ok(compiled) => self.replace(compiled),
            Err(errors) => {
                for e in errors {
                    tracing::error!(error = %e, "rules: reload refused; the running rules stay");
                }
            }
        }
        Ok(())
    }

    fn restore(&mut self, state: &[u8]) -> sluice_operators::Result<()> {
        self.tenants.clear();
        self.absorb(state)
    }

    fn absorb(&mut self, state: &[u8]) -> sluice_operators::Result<()> {
        use sluice_operators::snapshot::decode;
        let v4 = |version| {
            decode::<Vec<TenantSnapshot<PieceSnapshotV4>>>(NAME, version, state)
                .map(|old| old.into_iter().map(TenantSnapshot::from).collect())
        };
        let v3 = || {
            decode::<Vec<TenantSnapshot<PieceSnapshotV3>>>(NAME, 3, state)
                .map(|old| old.into_iter().map(TenantSnapshot::from).collect())
        };
        // Formats 5 and 4 share a layout.
        let tenants: Vec<TenantSnapshot> = decode(NAME, SNAPSHOT_VERSION, state)
            .or_else(|e| v4(5).or_else(|_| v4(4)).or_else(|_| v3()).map_err(|_| e))?;
        let names: Vec<String> = tenants.iter().map(|t| t.name.clone()).collect();
        for t in tenants {
            let pieces = t
                .pieces
                .into_iter()
                .map(|p| {
                    let rows = ipc_batch(&p.ipc)?;
                    let real = match p.real.len() == rows.num_columns() {
                        true => p.real,
                        false => vec![true; rows.num_columns()],
                    };
                    let some = p.some.into_iter().map(|(name, rows)| (name, BooleanArray::from(rows))).collect();
                    let (rows, real, some) = conform(rows, &real, some, &self.table_schema)?;
                    Ok(Piece {
                        rows,
                        real,
                        some,
                        min_t: p.min_t,
                        max_t: p.max_t,
                        masks: Vec::new(),
                        guards: Vec::new(),
                    })
                })
                .collect::<Result<Vec<_>, String>>()
                .map_err(sluice_operators::Error::Config)?;
            // Rules added since the checkpoint start from here.
            let rules: Vec<RuleState> =
                self.rules.iter().map(|r| t.rules.get(&r.rule.name).cloned().unwrap_or_else(RuleState::new)).collect();
            let state = TenantRules {
                newest: t.newest,
                rows: pieces.iter().map(|p| p.rows.num_rows()).sum(),
                pieces,
                due: rules.iter().map(RuleState::next).min().unwrap_or(EventTime::MAX),
                rules,
                slides: BTreeMap::new(),
            };
            self.tenants.insert(Arc::from(t.name.as_str()), state);
        }
        // Only the tenants taken in: one absorbs per tenant when a
        // partition moves.
        self.remask_of(|name| names.iter().any(|n| n == name));
        Ok(())
    }
}

impl Rules {
    /// One tenant's state as its snapshot.
    fn tenant_snapshot(&self, name: &str, t: &TenantRules) -> sluice_operators::Result<TenantSnapshot> {
        let pieces = t
            .pieces
            .iter()
            .map(|p| {
                let some = p
                    .some
                    .iter()
                    .map(|(i, rows)| (self.table_schema.field(*i).name().clone(), rows.values().iter().collect()))
                    .collect();
                let ipc = ipc_bytes(&p.rows)?;
                Ok(PieceSnapshot { min_t: p.min_t, max_t: p.max_t, ipc, real: p.real.to_vec(), some })
            })
            .collect::<Result<_, String>>()
            .map_err(sluice_operators::Error::Config)?;
        Ok(TenantSnapshot {
            name: name.to_string(),
            newest: t.newest,
            rules: self.rules.iter().map(|r| r.rule.name.clone()).zip(t.rules.iter().cloned()).collect(),
            pieces,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct TenantSnapshot<P = PieceSnapshot> {
    name: String,
    newest: EventTime,
    rules: BTreeMap<String, RuleState>,
    pieces: Vec<P>,
}

/// A buffered piece as Arrow IPC.
#[derive(Serialize, Deserialize)]
struct PieceSnapshot {
    min_t: EventTime,
    max_t: EventTime,
    #[serde(with = "serde_bytes")]
    ipc: Vec<u8>,
    /// [`Piece::real`]; empty: every column.
    real: Vec<bool>,
    /// [`Piece::some`], by column name.
    some: Vec<(String, Vec<bool>)>,
}

/// A piece as formats 4 and 5 wrote it, before columns held for some rows.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct PieceSnapshotV4 {
    min_t: EventTime,
    max_t: EventTime,
    #[serde(with = "serde_bytes")]
    ipc: Vec<u8>,
    real: Vec<bool>,
}

/// A piece as format 3 wrote it, before windows had blank columns.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct PieceSnapshotV3 {
    min_t: EventTime,
    max_t: EventTime,
    #[serde(with = "serde_bytes")]
    ipc: Vec<u8>,
}

impl From<TenantSnapshot<PieceSnapshotV3>> for TenantSnapshot {
    fn from(t: TenantSnapshot<PieceSnapshotV3>) -> Self {
        let pieces = t
            .pieces
            .into_iter()
            .map(|p| PieceSnapshot { min_t: p.min_t, max_t: p.max_t, ipc: p.ipc, real: Vec::new(), some: Vec::new() })
            .collect();
        TenantSnapshot { name: t.name, newest: t.newest, rules: t.rules, pieces }
    }
}

impl From<TenantSnapshot<PieceSnapshotV4>> for TenantSnapshot {
    fn from(t: TenantSnapshot<PieceSnapshotV4>) -> Self {
        let pieces = t
            .pieces
            .into_iter()
            .map(|p| PieceSnapshot { min_t: p.min_t, max_t: p.max_t, ipc: p.ipc, real: p.real, some: Vec::new() })
            .collect();
        TenantSnapshot { name: t.name, newest: t.newest, rules: t.rules, pieces }
    }
}

/// A checkpointed piece with the columns of `schema`, matched by name: a
/// column it lacks (the checkpoint predates it, or a `[decode.fields]`
/// column was added since), or holds as another type, is null and not
/// real, so no rule reads those rows for it; text changes between plain
/// and dictionary-encoded. Columns held for some rows (`some`, by name)
/// stay so where they are kept. Fails when such a column cannot be null.
fn conform(
    rows: RecordBatch,
    real: &[bool],
    some: Vec<(String, BooleanArray)>,
    schema: &SchemaRef,
) -> Result<(RecordBatch, Arc<[bool]>, HeldRows), String> {
    // Held in part: the columns carried over from the piece (`carried`).
    let some = |carried: &[bool]| -> HeldRows {
        some.iter()
            .filter_map(|(name, held)| schema.index_of(name).ok().map(|i| (i, held.clone())))
            .filter(|(i, held)| carried[*i] && held.len() == rows.num_rows())
            .collect()
    };
    if rows.schema().fields() == schema.fields() {
        let some = some(&vec![true; real.len()]);
        return Ok((rows, real.into(), some));
    }
    let saved = rows.schema();
    let mut columns = Vec::with_capacity(schema.fields().len());
    let mut now_real = Vec::with_capacity(schema.fields().len());
    let mut carried = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let at = saved.index_of(field.name()).ok();
        // The column, whether its values are held, whether it is the piece's.
        let (column, held, carry) = match at.map(|i| (i, saved.field(i).data_type())) {
            Some((i, kind)) if kind == field.data_type() => (rows.column(i).clone(), real[i], true),
            // Text as a dictionary or the other way round (a
            // `[decode.fields]` column that became a built-in one).
            Some((i, kind)) if is_text(kind) && is_text(field.data_type()) => {
                let cast = arrow::compute::cast(rows.column(i), field.data_type()).map_err(|e| e.to_string())?;
                (cast, real[i], true)
            }
            _ if field.is_nullable() => {
                (arrow::array::new_null_array(field.data_type(), rows.num_rows()), false, false)
            }
            Some((_, kind)) => {
                return Err(format!(
                    "a checkpointed window piece has column {:?} as {kind}, this build needs {}",
                    field.name(),
                    field.data_type()
                ));
            }
            None => return Err(format!("a checkpointed window piece lacks column {:?}", field.name())),
        };
        columns.push(column);
        now_real.push(held);
        carried.push(carry);
    }
    let some = some(&carried);
    let rows = RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())?;
    Ok((rows, now_real.into(), some))
}

/// Text, plain or dictionary-encoded.
fn is_text(kind: &DataType) -> bool {
    match kind {
        DataType::Dictionary(_, values) => values.as_ref() == &DataType::Utf8,
        kind => kind == &DataType::Utf8,
    }
}

fn ipc_bytes(batch: &RecordBatch) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut w = arrow::ipc::writer::StreamWriter::try_new(&mut out, &batch.schema()).map_err(|e| e.to_string())?;
    w.write(batch).map_err(|e| e.to_string())?;
    w.finish().map_err(|e| e.to_string())?;
    drop(w);
    Ok(out)
}

fn ipc_batch(bytes: &[u8]) -> Result<RecordBatch, String> {
    let mut r =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(|e| e.to_string())?;
    r.next().ok_or("an empty piece")?.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sluice_operators::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};

    use super::*;
    use crate::Limits;

    /// The rules whose detections fire when the stream ends, in order.
    fn fired_at_end(op: &mut Rules) -> Vec<String> {
        let mut out = Vec::new();
        op.on_end(&mut Context::default(), &mut out).unwrap();
        out.iter()
            .filter_map(|o| match o {
                Output::Detection(d) => Some(d.rule.to_string()),
                _ => None,
            })
            .collect()
    }

    /// Every input batch has its own dictionaries; a window gathered from
    /// many pieces holds the values its rows use, not every piece's whole
    /// dictionary (which grew with the pieces and could overflow).
    #[test]
    fn a_gathered_window_holds_only_the_dictionary_values_its_rows_use() {
        use arrow::array::{DictionaryArray, ListArray, StringArray};
        use arrow::datatypes::{Int32Type, Schema};
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let item = Arc::new(Field::new("item", dict.clone(), true));
        let schema = Arc::new(Schema::new(vec![
            Field::new(col::TENANT, dict.clone(), false),
            Field::new("groups", DataType::List(item.clone()), true),
            Field::new("text", DataType::Utf8, true),
        ]));
        // 40 pieces, each with a dictionary of 200 values of which its rows use two.
        let pieces: Vec<RecordBatch> = (0..40)
            .map(|p| {
                let values: Vec<String> = (0..200).map(|v| format!("value-{p}-{v}")).collect();
                let values = Arc::new(StringArray::from(values));
                let keys = arrow::array::Int32Array::from(vec![0, 1, 0]);
                let tenant = DictionaryArray::<Int32Type>::try_new(keys.clone(), values.clone()).unwrap();
                let child = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
                let offsets = arrow::buffer::OffsetBuffer::from_lengths([1, 1, 1]);
                let groups = ListArray::new(item.clone(), offsets, Arc::new(child), None);
                let text = StringArray::from(vec![format!("a{p}"), format!("b{p}"), format!("c{p}")]);
                RecordBatch::try_new(schema.clone(), vec![Arc::new(tenant), Arc::new(groups), Arc::new(text)]).unwrap()
            })
            .collect();
        let mask = BooleanArray::from(vec![true, true, false]);
        let picks: Vec<(&RecordBatch, Option<BooleanArray>)> = pieces.iter().map(|p| (p, Some(mask.clone()))).collect();
        let mut blanks = Blanks::new(&schema, &[]);
        let window = blanks.gather(&picks, None);
        assert_eq!(window.len(), 1);
        let window = &window[0];
        assert_eq!(window.num_rows(), 80);
        let tenant = window.column(0).as_dictionary::<Int32Type>();
        assert!(tenant.values().len() <= 80, "{} dictionary values", tenant.values().len());
        let child = window.column(1).as_list::<i32>().values().as_dictionary::<Int32Type>().values().len();
        assert!(child <= 80, "{child} dictionary values in the list");
        // The values themselves, in order: piece p's rows 0 and 1.
        let texts = tenant.downcast_dict::<StringArray>().unwrap();
        let expected: Vec<String> = (0..40).flat_map(|p| [format!("value-{p}-0"), format!("value-{p}-1")]).collect();
        assert_eq!(texts.into_iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>(), expected);
        assert_eq!(window.column(2).as_string::<i32>().value(79), "b39");
    }

    /// A checkpoint written in format 3 (before blank columns) restores,
    /// with every column of its pieces taken as held.
    #[test]
    fn a_format_3_snapshot_restores_with_every_column_held() {
        let text = "severity = 50\nwindow = { kind = \"tumbling\", size = \"1h\" }\nentities = { ip = \"src_ip\" }\n\
                    sql = \"SELECT src_ip, count(*) AS n FROM alerts WHERE rule_id = 5716 GROUP BY src_ip\"\n";
        let rule = Rule::parse(text, Path::new("t.toml"), Limits::default()).unwrap();
        let make = || {
            let engine = Engine::new(&[]).unwrap();
            let compiled = crate::compile_all(&engine, vec![rule.clone()]).unwrap();
            Rules::new(engine, compiled, 0, usize::MAX)
        };
        let line = r#"{"timestamp":"2026-11-01T10:00:00.000+0000","rule":{"level":5,"id":"5716"},"manager":{"name":"acme"},"id":"1","data":{"srcip":"192.0.2.1"}}"#;
        let mut decoder = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).unwrap();
        let chunk = RawChunk::from_lines("t", line.as_bytes().to_vec(), 0, 0);
        let batch = decoder.decode(&chunk).unwrap().batch.unwrap();
        let (mut op, mut ctx, mut out) = (make(), Context::default(), Vec::new());
        op.process(AlertBatch::new(batch), &mut ctx, &mut out).unwrap();
        assert!(op.tenants.get("acme").unwrap().pieces[0].real.iter().any(|&r| !r), "this rule leaves columns blank");
        let now: Vec<TenantSnapshot> =
            sluice_operators::snapshot::decode(NAME, SNAPSHOT_VERSION, &op.snapshot().unwrap()).unwrap();
        let old: Vec<TenantSnapshot<PieceSnapshotV3>> = now
            .into_iter()
            .map(|t| TenantSnapshot {
                name: t.name,
                newest: t.newest,
                rules: t.rules,
                pieces: t
                    .pieces
                    .into_iter()
                    .map(|p| PieceSnapshotV3 { min_t: p.min_t, max_t: p.max_t, ipc: p.ipc })
                    .collect(),
            })
            .collect();
        let mut restored = make();
        restored.restore(&sluice_operators::snapshot::encode(NAME, 3, &old).unwrap()).unwrap();
        assert!(restored.tenants.get("acme").unwrap().pieces[0].real.iter().all(|&r| r));
        let mut found = Vec::new();
        restored.on_end(&mut ctx, &mut found).unwrap();
        assert!(found.iter().any(|o| matches!(o, Output::Detection(_))), "the restored window still fires");
    }

    /// A checkpoint taken before a column existed (the Windows columns, a
    /// `[decode.fields]` column added since) restores: the column is null
    /// and not held, so a rule that reads it skips those rows, and the
    /// others still fire. A piece without a column that cannot be null is
    /// refused, naming it.
    #[test]
    fn a_piece_checkpointed_without_a_column_restores_with_it_not_held() {
        let rule = |name: &str, filter: &str| {
            let text = format!(
                "severity = 50\nwindow = {{ kind = \"tumbling\", size = \"1h\" }}\nentities = {{ ip = \"src_ip\" }}\n\
                 sql = \"SELECT src_ip, count(*) AS n FROM alerts WHERE {filter} GROUP BY src_ip\"\n"
            );
            Rule::parse(&text, Path::new(&format!("{name}.toml")), Limits::default()).unwrap()
        };
        let rules = vec![rule("by_rule", "rule_id = 5716"), rule("by_event", "win_event_id IS NULL")];
        let make = || {
            let engine = Engine::new(&[]).unwrap();
            let compiled = crate::compile_all(&engine, rules.clone()).unwrap();
            Rules::new(engine, compiled, 0, usize::MAX)
        };
        let line = r#"{"timestamp":"2026-11-01T10:00:00.000+0000","rule":{"level":5,"id":"5716"},"manager":{"name":"acme"},"id":"1","data":{"srcip":"192.0.2.1"}}"#;
        let mut decoder = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).unwrap();
        let batch = decoder.decode(&RawChunk::from_lines("t", line.as_bytes().to_vec(), 0, 0)).unwrap().batch.unwrap();
        let (mut op, mut ctx) = (make(), Context::default());
        op.process(AlertBatch::new(batch), &mut ctx, &mut Vec::new()).unwrap();
        let now: Vec<TenantSnapshot> =
            sluice_operators::snapshot::decode(NAME, SNAPSHOT_VERSION, &op.snapshot().unwrap()).unwrap();
        // The same snapshot in an older format (`version`: 4, before the
        // Windows columns, or 5, before columns held in part), each piece's
        // rows and held columns changed by `change`.
        let rewrite = |version: u32, change: &dyn Fn(RecordBatch, Vec<bool>) -> (RecordBatch, Vec<bool>)| {
            let tenants: Vec<TenantSnapshot<PieceSnapshotV4>> = now
                .iter()
                .map(|t| TenantSnapshot {
                    name: t.name.clone(),
                    newest: t.newest,
                    rules: t.rules.clone(),
                    pieces: t
                        .pieces
                        .iter()
                        .map(|p| {
                            let (rows, real) = change(ipc_batch(&p.ipc).unwrap(), p.real.clone());
                            PieceSnapshotV4 { min_t: p.min_t, max_t: p.max_t, ipc: ipc_bytes(&rows).unwrap(), real }
                        })
                        .collect(),
                })
                .collect();
            sluice_operators::snapshot::encode(NAME, version, &tenants).unwrap()
        };
        let without = |drop: &[&str]| {
            rewrite(4, &|rows, real| {
                let keep: Vec<usize> = (0..rows.num_columns())
                    .filter(|&i| !drop.contains(&rows.schema().field(i).name().as_str()))
                    .collect();
                (rows.project(&keep).unwrap(), keep.iter().map(|&i| real[i]).collect())
            })
        };
        let fired = |state: &[u8]| {
            let mut restored = make();
            restored.restore(state).unwrap();
            fired_at_end(&mut restored)
        };
        assert_eq!(fired(&op.snapshot().unwrap()), ["by_rule", "by_event"]);
        let old = without(&[col::WIN_EVENT_ID, col::WIN_CHANNEL]);
        let mut restored = make();
        restored.restore(&old).unwrap();
        let piece = &restored.tenants.get("acme").unwrap().pieces[0];
        assert_eq!(piece.rows.schema(), restored.table_schema);
        let at = restored.table_schema.index_of(col::WIN_EVENT_ID).unwrap();
        assert!(!piece.real[at] && piece.rows.column(at).is_null(0));
        assert_eq!(fired(&old), ["by_rule"], "the rule on the missing column reads none of its rows");
        let err = make().restore(&without(&[col::ALERT_ID])).unwrap_err().to_string();
        assert!(err.contains("alert_id"), "{err}");
        // A column of the same name that was plain text (a `[decode.fields]`
        // column before it was built in) is kept, dictionary-encoded.
        let plain = rewrite(4, &|rows, real| {
            let at = rows.schema().index_of(col::WIN_EVENT_ID).unwrap();
            let mut fields: Vec<Field> = rows.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[at] = Field::new(col::WIN_EVENT_ID, DataType::Utf8, true);
            let mut columns = rows.columns().to_vec();
            columns[at] = arrow::compute::cast(&columns[at], &DataType::Utf8).unwrap();
            (RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns).unwrap(), real)
        });
        assert_eq!(fired(&plain), ["by_rule", "by_event"]);
        // Format 5 as it was written before columns held in part.
        assert_eq!(fired(&rewrite(5, &|rows, real| (rows, real))), ["by_rule", "by_event"]);
    }

    /// The raw JSON is held only for the rows of the rules that read it;
    /// the other rows' is left empty, and no rule reads it there: not a
    /// rule loaded since, and not after a checkpoint.
    #[test]
    fn a_wide_column_is_held_only_for_the_rows_of_the_rules_that_read_it() {
        let rule = |name: &str, sql: &str| {
            let text = format!(
                "severity = 50\nwindow = {{ kind = \"tumbling\", size = \"1h\" }}\nentities = {{ ip = \"src_ip\" }}\nsql = \"{sql}\"\n"
            );
            Rule::parse(&text, Path::new(&format!("{name}.toml")), Limits::default()).unwrap()
        };
        let reads_raw = rule(
            "reads_raw",
            "SELECT src_ip, count(*) AS n FROM alerts WHERE rule_id = 5716 AND json_get_str(raw, 'data', 'srcip') IS NOT NULL GROUP BY src_ip",
        );
        let other = rule("other", "SELECT src_ip, count(*) AS n FROM alerts WHERE rule_id = 5715 GROUP BY src_ip");
        // Would count a blank as a raw record.
        let every_raw = rule(
            "every_raw",
            "SELECT src_ip, count(*) AS n FROM alerts WHERE length(raw) >= 0 GROUP BY src_ip HAVING count(*) >= 2",
        );
        let make = |rules: Vec<Rule>| {
            let engine = Engine::new(&[]).unwrap();
            let compiled = crate::compile_all(&engine, rules).unwrap();
            Rules::new(engine, compiled, 0, usize::MAX)
        };
        let line = |id: u32| {
            format!(
                r#"{{"timestamp":"2026-11-01T10:00:00.000+0000","rule":{{"level":5,"id":"{id}"}},"manager":{{"name":"acme"}},"id":"{id}","data":{{"srcip":"192.0.2.1"}}}}"#
            )
        };
        let input = format!("{}\n{}", line(5716), line(5715));
        let mut decoder = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).unwrap();
        let batch = decoder.decode(&RawChunk::from_lines("t", input.into_bytes(), 0, 0)).unwrap().batch.unwrap();
        let mut op = make(vec![reads_raw.clone(), other.clone()]);
        op.process(AlertBatch::new(batch), &mut Context::default(), &mut Vec::new()).unwrap();
        let piece = &op.tenants.get("acme").unwrap().pieces[0];
        let raw = op.table_schema.index_of(col::RAW).unwrap();
        assert_eq!(piece.rows.num_rows(), 2);
        assert!(!piece.real[raw]);
        assert_eq!(piece.some, [(raw, BooleanArray::from(vec![true, false]))]);
        let text = piece.rows.column(raw).as_string::<i32>();
        assert!(text.value(0).contains("5716") && text.value(1).is_empty() && text.null_count() == 0);
        // After a checkpoint: the same rows held, the same detections.
        let state = op.snapshot().unwrap();
        let mut restored = make(vec![reads_raw.clone(), other.clone()]);
        restored.restore(&state).unwrap();
        assert_eq!(restored.tenants.get("acme").unwrap().pieces[0].some, piece.some);
        assert_eq!(fired_at_end(&mut restored), ["reads_raw", "other"]);
        // A rule loaded since reads the raw JSON of the held rows only.
        let mut reloaded = make(vec![reads_raw.clone(), other.clone()]);
        reloaded.restore(&state).unwrap();
        let compiled = crate::compile_all(&reloaded.engine, vec![reads_raw, other, every_raw]).unwrap();
        reloaded.replace(compiled);
        assert_eq!(fired_at_end(&mut reloaded), ["reads_raw", "other"]);
    }

    /// A column held for some rows stays so only where it is carried over
    /// from the checkpointed piece; one replaced by nulls is held for none.
    #[test]
    fn conform_keeps_rows_held_in_part_only_for_columns_it_carries() {
        use arrow::array::{Int32Array, StringArray};
        use arrow::datatypes::Schema;
        let now = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        let held = || vec![("a".to_string(), BooleanArray::from(vec![true, false]))];
        let text = RecordBatch::try_new(now.clone(), vec![Arc::new(StringArray::from(vec![Some("x"), None]))]).unwrap();
        let (_, real, some) = conform(text, &[false], held(), &now).unwrap();
        assert_eq!((real.to_vec(), some.len()), (vec![false], 1));
        let ints = Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true)]));
        let ints = RecordBatch::try_new(ints, vec![Arc::new(Int32Array::from(vec![1, 2]))]).unwrap();
        let (rows, real, some) = conform(ints, &[false], held(), &now).unwrap();
        assert_eq!((real.to_vec(), some.len(), rows.column(0).null_count()), (vec![false], 0, 2));
    }
}
