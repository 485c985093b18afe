//! `regexp_like(text, 'pattern')` with its pattern compiled once per rule.
//!
//! DataFusion's `regexp_like` compiles its pattern on every call, that is
//! for every batch a rule's prefilter tests and every window it evaluates;
//! building the automaton cost the rules stage more than matching with it.
//! [`compile_regexes`] swaps each call with a literal pattern for
//! [`RegexLike`], which holds the compiled expression. The call keeps its
//! name and arguments, so plans, column names and `rules explain` read the
//! same; only the pattern argument is no longer read when it runs.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use regex::Regex;

/// `regexp_like` over a pattern compiled in advance (see the module).
#[derive(Debug)]
pub struct RegexLike {
    regex: Regex,
    signature: Signature,
}

impl PartialEq for RegexLike {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str()
    }
}

impl Eq for RegexLike {}

impl Hash for RegexLike {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.regex.as_str().hash(state);
    }
}

impl ScalarUDFImpl for RegexLike {
    fn name(&self) -> &str {
        "regexp_like"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = args.number_rows;
        let (text, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        // The call was type-checked as DataFusion's: the text is a string.
        let text = match text.data_type() {
            DataType::Utf8 => text,
            _ => cast(&text, &DataType::Utf8)?,
        };
        let matched: BooleanArray = text.as_string::<i32>().iter().map(|v| v.map(|s| self.regex.is_match(s))).collect();
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&matched, 0)?),
            false => {
                debug_assert_eq!(matched.len(), rows);
                ColumnarValue::Array(Arc::new(matched))
            }
        })
    }
}

/// `plan` with every `regexp_like(x, 'literal')` (in subqueries too)
/// holding its compiled pattern. A pattern that does not compile is left
/// for DataFusion to report as it would.
pub fn compile_regexes(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| node.map_expressions(|e| e.transform_up(compiled)))
        .map(|t| t.data)
}

fn compiled(e: Expr) -> Result<Transformed<Expr>> {
    let Expr::ScalarFunction(f) = &e else { return Ok(Transformed::no(e)) };
    let pattern = match f.args.as_slice() {
        [_, Expr::Literal(ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)), _)]
            if f.name() == "regexp_like" =>
        {
            p
        }
        _ => return Ok(Transformed::no(e)),
    };
    let Ok(regex) = Regex::new(pattern) else { return Ok(Transformed::no(e)) };
    let udf = RegexLike { regex, signature: Signature::any(2, Volatility::Immutable) };
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(udf)),
        f.args.clone(),
    ))))
}
