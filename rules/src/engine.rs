//! The SQL engine: DataFusion over one tenant's window of alerts.
//!
//! Each rule's SQL is parsed, checked and optimized once, against the table
//! `alerts` (every typed column of the alert schema, `raw` as text for the
//! JSON functions of `datafusion-functions-json`). Evaluating a window swaps
//! that table's rows and runs the cached plan; no SQL is parsed per window.
//! One engine serves one shard, so evaluation is single-threaded
//! (`target_partitions = 1`) and its output order is deterministic.

use std::sync::{Arc, Mutex};

use parking_lot::RwLock;

use arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, BooleanBufferBuilder, NullArray, RecordBatch, StringArray,
    UInt32Array,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::Operator;
use datafusion::logical_expr::utils::{conjunction, disjunction};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, TableScan, TableType};
use datafusion::physical_expr::expressions::BinaryExpr;
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::memory::{LazyBatchGenerator, LazyMemoryExec};
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use sluice_operators::cluster::EntityKind;
use sluice_operators::schema::{alert_schema, col};

use crate::error::RuleError;
use crate::rule::Rule;

/// The table a rule reads: the rows of the window being evaluated. Its scan
/// reads them when the plan runs, not when it is planned, so that a rule's
/// physical plan is made once and run for every window.
#[derive(Debug)]
struct WindowTable {
    schema: SchemaRef,
    rows: Arc<Mutex<Vec<RecordBatch>>>,
}

#[async_trait::async_trait]
impl TableProvider for WindowTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let rows: Arc<RwLock<dyn LazyBatchGenerator>> =
            Arc::new(RwLock::new(WindowRows { rows: self.rows.clone(), next: 0 }));
        Ok(Arc::new(LazyMemoryExec::try_new(self.schema.clone(), vec![rows])?.with_projection(projection.cloned())))
    }
}

/// The window's rows, one batch at a time, from the first each run.
#[derive(Debug)]
struct WindowRows {
    rows: Arc<Mutex<Vec<RecordBatch>>>,
    next: usize,
}

impl std::fmt::Display for WindowRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "window rows")
    }
}

impl LazyBatchGenerator for WindowRows {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn generate_next_batch(&mut self) -> datafusion::error::Result<Option<RecordBatch>> {
        let batch = self.rows.lock().expect("window rows").get(self.next).cloned();
        self.next += 1;
        Ok(batch)
    }

    fn reset_state(&self) -> Arc<RwLock<dyn LazyBatchGenerator>> {
        Arc::new(RwLock::new(WindowRows { rows: self.rows.clone(), next: 0 }))
    }
}

/// A rule whose SQL is planned, with where its special columns are.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub rule: Rule,
    plan: LogicalPlan,
    /// The rows the query can read at all (see [`prefilter`]): tested once
    /// per alert as it arrives, so that windows hold only those rows.
    pub prefilter: Option<Arc<dyn PhysicalExpr>>,
    /// The prefilter as SQL-like text (`rules explain`).
    pub prefilter_text: Option<String>,
    /// Tests the rows of a window must pass, enough of them, for the query
    /// to return anything at all (see [`guards`]): a window that falls
    /// short is not evaluated. Empty when the plan gives none.
    pub guards: Vec<Guard>,
    /// When there are guards: each scan's own test (`None`: the scan reads
    /// every row), so that the prefilter is their union and each test is
    /// evaluated once per alert.
    scan_tests: Vec<Option<Arc<dyn PhysicalExpr>>>,
    /// The `alerts` columns the prefilter and the guards' tests read
    /// (indices, sorted): the others may be blanks when they run.
    pub test_reads: Vec<usize>,
    /// The `alerts` schema with every column but those of `test_reads`
    /// typed `Null` (see [`Compiled::test_view`]).
    test_schema: SchemaRef,
    /// The `alerts` columns the query reads (indices; `None`: all of
    /// them). The others are never copied into its windows.
    pub reads: Option<Vec<usize>>,
    /// The physical plan, made when the rule is loaded (so that a plan
    /// DataFusion cannot run is refused then) and reset for each window.
    physical: Arc<dyn ExecutionPlan>,
    /// Entity kind → result column index.
    pub entity_columns: Vec<(EntityKind, usize)>,
    pub alert_ids_column: Option<usize>,
    pub severity_column: Option<usize>,
    pub summary_column: Option<usize>,
}

