//! Pattern tests whose pattern is compiled once per rule.
//!
//! DataFusion compiles the regular expression of `x ~ 'p'`,
//! `regexp_like(x, 'p')` and of a `LIKE` / `ILIKE` pattern that is more
//! than a prefix, suffix or substring on every call, that is for every
//! batch a rule's prefilter tests and every window it evaluates: building
//! the automaton cost the rules stage more than matching with it.
//! [`compile_patterns`] swaps each such test with a literal pattern for
//! [`CompiledMatch`], which holds the compiled expression. It keeps the
//! test's column name, so that the plan's schema is unchanged, and prints as
//! `compiled_match(text, 'regex')` (`compiled_not_match` when negated) in
//! `rules explain`. Patterns Arrow matches without a regular expression are
//! left as they are.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, AsArray, BooleanArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::expr::{BinaryExpr, Like, ScalarFunction};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use regex::{Regex, RegexBuilder};

/// A text matched against a compiled regular expression (negated for
/// `NOT LIKE` and `!~`); null stays null.
#[derive(Debug)]
pub struct CompiledMatch {
    regex: Regex,
    negated: bool,
    /// The test it replaces, as DataFusion names and prints it.
    schema_name: String,
    display: String,
    signature: Signature,
}

impl PartialEq for CompiledMatch {
    fn eq(&self, other: &Self) -> bool {
        (self.regex.as_str(), self.negated, &self.schema_name)
            == (other.regex.as_str(), other.negated, &other.schema_name)
    }
}

impl Eq for CompiledMatch {}

impl Hash for CompiledMatch {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.regex.as_str(), self.negated, &self.schema_name).hash(state);
    }
}

impl ScalarUDFImpl for CompiledMatch {
    fn name(&self) -> &str {
        match self.negated {
            false => "compiled_match",
            true => "compiled_not_match",
        }
    }

    fn display_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(self.display.clone())
    }

    fn schema_name(&self, _args: &[Expr]) -> Result<String> {
        Ok(self.schema_name.clone())
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    /// Null only for a null text, as the test it replaces: the plan's
    /// schema keeps its nullability.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), DataType::Boolean, nullable)))
    }

    fn is_strict(&self) -> bool {
        true
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let (text, scalar) = match &args.args[0] {
            ColumnarValue::Array(a) => (a.clone(), false),
            ColumnarValue::Scalar(s) => (s.to_array_of_size(1)?, true),
        };
        // The test was type-checked as DataFusion's own: the text is a string.
        let text = match text.data_type() {
            DataType::Utf8 => text,
            _ => cast(&text, &DataType::Utf8)?,
        };
        let matched: BooleanArray =
            text.as_string::<i32>().iter().map(|v| v.map(|s| self.regex.is_match(s) != self.negated)).collect();
        Ok(match scalar {
            true => ColumnarValue::Scalar(ScalarValue::try_from_array(&matched, 0)?),
            false => ColumnarValue::Array(Arc::new(matched)),
        })
    }
}

/// `plan` with every pattern test on a literal pattern (in subqueries too)
/// holding its compiled expression. A pattern that does not compile is left
/// for DataFusion to report as it would.
pub fn compile_patterns(plan: LogicalPlan) -> Result<LogicalPlan> {
    plan.transform_up_with_subqueries(|node| node.map_expressions(|e| e.transform_up(compiled))).map(|t| t.data)
}

fn literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Literal(
            ScalarValue::Utf8(Some(p)) | ScalarValue::LargeUtf8(Some(p)) | ScalarValue::Utf8View(Some(p)),
            _,
        ) => Some(p),
        _ => None,
    }
}

