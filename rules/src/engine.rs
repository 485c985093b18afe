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

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema};
use datafusion::datasource::TableProvider;
use datafusion::error::DataFusionError;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::logical_expr::utils::{conjunction, disjunction};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, TableScan, TableType};
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
        .map(|(f, c)| if f.name() == col::RAW { cast(c, &DataType::Utf8) } else { Ok(c.clone()) })
        .collect::<Result<_, _>>()
        .map_err(state)?;
    RecordBatch::try_new(schema.clone(), columns).map_err(state)
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
        let test = prefilter(&plan);
        let prefilter_text = test.as_ref().map(ToString::to_string);
        let prefilter = match test {
            Some(expr) => {
                let schema = DFSchema::try_from(self.table.schema.as_ref().clone())
                    .map_err(|e| invalid(vec![format!("prefilter: {}", message(&e))]))?;
                Some(
                    self.ctx
                        .create_physical_expr(expr, &schema)
                        .map_err(|e| invalid(vec![format!("prefilter: {}", message(&e))]))?,
                )
            }
            None => None,
        };
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

/// The condition a row must meet to be read by the query at all: every
/// scan of `alerts` in the optimized plan sits right under a filter, and a
/// row that passes none of those filters can change nothing in the result.
/// `None` when some scan reads every row (or sits in a subquery), or a
/// filter is not a plain row-by-row test.
fn prefilter(plan: &LogicalPlan) -> Option<Expr> {
    fn walk(plan: &LogicalPlan, out: &mut Vec<Option<Expr>>) {
        match plan {
            LogicalPlan::Filter(f) => match scan_under(&f.input) {
                Some((projections, scan)) => {
                    // The predicate may name columns the projections between
                    // it and the scan computed (common subexpressions):
                    // put their expressions back.
                    let mut predicate = Some(f.predicate.clone());
                    for p in projections {
                        predicate = predicate.and_then(|e| inline(e, p));
                    }
                    let all = scan.filters.iter().cloned().map(Some).chain([predicate]);
                    out.push(all.collect::<Option<Vec<_>>>().and_then(conjunction));
                }
                None => walk(&f.input, out),
            },
            LogicalPlan::TableScan(scan) => out.push(conjunction(scan.filters.iter().cloned())),
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
        scans += usize::from(matches!(node, LogicalPlan::TableScan(_)));
        Ok(TreeNodeRecursion::Continue)
    })
    .ok()?;
    if scans != found.len() || scans == 0 {
        return None;
    }
    let tests: Vec<Expr> = found.into_iter().collect::<Option<_>>()?;
    if tests.iter().any(|e| e.is_volatile() || contains_subquery(e)) {
        return None;
    }
    // Column references lose the scans' aliases: the test runs on the table.
    let unqualified = disjunction(tests)?
        .transform(|e| match e {
            Expr::Column(c) => Ok(Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))),
            e => Ok(Transformed::no(e)),
        })
        .ok()?
        .data;
    Some(unqualified)
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

/// Which rows of a batch of `alerts` table rows a compiled rule can read
/// (nulls: not).
pub fn prefilter_mask(rule: &Compiled, rows: &RecordBatch) -> Result<Option<BooleanArray>, RuleError> {
    let Some(test) = &rule.prefilter else { return Ok(None) };
    let fail = |e: DataFusionError| RuleError::Eval { rule: rule.rule.name.clone(), message: message(&e) };
    let value = test.evaluate(rows).map_err(fail)?.into_array(rows.num_rows()).map_err(fail)?;
    let mask = value.as_boolean_opt().ok_or_else(|| RuleError::Eval {
        rule: rule.rule.name.clone(),
        message: "prefilter is not a boolean".into(),
    })?;
    Ok(Some(if mask.null_count() > 0 { arrow::compute::prep_null_mask_filter(mask) } else { mask.clone() }))
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