/// A necessary condition of a rule's result: at least `min_rows` of the
/// window's rows pass scan `scan`'s test (an index into the rule's scans).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guard {
    pub scan: usize,
    pub min_rows: usize,
    /// The test as SQL-like text (`rules explain`).
    pub text: String,
}

/// DataFusion, set up for rules.
pub struct Engine {
    ctx: SessionContext,
    runtime: tokio::runtime::Runtime,
    table: Arc<WindowTable>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("schema", &self.table.schema.fields().len()).finish_non_exhaustive()
    }
}

/// The `alerts` table's schema: the alert schema with `raw` as text.
pub fn table_schema(extra: &[String]) -> SchemaRef {
    let schema = alert_schema(extra);
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| if f.name() == col::RAW { Field::new(col::RAW, DataType::Utf8, false) } else { f.as_ref().clone() })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A decoded alert batch as rows of the `alerts` table.
pub fn to_table_rows(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, RuleError> {
    let state = |e: arrow::error::ArrowError| RuleError::State(format!("alert batch → rules table: {e}"));
    let columns: Vec<ArrayRef> = batch
        .schema()
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match (f.name() == col::RAW, c.as_binary_opt::<i32>()) {
            (true, Some(raw)) => raw_as_text(raw),
            (true, None) => cast(c, &DataType::Utf8),
            (false, _) => Ok(c.clone()),
        })
        .collect::<Result<_, _>>()
        .map_err(state)?;
    RecordBatch::try_new(schema.clone(), columns).map_err(state)
}

/// The raw records as text without copying them (a cast copies the whole
/// column, about a kilobyte per alert): the same bytes, checked to be
/// UTF-8. Only the bytes of these rows are checked when the array is a
/// slice of a larger one.
fn raw_as_text(raw: &BinaryArray) -> Result<ArrayRef, arrow::error::ArrowError> {
    let offsets = raw.offsets();
    let first = offsets[0];
    let len = (offsets[offsets.len() - 1] - first) as usize;
    let values = raw.values().slice_with_length(first as usize, len);
    let rebased = OffsetBuffer::new(offsets.iter().map(|&o| o - first).collect());
    Ok(Arc::new(StringArray::try_new(rebased, values, raw.nulls().cloned())?))
}

fn message(e: &DataFusionError) -> String {
    e.find_root().strip_backtrace().trim().to_string()
}

