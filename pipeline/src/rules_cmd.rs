//! `sluice rules …`: the workbench for detection engineers.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_operators::time::Rfc3339;
use sluice_pipeline::config::{Config, Format};
use sluice_rules::workbench::run_file;
use sluice_rules::{Compiled, Engine, Rule, compile_all, read_paths};

#[derive(Subcommand, Debug)]
pub enum RulesCommand {
    /// Run rules over a file of alerts and print every detection (tenant,
    /// window, entities, the matching alerts) and each rule's time.
    Test(TestArgs),
    /// Show a rule's DataFusion plans.
    Explain(ExplainArgs),
    /// List the rules a config runs.
    List(ConfigArg),
    /// Time every rule over a whole file of alerts (each tenant's alerts
    /// one window), and export the `alerts` table and the rules' SQL for
    /// another engine (`benches/rules_duckdb.py`).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Rule files or directories of them; none: the config's rules, or the
    /// shipped library when the config has none.
    rules: Vec<PathBuf>,
    /// Wazuh alerts, one JSON object per line.
    #[arg(long, short)]
    input: PathBuf,
    /// Write the `alerts` table (every typed column, `raw` as text) here as
    /// an Arrow IPC stream.
    #[arg(long)]
    export_table: Option<PathBuf>,
    /// Write each rule's SQL here as `<rule>.sql`.
    #[arg(long)]
    export_sql: Option<PathBuf>,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// Config file (its `[rules]`, `[decode]` and `[tenant]` apply).
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TestArgs {
    /// Rule files or directories of them; none: the rules the config runs.
    rules: Vec<PathBuf>,
    /// Wazuh alerts, one JSON object per line (`-` for stdin).
    #[arg(long, short)]
    input: PathBuf,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// A rule's name (among the config's rules) or a rule file.
    rule: String,
    #[command(flatten)]
    config: ConfigArg,
}

/// The config, with each tenant's policy fields read once into `decode`
/// (the rules and the decoder must agree on the columns).
fn config(arg: &ConfigArg) -> Result<Config> {
    let mut config = match &arg.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.decode = config.decode_config();
    Ok(config)
}

/// The rules of `paths` (or the config's) that parsed, and every problem.
fn rules(config: &Config, paths: &[PathBuf]) -> (Vec<Rule>, Vec<String>) {
    if paths.is_empty() {
        config.rules.load()
    } else {
        let (rules, errors) = read_paths(paths, config.rules.limits());
        (rules, errors.iter().map(ToString::to_string).collect())
    }
}

/// Plans the rules; fails with every problem of loading and planning.
fn compile(config: &Config, (rules, mut problems): (Vec<Rule>, Vec<String>)) -> Result<(Engine, Vec<Compiled>)> {
    let engine = Engine::new(&config.decode.extra_columns())?;
    let compiled = compile_all(&engine, rules).unwrap_or_else(|errors| {
        problems.extend(errors.iter().map(ToString::to_string));
        Vec::new()
    });
    if !problems.is_empty() {
        bail!("{} rule problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    Ok((engine, compiled))
}

pub fn cmd_rules(command: RulesCommand) -> Result<()> {
    match command {
        RulesCommand::Test(a) => test(a),
        RulesCommand::Explain(a) => explain(a),
        RulesCommand::List(a) => list(a),
        RulesCommand::Bench(a) => bench(a),
    }
}

fn bench(a: BenchArgs) -> Result<()> {
    let mut config = config(&a.config)?;
    if a.rules.is_empty() && !config.rules.builtin && config.rules.paths.is_empty() {
        config.rules.builtin = true;
    }
    let (engine, compiled) = compile(&config, rules(&config, &a.rules))?;
    let compiled: Vec<Compiled> = compiled.into_iter().filter(|c| c.rule.enabled).collect();
    if compiled.is_empty() {
        bail!("no enabled rules to time");
    }
    let data = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let report = sluice_rules::workbench::bench(&engine, &compiled, &data, config.decode.clone(), &config.tenant)?;
    if let Some(dir) = &a.export_sql {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for c in &compiled {
            let path = dir.join(format!("{}.sql", c.rule.name));
            std::fs::write(&path, &c.rule.sql).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if let Some(path) = &a.export_table {
        let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
        // The stream format: its dictionaries may change from batch to batch.
        let mut w = arrow::ipc::writer::StreamWriter::try_new(std::io::BufWriter::new(file), engine.schema())?;
        for b in &report.table {
            w.write(b)?;
        }
        w.finish()?;
    }
    let total: f64 = report.rules.iter().map(|r| r.time.as_secs_f64()).sum();
    if a.format == Format::Json {
        let rules: Vec<serde_json::Value> = report
            .rules
            .iter()
            .map(|r| serde_json::json!({"rule": r.rule, "time_ms": r.time.as_secs_f64() * 1e3, "rows": r.rows}))
            .collect();
        let doc = serde_json::json!({
            "alerts": report.alerts,
            "dead_letters": report.dead_letters,
            "tenants": report.tenants,
            "decode_ms": report.decode.as_secs_f64() * 1e3,
            "rules": rules,
            "total_ms": total * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    println!("{:<44} {:>10} {:>8}", "rule", "time", "rows");
    for r in &report.rules {
        println!("{:<44} {:>7.1} ms {:>8}", r.rule, r.time.as_secs_f64() * 1e3, r.rows);
    }
    println!(
        "{} rules over {} alerts ({} tenants, {} dead-lettered): {:.1} ms (decoding took {:.1} ms more)",
        report.rules.len(),
        report.alerts,
        report.tenants,
        report.dead_letters,
        total * 1e3,
        report.decode.as_secs_f64() * 1e3
    );
    Ok(())
}

#[derive(Serialize)]
struct DetectionJson<'a> {
    rule: &'a str,
    tenant: &'a str,
    severity: u8,
    window_start: String,
    window_end: String,
    entities: Vec<(&'static str, &'a str)>,
    alert_ids: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    summary: Option<&'a str>,
}

#[derive(Serialize)]
struct RuleJson<'a> {
    rule: &'a str,
    windows: u64,
    evaluated: u64,
    detections: u64,
    time_ms: f64,
}

fn test(a: TestArgs) -> Result<()> {
    let config = config(&a.config)?;
    let (engine, compiled) = compile(&config, rules(&config, &a.rules))?;
    if compiled.is_empty() {
        bail!("no rules to test (name rule files, or set [rules] in the config)");
    }
    let count = compiled.len();
    let report = run_file(
        engine,
        compiled,
        &a.input,
        config.decode.clone(),
        &config.tenant,
        config.time.allowed_lateness.millis(),
    )?;
    if a.format == Format::Json {
        let detections: Vec<DetectionJson<'_>> = report
            .detections
            .iter()
            .map(|d| DetectionJson {
                rule: &d.rule,
                tenant: &d.tenant,
                severity: d.severity,
                window_start: Rfc3339(d.window_start).to_string(),
                window_end: Rfc3339(d.window_end).to_string(),
                entities: d.entities.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
                alert_ids: &d.alert_ids,
                summary: d.summary.as_deref(),
            })
            .collect();
        let rules: Vec<RuleJson<'_>> = report
            .stats
            .iter()
            .map(|(rule, s)| RuleJson {
                rule,
                windows: s.windows,
                evaluated: s.evaluated,
                detections: s.detections,
                time_ms: s.time.as_secs_f64() * 1e3,
            })
            .collect();
        let doc = serde_json::json!({
            "alerts": report.alerts,
            "dead_letters": report.dead_letters,
            "detections": detections,
            "rules": rules,
            "elapsed_ms": report.elapsed.as_secs_f64() * 1e3,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(());
    }
    for d in &report.detections {
        println!(
            "{}  tenant {}  window {} – {}  severity {}",
            d.rule,
            d.tenant,
            Rfc3339(d.window_start),
            Rfc3339(d.window_end),
            d.severity
        );
        let entities: Vec<String> = d.entities.iter().map(|(k, v)| format!("{}={v}", k.as_str())).collect();
        println!("  entities  {}", entities.join("  "));
        if let Some(s) = &d.summary {
            println!("  summary   {s}");
        }
        if !d.alert_ids.is_empty() {
            println!("  alerts    {}", d.alert_ids.join(" "));
        }
    }
    println!("── rules ─────────────────────────────────────────────────────────");
    println!("{:<40} {:>8} {:>10} {:>11} {:>10}", "rule", "windows", "evaluated", "detections", "time");
    for (rule, s) in &report.stats {
        println!(
            "{rule:<40} {:>8} {:>10} {:>11} {:>7.2} ms",
            s.windows,
            s.evaluated,
            s.detections,
            s.time.as_secs_f64() * 1e3
        );
    }
    println!(
        "{} alerts ({} dead-lettered), {count} rules, {} detections in {:.1} ms",
        report.alerts,
        report.dead_letters,
        report.detections.len(),
        report.elapsed.as_secs_f64() * 1e3
    );
    Ok(())
}

fn explain(a: ExplainArgs) -> Result<()> {
    let config = config(&a.config)?;
    let path = PathBuf::from(&a.rule);
    let candidates = if path.is_file() {
        rules(&config, &[path])
    } else {
        let (all, problems) = rules(&config, &[]);
        let names: Vec<String> = all.iter().map(|r| r.name.clone()).collect();
        let found: Vec<Rule> = all.into_iter().filter(|r| r.name == a.rule).collect();
        if found.is_empty() {
            bail!("no rule file or rule named {:?} (rules: {})", a.rule, names.join(", "));
        }
        (found, problems)
    };
    let (engine, compiled) = compile(&config, candidates)?;
    for c in &compiled {
        println!("rule {} ({})", c.rule.name, c.rule.origin.display());
        println!("window: {}; severity {}", c.rule.window.describe(), c.rule.severity);
        println!("sql:\n{}\n", c.rule.sql.trim_end());
        match &c.prefilter_text {
            Some(t) => println!("prefilter (windows hold only the alerts that pass it):\n{t}\n"),
            None => println!("prefilter: none (the query may read every alert)\n"),
        }
        if !c.guards.is_empty() {
            println!("guards (a window is evaluated only when enough of its alerts pass each):");
            for g in &c.guards {
                println!("  at least {} of: {}", g.min_rows, g.text);
            }
            println!();
        }
        println!("{}", engine.explain(c)?);
    }
    Ok(())
}

fn list(a: ConfigArg) -> Result<()> {
    let config = config(&a)?;
    let (all, problems) = rules(&config, &[]);
    if !problems.is_empty() {
        bail!("{} rule problem(s):\n  {}", problems.len(), problems.join("\n  "));
    }
    for r in all {
        println!(
            "{:<40} severity {:>3}  {:<32} {}",
            r.name,
            r.severity,
            r.window.describe(),
            if r.enabled { "" } else { "(disabled)" }
        );
    }
    Ok(())
}