fn compiled(e: Expr) -> Result<Transformed<Expr>> {
    let found = match &e {
        Expr::ScalarFunction(ScalarFunction { func, args }) if func.name() == "regexp_like" => match args.as_slice() {
            [text, pattern] => literal(pattern).map(|p| (text, Regex::new(p), false, false)),
            _ => None,
        },
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            let (insensitive, negated) = match op {
                Operator::RegexMatch => (false, false),
                Operator::RegexIMatch => (true, false),
                Operator::RegexNotMatch => (false, true),
                Operator::RegexNotIMatch => (true, true),
                _ => return Ok(Transformed::no(e)),
            };
            literal(right).map(|p| {
                (left.as_ref(), RegexBuilder::new(p).case_insensitive(insensitive).build(), negated, insensitive)
            })
        }
        Expr::Like(Like { negated, expr, pattern, escape_char: None | Some('\\'), case_insensitive }) => {
            literal(pattern)
                .and_then(|p| like_regex(p, *case_insensitive))
                .map(|re| (expr.as_ref(), re, *negated, *case_insensitive))
        }
        _ => None,
    };
    let Some((text, Ok(regex), negated, insensitive)) = found else { return Ok(Transformed::no(e)) };
    let shown = match insensitive {
        true => format!("(?i){}", regex.as_str()),
        false => regex.as_str().to_string(),
    };
    let udf = CompiledMatch {
        regex,
        negated,
        schema_name: e.schema_name().to_string(),
        display: e.to_string(),
        signature: Signature::any(2, Volatility::Immutable),
    };
    // The expression rides along as an argument to be seen, not read.
    let shown = Expr::Literal(ScalarValue::Utf8(Some(shown)), None);
    Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(udf)),
        vec![text.clone(), shown],
    ))))
}

/// The regular expression of a `LIKE` pattern (`%` any text, `_` any
/// character, `\` escapes the next), as Arrow builds it; `None` for the
/// patterns Arrow tests without one (no wildcard, or one `%` at the start,
/// the end or both ends of a plain text; for `ILIKE`, an ASCII one).
fn like_regex(pattern: &str, case_insensitive: bool) -> Option<Result<Regex, regex::Error>> {
    let special = |s: &str| s.contains(['%', '_', '\\']);
    let plain = !special(pattern)
        || pattern.strip_suffix('%').is_some_and(|p| !special(p))
        || pattern.strip_prefix('%').is_some_and(|p| !special(p))
        || pattern.strip_prefix('%').and_then(|p| p.strip_suffix('%')).is_some_and(|p| !special(p));
    if plain && (!case_insensitive || pattern.is_ascii()) {
        return None;
    }
    let mut re = String::with_capacity(pattern.len() * 2);
    let mut chars = pattern.chars().peekable();
    // A leading `%` needs no `^.*`, a trailing one no `.*$`.
    match chars.peek() {
        Some('%') => _ = chars.next(),
        _ => re.push('^'),
    }
    let mut open_end = false;
    while let Some(c) = chars.next() {
        open_end = false;
        match c {
            '\\' => match chars.next() {
                Some(next) => re.push_str(&regex::escape(&next.to_string())),
                // A trailing backslash is a backslash.
                None => re.push_str("\\\\"),
            },
            '%' if chars.peek().is_none() => open_end = true,
            '%' => re.push_str(".*"),
            '_' => re.push('.'),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    if !open_end {
        re.push('$');
    }
    Some(RegexBuilder::new(&re).case_insensitive(case_insensitive).dot_matches_new_line(true).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn like(pattern: &str, text: &str) -> bool {
        like_regex(pattern, false).expect("a pattern Arrow compiles").unwrap().is_match(text)
    }

    #[test]
    fn like_patterns_mean_what_sql_says() {
        assert!(like("c:\\\\users\\\\%\\\\appdata%", "c:\\users\\bob\\appdata\\x"));
        assert!(!like("c:\\\\users\\\\%\\\\appdata%", "d:\\users\\bob\\appdata"));
        assert!(like("a\\_b_", "a_bc") && !like("a\\_b_", "axbc") && !like("a\\_b_", "a_bcd"));
        assert!(like("%a%b%", "xaxbx") && !like("%a%b%", "xbxax"));
        assert!(like("10.%.1", "10.0.0.1") && !like("10.%.1", "10.0.0.12"));
        assert!(like("%.*_", "a.*b") && !like("%.*_", "axxb"), "regex characters are literal");
        assert!(like("a%\n%", "a\nb"), "% spans lines");
        // Plain prefixes, suffixes and substrings are left to Arrow.
        assert!(["abc", "ab%", "%bc", "%b%"].iter().all(|p| like_regex(p, false).is_none()));
        assert!(like_regex("ab%", true).is_none());
        assert!(like_regex("a_c", true).unwrap().unwrap().is_match("ABC"));
    }
}