impl Engine {
    pub fn new(extra_columns: &[String]) -> Result<Engine, RuleError> {
        let mut config =
            SessionConfig::new().with_target_partitions(1).with_batch_size(8192).with_information_schema(false);
        // A physical plan is reused for every window (see `evaluate`), which
        // DataFusion supports only without dynamic filters.
        config.options_mut().optimizer.enable_dynamic_filter_pushdown = false;
        let mut ctx = SessionContext::new_with_config(config);
        // These passes move "cheap" expressions below filters, and
        // `datafusion-functions-json` marks its functions cheap: every
        // alert's raw JSON would be parsed before the rule's filter drops
        // it (for most rules, nearly all of them).
        for rule in ["extract_leaf_expressions", "push_down_leaf_projections"] {
            ctx.remove_optimizer_rule(rule);
        }
        datafusion_functions_json::register_all(&mut ctx)
            .map_err(|e| RuleError::State(format!("JSON functions: {}", message(&e))))?;
        let table =
            Arc::new(WindowTable { schema: table_schema(extra_columns), rows: Arc::new(Mutex::new(Vec::new())) });
        ctx.register_table("alerts", table.clone())
            .map_err(|e| RuleError::State(format!("alerts table: {}", message(&e))))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| RuleError::State(format!("rules runtime: {e}")))?;
        Ok(Engine { ctx, runtime, table })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.table.schema
    }

    /// Plans a rule's SQL and checks its result columns; every problem is
    /// reported with the rule file.
    pub fn compile(&self, rule: Rule) -> Result<Compiled, RuleError> {
        let invalid = |problems: Vec<String>| RuleError::Invalid { origin: rule.origin.clone(), problems };
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let plan = self
            .runtime
            .block_on(async {
                let df = self.ctx.sql_with_options(&rule.sql, options).await?;
                df.into_optimized_plan().and_then(crate::patterns::compile_patterns)
            })
            .map_err(|e| invalid(vec![format!("sql: {}", message(&e))]))?;
        let schema = plan.schema().as_arrow().clone();
        let find = |name: &str| schema.index_of(name).ok();
        let mut problems = Vec::new();
        let mut entity_columns = Vec::new();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        for (kind, column) in &rule.entities {
            match find(column) {
                Some(i) if matches!(schema.field(i).data_type(), DataType::List(_) | DataType::Struct(_)) => problems
                    .push(format!("entities.{} = {column:?}: that result column is not a single value", kind.as_str())),
                Some(i) => entity_columns.push((*kind, i)),
                None => problems.push(format!(
                    "entities.{} = {column:?}: the query returns no such column (it returns {})",
                    kind.as_str(),
                    names.join(", ")
                )),
            }
        }
        let alert_ids_column = find("alert_ids");
        if let Some(i) = alert_ids_column
            && !matches!(schema.field(i).data_type(), DataType::List(_) | DataType::LargeList(_))
        {
            problems.push("result column alert_ids must be a list (array_agg(alert_id))".into());
        }
        let severity_column = find("severity");
        if let Some(i) = severity_column
            && !schema.field(i).data_type().is_integer()
        {
            problems.push("result column severity must be an integer 0–100".into());
        }
        let summary_column = find("summary");
        if !problems.is_empty() {
            return Err(invalid(problems));
        }
        let scans = scan_tests(&plan);
        let prefilter_error = |e: DataFusionError| invalid(vec![format!("prefilter: {}", message(&e))]);
        let table = DFSchema::try_from(self.table.schema.as_ref().clone()).map_err(prefilter_error)?;
        let physical_test = |expr: Expr| self.ctx.create_physical_expr(expr, &table).map_err(prefilter_error);
        let test = scans.as_ref().and_then(|s| prefilter(s));
        let prefilter_text = test.as_ref().map(ToString::to_string);
        let prefilter = test.map(physical_test).transpose()?;
        let (mut guards, mut scan_tests) = (Vec::new(), Vec::new());
        if let Some(scans) = &scans {
            for (scan, min_rows) in required(&plan) {
                let Some(i) = scans.iter().position(|s| std::ptr::eq(s.scan, scan)) else { continue };
                if let Some(test) = &scans[i].test
                    && !guards.iter().any(|g: &Guard| g.scan == i && g.min_rows >= min_rows)
                {
                    guards.retain(|g: &Guard| g.scan != i);
                    guards.push(Guard { scan: i, min_rows, text: test.to_string() });
                }
            }
            // Guards only save work: a test DataFusion cannot plan drops
            // them, never the rule.
            match scans.iter().map(|s| s.test.clone().map(physical_test).transpose()).collect::<Result<_, _>>() {
                Ok(tests) if !guards.is_empty() => scan_tests = tests,
                _ => guards.clear(),
            }
        }
        let mut test_reads: Vec<usize> = prefilter
            .iter()
            .chain(scan_tests.iter().flatten())
            .flat_map(datafusion::physical_expr::utils::collect_columns)
            .map(|c| c.index())
            .collect();
        test_reads.sort_unstable();
        test_reads.dedup();
        let test_schema = Arc::new(Schema::new(
            self.table
                .schema
                .fields()
                .iter()
                .enumerate()
                .map(|(i, f)| match test_reads.binary_search(&i) {
                    Ok(_) => f.clone(),
                    Err(_) => Arc::new(Field::new(f.name(), DataType::Null, true)),
                })
                .collect::<Vec<_>>(),
        ));
        let reads = columns_read(&plan, &self.table.schema);
        let physical = self
            .runtime
            .block_on(self.ctx.state().create_physical_plan(&plan))
            .map_err(|e| invalid(vec![format!("sql: {}", message(&e))]))?;
        Ok(Compiled {
            rule,
            plan,
            reads,
            prefilter,
            prefilter_text,
            guards,
            scan_tests,
            test_reads,
            test_schema,
            physical,
            entity_columns,
            alert_ids_column,
            severity_column,
            summary_column,
        })
    }

    /// Runs a compiled rule over one window's rows (`alerts` table rows).
    /// The rule's physical plan is made once; each run starts from a copy
    /// with every operator's state reset (DataFusion's `reset_plan_states`).
    pub fn evaluate(&self, rule: &Compiled, rows: Vec<RecordBatch>) -> Result<Vec<RecordBatch>, RuleError> {
        *self.table.rows.lock().expect("window table") = rows;
        let result = self.runtime.block_on(async {
            let fresh = reset_plan_states(rule.physical.clone())?;
            datafusion::physical_plan::collect(fresh, self.ctx.task_ctx()).await
        });
        self.table.rows.lock().expect("window table").clear();
        result.map_err(|e| RuleError::Eval { rule: rule.rule.name.clone(), message: message(&e) })
    }

    /// The rule's logical and physical plans, as DataFusion prints them.
    pub fn explain(&self, rule: &Compiled) -> Result<String, RuleError> {
        Ok(format!(
            "logical plan:\n{}\n\nphysical plan:\n{}",
            rule.plan.display_indent(),
            datafusion::physical_plan::displayable(rule.physical.as_ref()).indent(true)
        ))
    }
}

/// One scan of `alerts` in a rule's optimized plan, and the test a row
/// must pass to be read by it (`None`: it reads every row, or its test is
/// not a plain row-by-row one).
#[derive(Debug)]
struct ScanTest<'p> {
    scan: &'p TableScan,
    test: Option<Expr>,
}

/// Every scan of `alerts` in the plan with its test: each scan sits right
/// under a filter (or has its filters pushed into it). `None` when a scan
/// sits in a subquery expression, where the walk does not reach. Scans of
/// other tables (`generate_series`, say) read no alerts and are left out.
fn scan_tests(plan: &LogicalPlan) -> Option<Vec<ScanTest<'_>>> {
    fn walk<'p>(plan: &'p LogicalPlan, out: &mut Vec<ScanTest<'p>>) {
        match plan {
            LogicalPlan::Filter(f) => match scan_under(&f.input) {
                Some((_, scan)) if !of_alerts(scan) => {}
                Some((projections, scan)) => {
                    // The predicate may name columns the projections between
                    // it and the scan computed (common subexpressions):
                    // put their expressions back.
                    let mut predicate = Some(f.predicate.clone());
                    for p in projections {
                        predicate = predicate.and_then(|e| inline(e, p));
                    }
                    let all = scan.filters.iter().cloned().map(Some).chain([predicate]);
                    out.push(ScanTest { scan, test: all.collect::<Option<Vec<_>>>().and_then(conjunction) });
                }
                None => walk(&f.input, out),
            },
            LogicalPlan::TableScan(scan) if of_alerts(scan) => {
                out.push(ScanTest { scan, test: conjunction(scan.filters.iter().cloned()) })
            }
            _ => plan.inputs().into_iter().for_each(|p| walk(p, out)),
        }
    }
    /// A scan right under `plan`, through projections only.
    fn scan_under(plan: &LogicalPlan) -> Option<(Vec<&Projection>, &TableScan)> {
        let mut projections = Vec::new();
        let mut at = plan;
        loop {
            match at {
                LogicalPlan::TableScan(scan) => return Some((projections, scan)),
                LogicalPlan::Projection(p) => {
                    projections.push(p);
                    at = p.input.as_ref();
                }
                _ => return None,
            }
        }
    }
    /// `e` with the columns `p` computes replaced by their expressions.
    fn inline(e: Expr, p: &Projection) -> Option<Expr> {
        let computed: Vec<(String, Expr)> = p
            .schema
            .fields()
            .iter()
            .zip(&p.expr)
            .map(|(field, expr)| (field.name().clone(), expr.clone().unalias()))
            .collect();
        e.transform(|e| match &e {
            Expr::Column(c) => match computed.iter().find(|(name, _)| *name == c.name) {
                Some((_, expr)) => Ok(Transformed::yes(expr.clone())),
                None => Ok(Transformed::no(e)),
            },
            _ => Ok(Transformed::no(e)),
        })
        .ok()
        .map(|t| t.data)
    }
    let mut found = Vec::new();
    walk(plan, &mut found);
    // Scans reached through subquery expressions are not walked above.
    let mut scans = 0;
    plan.apply_with_subqueries(|node| {
        scans += usize::from(matches!(node, LogicalPlan::TableScan(scan) if of_alerts(scan)));
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    if scans != found.len() || scans == 0 {
        return None;
    }
    for s in &mut found {
        s.test = s.test.take().filter(|e| !e.is_volatile() && !contains_subquery(e)).and_then(|e| {
            // Column references lose the scans' aliases: the test runs on the table.
            e.transform(|e| match e {
                Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
                e => Ok(Transformed::no(e)),
            })
            .ok()
            .map(|t| t.data)
        });
    }
    Some(found)
}

/// A scan of the `alerts` table (not of a table function).
fn of_alerts(scan: &TableScan) -> bool {
    scan.table_name.table() == "alerts"
}

/// The condition a row must meet to be read by the query at all: a row
/// that passes none of the scans' tests can change nothing in the result.
/// `None` when some scan reads every row.
fn prefilter(scans: &[ScanTest<'_>]) -> Option<Expr> {
    let tests: Vec<Expr> = scans.iter().map(|s| s.test.clone()).collect::<Option<_>>()?;
    disjunction(tests)
}

/// The scans the result needs rows of, each with how many at least: when
/// fewer of a window's rows pass such a scan's test, the query returns no
/// row. An inner join needs both sides, an outer join its preserved side, a
/// grouped aggregate its input (a global one returns a row even on none),
/// and `HAVING count(*) >= n` over one scan needs `n` of its rows.
/// Anything else (a union, say) needs nothing, which is always safe.
fn required(plan: &LogicalPlan) -> Vec<(&TableScan, usize)> {
    use datafusion::logical_expr::{Distinct, JoinType};
    match plan {
        LogicalPlan::TableScan(scan) => vec![(scan, 1)],
        LogicalPlan::Filter(f) => {
            let mut needs = required(&f.input);
            if let LogicalPlan::Aggregate(a) = f.input.as_ref()
                && let Some(scan) = single_scan(&a.input)
            {
                let at_least = min_count(&f.predicate, &count_columns(a));
                needs.iter_mut().filter(|(s, _)| std::ptr::eq(*s, scan)).for_each(|(_, n)| *n = (*n).max(at_least));
            }
            needs
        }
        LogicalPlan::Aggregate(a) => {
            let grouped = !a.group_expr.is_empty() && !a.group_expr.iter().any(|e| matches!(e, Expr::GroupingSet(_)));
            if grouped { required(&a.input) } else { Vec::new() }
        }
        LogicalPlan::Join(j) => match j.join_type {
            JoinType::Inner => required(&j.left).into_iter().chain(required(&j.right)).collect(),
            JoinType::Left | JoinType::LeftSemi | JoinType::LeftAnti | JoinType::LeftMark => required(&j.left),
            JoinType::Right | JoinType::RightSemi | JoinType::RightAnti | JoinType::RightMark => required(&j.right),
            JoinType::Full => Vec::new(),
        },
        LogicalPlan::Projection(p) => required(&p.input),
        LogicalPlan::Sort(s) => required(&s.input),
        LogicalPlan::Limit(l) => required(&l.input),
        LogicalPlan::SubqueryAlias(a) => required(&a.input),
        LogicalPlan::Window(w) => required(&w.input),
        LogicalPlan::Distinct(Distinct::All(input)) => required(input),
        LogicalPlan::Distinct(Distinct::On(d)) => required(&d.input),
        _ => Vec::new(),
    }
}

/// The one scan whose rows `plan` passes on, through filters and
/// projections only.
fn single_scan(plan: &LogicalPlan) -> Option<&TableScan> {
    match plan {
        LogicalPlan::TableScan(scan) => Some(scan),
        LogicalPlan::Filter(f) => single_scan(&f.input),
        LogicalPlan::Projection(p) => single_scan(&p.input),
        LogicalPlan::SubqueryAlias(a) => single_scan(&a.input),
        _ => None,
    }
}

/// The output columns of an aggregate that are at most its number of
/// input rows: `count(…)` without a `FILTER`, `DISTINCT` or not.
fn count_columns(a: &datafusion::logical_expr::Aggregate) -> Vec<Column> {
    let groups = a.group_expr.len();
    a.aggr_expr
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            let e = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                e => e,
            };
            matches!(e, Expr::AggregateFunction(f) if f.func.name() == "count" && f.params.filter.is_none())
        })
        .map(|(i, _)| Column::from(a.schema.qualified_field(groups + i)))
        .collect()
}

/// The least number of input rows a group must have to pass `predicate`,
/// from its `count(…) >= n` style terms (`counts`: the columns holding
/// counts); 1 when it says nothing of it.
fn min_count(predicate: &Expr, counts: &[Column]) -> usize {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let Expr::BinaryExpr(BinaryExpr { left, op, right }) = predicate else { return 1 };
    let bound = |column: &Expr, value: &Expr| -> Option<i64> {
        let Expr::Column(c) = column else { return None };
        let Expr::Literal(v, _) = value else { return None };
        if !counts.contains(c) {
            return None;
        }
        match v.cast_to(&DataType::Int64).ok()? {
            datafusion::common::ScalarValue::Int64(Some(n)) => Some(n),
            _ => None,
        }
    };
    let at_least = |n: Option<i64>, plus: i64| n.map_or(1, |n| n.saturating_add(plus).max(1) as usize);
    match op {
        Operator::And => min_count(left, counts).max(min_count(right, counts)),
        Operator::Or => min_count(left, counts).min(min_count(right, counts)),
        Operator::GtEq | Operator::Eq => at_least(bound(left, right), 0),
        Operator::Gt => at_least(bound(left, right), 1),
        // `n <= count(*)`, `n < count(*)`
        Operator::LtEq => at_least(bound(right, left), 0),
        Operator::Lt => at_least(bound(right, left), 1),
        _ => 1,
    }
}

/// The columns of `alerts` that the optimized plan's scans read, their
/// pushed-down filters included; `None` when a scan reads every column or a
/// name does not resolve.
fn columns_read(plan: &LogicalPlan, table: &Schema) -> Option<Vec<usize>> {
    let mut read = std::collections::BTreeSet::new();
    let mut all = false;
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            match &scan.projection {
                Some(columns) => read.extend(columns.iter().copied()),
                None => all = true,
            }
            for column in scan.filters.iter().flat_map(Expr::column_refs) {
                match table.index_of(&column.name) {
                    Ok(i) => _ = read.insert(i),
                    Err(_) => all = true,
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    (!all).then(|| read.into_iter().collect())
}

fn contains_subquery(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::ScalarSubquery(_) | Expr::InSubquery(_) | Expr::Exists(_)))).unwrap_or(true)
}

impl Compiled {
    /// Whether the rule's SQL reads column `i` of the `alerts` table.
    pub fn reads_column(&self, i: usize) -> bool {
        self.reads.as_ref().is_none_or(|columns| columns.contains(&i))
    }

    /// `rows` (`alerts` table rows) with only the columns the rule's tests
    /// read: the others become `Null` columns, which hold no data. A test
    /// may copy the rows it passes on to its next term (DataFusion's `AND`
    /// does), and every column it copies costs, the raw JSON most.
    pub fn test_view(&self, rows: &RecordBatch) -> RecordBatch {
        let len = rows.num_rows();
        let columns = (0..rows.num_columns())
            .map(|i| match self.test_reads.binary_search(&i) {
                Ok(_) => rows.column(i).clone(),
                Err(_) => Arc::new(NullArray::new(len)) as ArrayRef,
            })
            .collect();
        RecordBatch::try_new(self.test_schema.clone(), columns).expect("the table's columns, or nulls")
    }
}

/// Which rows of a batch of `alerts` table rows a compiled rule can read
/// (`None`: all; nulls: not), and per guard which rows pass its test. Only
/// the columns of [`Compiled::test_reads`] need to hold the rows' values.
pub fn prefilter_mask(
    rule: &Compiled,
    rows: &RecordBatch,
) -> Result<(Option<BooleanArray>, Vec<BooleanArray>), RuleError> {
    let fail = |e: DataFusionError| RuleError::Eval { rule: rule.rule.name.clone(), message: message(&e) };
    let test = |expr: &Arc<dyn PhysicalExpr>| passing(expr, rows).map_err(fail);
    if rule.guards.is_empty() {
        return Ok((rule.prefilter.as_ref().map(test).transpose()?, Vec::new()));
    }
    // Each scan's test once: the prefilter is their union.
    let scans: Vec<Option<BooleanArray>> =
        rule.scan_tests.iter().map(|t| t.as_ref().map(test).transpose()).collect::<Result<_, _>>()?;
    let guards = rule.guards.iter().map(|g| scans[g.scan].clone().expect("a guard's scan has a test")).collect();
    let mask = match rule.prefilter {
        Some(_) => {
            let mut masks = scans.into_iter().map(|m| m.expect("with a prefilter every scan has a test"));
            let first = masks.next().expect("a prefilter has a scan");
            Some(
                masks
                    .try_fold(first, |a, b| arrow::compute::or(&a, &b))
                    .map_err(|e| RuleError::Eval { rule: rule.rule.name.clone(), message: e.to_string() })?,
            )
        }
        None => None,
    };
    Ok((mask, guards))
}

/// The rows of `rows` for which `expr` is true (null counts as false, as
/// in a `WHERE`). The terms of an `AND` (an `OR`) run one after another;
/// once few rows are left undecided, the next terms run on a copy of only
/// those. DataFusion's own `AND` makes that copy for its second term, and
/// in a chain of them again at every level from the whole batch.
fn passing(expr: &Arc<dyn PhysicalExpr>, rows: &RecordBatch) -> Result<BooleanArray, DataFusionError> {
    let len = rows.num_rows();
    let Some((op, terms)) = chain(expr) else {
        let value = expr.evaluate(rows)?.into_array(len)?;
        let mask = value
            .as_boolean_opt()
            .ok_or_else(|| DataFusionError::Execution(format!("{expr} is not a boolean test")))?;
        return Ok(if mask.null_count() > 0 { arrow::compute::prep_null_mask_filter(mask) } else { mask.clone() });
    };
    let all = op == Operator::And;
    // The rows still undecided: a batch of some of `rows` (`at`: where
    // they are in `rows`; `None`: all, in place), and which of those
    // (`open`; `None`: all of them).
    let (mut batch, mut at, mut open): (RecordBatch, Option<UInt32Array>, Option<BooleanArray>) =
        (rows.clone(), None, None);
    let mut decided = BooleanBufferBuilder::new(len);
    decided.append_n(len, false);
    let place = |at: &Option<UInt32Array>, i: usize| at.as_ref().map_or(i, |at| at.value(i) as usize);
    for (k, term) in terms.iter().enumerate() {
        let pass = passing(term, &batch)?;
        // The rows still open that pass this term. `AND`: the others are
        // decided (false); `OR`: these are (true).
        let newly = match &open {
            Some(open) => arrow::compute::and(open, &pass)?,
            None => pass,
        };
        let still = if all {
            newly
        } else {
            newly.values().set_indices().for_each(|i| decided.set_bit(place(&at, i), true));
            match &open {
                Some(open) => arrow::compute::and_not(open, &newly)?,
                None => arrow::compute::not(&newly)?,
            }
        };
        let n = still.true_count();
        if n == 0 {
            return Ok(BooleanArray::new(decided.finish(), None));
        }
        // Copy the undecided rows for the next terms only when few are
        // left (as DataFusion's `AND` does): a copy costs more than testing
        // rows already decided.
        let last = k + 1 == terms.len();
        if n * 5 <= batch.num_rows() && !last {
            batch = narrow(&batch, &still, &terms[k + 1..])?;
            let here = at.unwrap_or_else(|| UInt32Array::from_iter_values(0..len as u32));
            at = Some(arrow::compute::filter(&here, &still)?.as_primitive().clone());
            open = None;
        } else {
            open = (n < batch.num_rows()).then_some(still);
        }
    }
    // `AND`: what is still undecided passed every term.
    if all {
        match (&open, &at) {
            (None, None) => return Ok(BooleanArray::from(vec![true; len])),
            (Some(open), _) => open.values().set_indices().for_each(|i| decided.set_bit(place(&at, i), true)),
            (None, Some(at)) => at.values().iter().for_each(|&i| decided.set_bit(i as usize, true)),
        }
    }
    Ok(BooleanArray::new(decided.finish(), None))
}

/// The rows of `batch` that `keep` selects, holding only the columns that
/// `terms` read; the others become `Null` columns. Copying a column costs,
/// and the terms already run often read the widest ones (the groups list,
/// the log line) for no later term.
fn narrow(
    batch: &RecordBatch,
    keep: &BooleanArray,
    terms: &[&Arc<dyn PhysicalExpr>],
) -> Result<RecordBatch, DataFusionError> {
    let reads: Vec<usize> =
        terms.iter().flat_map(|t| datafusion::physical_expr::utils::collect_columns(t)).map(|c| c.index()).collect();
    let filter = arrow::compute::FilterBuilder::new(keep).optimize().build();
    let schema = batch.schema();
    let (mut fields, mut columns) = (Vec::with_capacity(schema.fields().len()), Vec::new());
    for (i, field) in schema.fields().iter().enumerate() {
        let read = reads.contains(&i) && field.data_type() != &DataType::Null;
        match read {
            true => columns.push(filter.filter(batch.column(i))?),
            false => columns.push(Arc::new(NullArray::new(filter.count())) as ArrayRef),
        }
        fields.push(match read || field.data_type() == &DataType::Null {
            true => field.clone(),
            false => Arc::new(Field::new(field.name(), DataType::Null, true)),
        });
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// The terms of a chain of `AND` (or of `OR`), when `expr` is one.
fn chain(expr: &Arc<dyn PhysicalExpr>) -> Option<(Operator, Vec<&Arc<dyn PhysicalExpr>>)> {
    fn collect<'e>(expr: &'e Arc<dyn PhysicalExpr>, op: Operator, out: &mut Vec<&'e Arc<dyn PhysicalExpr>>) {
        match expr.downcast_ref::<BinaryExpr>().filter(|b| *b.op() == op) {
            Some(b) => {
                collect(b.left(), op, out);
                collect(b.right(), op, out);
            }
            None => out.push(expr),
        }
    }
    let op = *expr.downcast_ref::<BinaryExpr>()?.op();
    if !matches!(op, Operator::And | Operator::Or) {
        return None;
    }
    let mut terms = Vec::new();
    collect(expr, op, &mut terms);
    Some((op, terms))
}

/// A result cell as text (entity values, summaries); `None` when null.
pub fn cell_text(column: &ArrayRef, row: usize) -> Option<String> {
    if column.is_null(row) {
        return None;
    }
    let text = cast(&column.slice(row, 1), &DataType::Utf8).ok()?;
    let text = text.as_string::<i32>();
    (!text.is_null(0)).then(|| text.value(0).to_string())
}

/// A list cell's items as text (`alert_ids`).
pub fn list_texts(column: &ArrayRef, row: usize) -> Vec<String> {
    if column.is_null(row) {
        return Vec::new();
    }
    let items = match column.data_type() {
        DataType::List(_) => column.as_list::<i32>().value(row),
        DataType::LargeList(_) => column.as_list::<i64>().value(row),
        _ => return Vec::new(),
    };
    (0..items.len()).filter_map(|i| cell_text(&items, i)).collect()
}

/// An integer cell (`severity`), clamped to 0–100.
pub fn cell_severity(column: &ArrayRef, row: usize) -> Option<u8> {
    let text = cell_text(column, row)?;
    text.parse::<i64>().ok().map(|v| v.clamp(0, 100) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int32Array;
    use datafusion::physical_expr::expressions::{binary, col, is_null, lit, not};

    /// `passing` answers as DataFusion's own evaluation in a `WHERE` (null
    /// is false), for chains of `AND` and `OR`, nested, with nulls.
    #[test]
    fn tests_run_term_by_term_and_pass_the_rows_datafusion_would() {
        let schema =
            Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, true), Field::new("b", DataType::Utf8, true)]));
        // Every mix of a in 0..6 (or null) and b in four values (or null).
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for i in 0..7 {
            for j in 0..5 {
                a.push((i < 6).then_some(i));
                b.push(["x", "y", "xy", ""].get(j).copied());
            }
        }
        let rows =
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int32Array::from(a)), Arc::new(StringArray::from(b))])
                .unwrap();
        let s = schema.as_ref();
        let c = |name: &str| col(name, s).unwrap();
        let op = |l, o, r| binary(l, o, r, s).unwrap();
        let a_gt = |n: i32| op(c("a"), Operator::Gt, lit(n));
        let a_eq = |n: i32| op(c("a"), Operator::Eq, lit(n));
        let b_eq = |v: &str| op(c("b"), Operator::Eq, lit(v));
        let and = |l, r| op(l, Operator::And, r);
        let or = |l, r| op(l, Operator::Or, r);
        let cases = [
            a_gt(2),
            and(a_gt(1), b_eq("x")),
            and(and(a_gt(0), b_eq("xy")), a_eq(4)),
            and(a_gt(9), b_eq("x")),
            or(a_eq(1), b_eq("y")),
            or(or(a_eq(1), a_eq(5)), is_null(c("b")).unwrap()),
            or(and(a_gt(3), b_eq("x")), and(not(a_gt(1)).unwrap(), b_eq(""))),
            and(or(a_eq(2), b_eq("y")), not(b_eq("xy")).unwrap()),
            and(is_null(c("a")).unwrap(), or(b_eq("x"), is_null(c("b")).unwrap())),
            or(a_gt(-1), b_eq("x")),
            and(a_gt(-1), or(a_gt(-1), b_eq("x"))),
        ];
        for expr in cases {
            let value = expr.evaluate(&rows).unwrap().into_array(rows.num_rows()).unwrap();
            let value = value.as_boolean();
            let expected = match value.null_count() {
                0 => value.clone(),
                _ => arrow::compute::prep_null_mask_filter(value),
            };
            let got = passing(&expr, &rows).unwrap();
            assert_eq!(got, expected, "{expr}");
            assert_eq!(got.null_count(), 0);
        }
    }
}
