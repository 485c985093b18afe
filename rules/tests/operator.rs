//! The rules stage inside the operator chain: tenants never mix, windows
//! close on event time at the same place whatever the batch size, and a
//! snapshot taken mid-stream resumes as if never stopped.

use std::path::Path;
use std::sync::Arc;

use sluice_operators::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};
use sluice_operators::operator::{AlertBatch, Context, Operator, Output};
use sluice_operators::schema::AlertColumns;
use sluice_rules::{Engine, Limits, Reload, Rule, Rules, compile_all};

/// An sshd failure (`fail`) or success at minute `m` of 2026-11-01 10:00.
fn line(tenant: &str, id: usize, m: f64, ip: &str, fail: bool) -> String {
    let secs = (m * 60.0) as i64;
    let (rule, groups) = if fail {
        (5716, r#"["sshd","authentication_failed"]"#)
    } else {
        (5715, r#"["sshd","authentication_success"]"#)
    };
    format!(
        r#"{{"timestamp":"2026-11-01T{:02}:{:02}:{:02}.000+0000","rule":{{"level":5,"id":"{rule}","groups":{groups}}},"agent":{{"id":"001","name":"web-01"}},"manager":{{"name":"{tenant}"}},"id":"{tenant}.{id}","data":{{"srcip":"{ip}","dstuser":"root"}}}}"#,
        10 + secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

fn rule(sql: &str, window: &str) -> Rule {
    let text = format!("severity = 50\nwindow = {window}\nentities = {{ ip = \"src_ip\" }}\nsql = \"\"\"{sql}\"\"\"\n");
    Rule::parse(&text, Path::new("test.toml"), Limits::default()).unwrap()
}

/// Runs the lines through decode → rules in batches of `batch` lines;
/// returns what came out, flattened: `alert:<id>` per row passed on, and
/// `detect:<rule>:<tenant>:<ip>:<window end>` per detection, in order.
fn run(rules: Vec<Rule>, lines: &[String], batch: usize, snapshot_at: Option<usize>) -> Vec<String> {
    run_with(rules, lines, batch, snapshot_at, None)
}

/// As [`run`], reloading the rule set before batch `reload.0`.
fn run_with(
    rules: Vec<Rule>,
    lines: &[String],
    batch: usize,
    snapshot_at: Option<usize>,
    reload: Option<(usize, Vec<Rule>)>,
) -> Vec<String> {
    run_stats(rules, lines, batch, snapshot_at, reload).0
}

/// As [`run_with`], with the rules' figures.
fn run_stats(
    rules: Vec<Rule>,
    lines: &[String],
    batch: usize,
    snapshot_at: Option<usize>,
    reload: Option<(usize, Vec<Rule>)>,
) -> (Vec<String>, std::collections::BTreeMap<String, sluice_rules::RuleStats>) {
    let make = || {
        let engine = Engine::new(&[]).unwrap();
        let compiled = compile_all(&engine, rules.clone()).unwrap();
        Rules::new(engine, compiled, 30_000, usize::MAX)
    };
    let mut op = make();
    let mut decoder = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).unwrap();
    let mut ctx = Context::default();
    let mut out = Vec::new();
    for (i, part) in lines.chunks(batch).enumerate() {
        if snapshot_at == Some(i) {
            let state = op.snapshot().unwrap();
            op = make();
            op.restore(&state).unwrap();
        }
        if let Some((at, rules)) = &reload
            && *at == i
        {
            op.reconfigure(&Reload(rules.clone())).unwrap();
        }
        let data = part.join("\n").into_bytes();
        let mut at = 0;
        let spans = part
            .iter()
            .map(|l| {
                let s = (at, at + l.len());
                at += l.len() + 1;
                s
            })
            .collect();
        let chunk = RawChunk { source: Arc::from("t"), data, lines: spans, ..RawChunk::default() };
        let batch = decoder.decode(&chunk).unwrap().batch.unwrap();
        op.process(AlertBatch::new(batch), &mut ctx, &mut out).unwrap();
    }
    op.on_end(&mut ctx, &mut out).unwrap();
    let mut flat = Vec::new();
    for o in out {
        match o {
            Output::Batch(b) => {
                let c = AlertColumns::new(&b.batch).unwrap();
                flat.extend((0..b.num_rows()).map(|r| format!("alert:{}", c.alert_id.value(r))));
            }
            Output::Detection(d) => {
                flat.push(format!("detect:{}:{}:{}:{}", d.rule, d.tenant, d.entities[0].1, d.window_end))
            }
            Output::Cluster(..) => {}
        }
    }
    (flat, op.stats().clone())
}

const COUNT: &str =
    "SELECT src_ip, count(*) AS n FROM alerts WHERE rule_id = 5716 GROUP BY src_ip HAVING count(*) >= 3";

#[test]
fn a_rule_sees_one_tenant_at_a_time() {
    // Two failures from one address in each of two tenants: four in all,
    // but never three in one tenant.
    let lines: Vec<String> = (0..4)
        .map(|i| line(if i % 2 == 0 { "acme" } else { "globex" }, i, 1.0 + i as f64, "203.0.113.7", true))
        .collect();
    let out = run(vec![rule(COUNT, r#"{ kind = "tumbling", size = "1h" }"#)], &lines, 100, None);
    assert!(!out.iter().any(|o| o.starts_with("detect")), "{out:?}");
    // A rule written to count tenants still sees one.
    let tenants = "SELECT src_ip, count(DISTINCT tenant) AS tenants FROM alerts GROUP BY src_ip HAVING count(DISTINCT tenant) > 1";
    let out = run(vec![rule(tenants, r#"{ kind = "tumbling", size = "1h" }"#)], &lines, 100, None);
    assert!(!out.iter().any(|o| o.starts_with("detect")), "{out:?}");
    // And three in one tenant do fire, for that tenant only.
    let mut lines = lines;
    lines.push(line("acme", 9, 5.0, "203.0.113.7", true));
    lines.push(line("acme", 10, 6.0, "203.0.113.7", true));
    let out = run(vec![rule(COUNT, r#"{ kind = "tumbling", size = "1h" }"#)], &lines, 100, None);
    let detections: Vec<&String> = out.iter().filter(|o| o.starts_with("detect")).collect();
    assert_eq!(detections.len(), 1, "{out:?}");
    assert!(detections[0].starts_with("detect:test:acme:203.0.113.7"), "{detections:?}");
}

/// Failures from two addresses spread over two hours, then one late-ish
/// success each.
fn stream() -> Vec<String> {
    let mut lines = Vec::new();
    for i in 0..120 {
        let ip = if i % 3 == 0 { "198.51.100.1" } else { "203.0.113.7" };
        lines.push(line(if i % 5 == 0 { "globex" } else { "acme" }, i, i as f64, ip, i % 7 != 0));
    }
    lines
}

#[test]
fn windows_close_at_the_same_place_whatever_the_batch_size_and_across_a_snapshot() {
    let rules = vec![
        rule(COUNT, r#"{ kind = "tumbling", size = "10m" }"#),
        rule(&COUNT.replace(">= 3", ">= 5"), r#"{ kind = "hopping", size = "20m", slide = "5m" }"#),
        rule(
            "SELECT src_ip, count(*) AS n FROM alerts GROUP BY src_ip HAVING count(*) >= 2",
            r#"{ kind = "session", gap = "3m" }"#,
        ),
        rule(&COUNT.replace(">= 3", ">= 4"), r#"{ kind = "tumbling", size = "30m", early = "2m" }"#),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, mut r)| {
        r.name = format!("rule-{i}");
        r
    })
    .collect::<Vec<_>>();
    let lines = stream();
    let reference = run(rules.clone(), &lines, 1, None);
    let detections = reference.iter().filter(|o| o.starts_with("detect")).count();
    assert!(detections > 10, "the stream must fire often: {detections}");
    assert_eq!(reference.iter().filter(|o| o.starts_with("alert")).count(), lines.len(), "every alert passes on");
    for batch in [2, 7, 64, 1000] {
        assert_eq!(run(rules.clone(), &lines, batch, None), reference, "batch size {batch}");
    }
    for at in [3, 17, 40] {
        assert_eq!(run(rules.clone(), &lines, 2, Some(at)), reference, "snapshot before batch {at}");
    }
}

fn named(mut r: Rule, name: &str) -> Rule {
    r.name = name.to_string();
    r
}

/// The window ends (ms) of one rule's detections.
fn ends(out: &[String], rule: &str) -> Vec<(String, i64)> {
    out.iter()
        .filter_map(|o| o.strip_prefix(&format!("detect:{rule}:")))
        .map(|rest| {
            let (key, end) = rest.rsplit_once(':').unwrap();
            (key.to_string(), end.parse().unwrap())
        })
        .collect()
}

#[test]
fn a_reload_keeps_unchanged_rules_state_and_starts_new_rules_at_the_open_windows() {
    let a = named(rule(COUNT, r#"{ kind = "tumbling", size = "10m" }"#), "a");
    let b = named(rule(&COUNT.replace(">= 3", ">= 2"), r#"{ kind = "tumbling", size = "5m" }"#), "b");
    let lines = stream();
    // Reload before batch 8 of 7 lines: before line 56, at minute 56, when
    // both tenants' clocks (newest − 30 s lateness) are past 10:50.
    let (batch, at) = (7, 8);
    let reload_ms = 1_793_527_200_000 + 56 * 60_000;
    let only_a = run(vec![a.clone()], &lines, batch, None);
    let both = run(vec![a.clone(), b.clone()], &lines, batch, None);
    let added = run_with(vec![a.clone()], &lines, batch, None, Some((at, vec![a.clone(), b.clone()])));
    assert_eq!(ends(&added, "a"), ends(&only_a, "a"), "an unchanged rule goes on as if nothing happened");
    // The new rule: every window from the one open at the reload (10:50–10:55,
    // over the alerts already buffered) on, exactly as if it had always run.
    let all_b = ends(&both, "b");
    let open_from = reload_ms - 6 * 60_000;
    let want: Vec<_> = all_b.iter().filter(|(_, end)| *end > open_from).cloned().collect();
    assert!(!want.is_empty() && want.len() < all_b.len(), "b fires before and after the reload: {all_b:?}");
    assert_eq!(ends(&added, "b"), want);
    // A removed rule stops.
    let removed = run_with(vec![a.clone(), b.clone()], &lines, batch, None, Some((at, vec![b.clone()])));
    assert!(ends(&removed, "a").iter().all(|(_, end)| *end <= reload_ms), "{removed:?}");
    assert_eq!(ends(&removed, "b"), all_b);
    // Every alert still passes on, once.
    assert_eq!(added.iter().filter(|o| o.starts_with("alert")).count(), lines.len());
}

#[test]
fn an_early_window_fires_as_soon_as_it_matches_and_only_once() {
    // Tumbling 1 h, evaluated every minute while open: three failures by
    // 10:03 match at the 10:04 tick, which the tenant's clock (newest − 30 s)
    // passes with the alert at 10:05.
    let lines: Vec<String> = (1..=10).map(|m| line("acme", m, m as f64, "203.0.113.7", true)).collect();
    let early = rule(COUNT, r#"{ kind = "tumbling", size = "1h", early = "1m" }"#);
    let out = run(vec![early], &lines, 100, None);
    let at = out.iter().position(|o| o.starts_with("detect")).expect("fires");
    assert_eq!(out[at + 1], "alert:acme.5", "{out:?}");
    assert_eq!(out.iter().filter(|o| o.starts_with("detect")).count(), 1, "not again at the window's end: {out:?}");
    // Without `early`, the same window fires at its end only.
    let late = run(vec![rule(COUNT, r#"{ kind = "tumbling", size = "1h" }"#)], &lines, 100, None);
    assert_eq!(late.last().map(String::as_str), out.get(at).map(String::as_str), "the same detection");
    assert!(late.last().unwrap().starts_with("detect"), "{late:?}");
}

#[test]
fn a_window_closes_before_the_alert_that_moves_the_clock_past_its_end() {
    // Tumbling 10 min, lateness 30 s: the window [10:00, 10:10) closes when
    // an alert of the tenant at or after 10:10:30 arrives.
    let lines = vec![
        line("acme", 1, 1.0, "203.0.113.7", true),
        line("acme", 2, 2.0, "203.0.113.7", true),
        line("acme", 3, 3.0, "203.0.113.7", true),
        line("acme", 4, 10.25, "203.0.113.7", true), // 10:10:15: not yet
        line("acme", 5, 10.6, "203.0.113.7", true),  // 10:10:36: closes it
    ];
    let out = run(vec![rule(COUNT, r#"{ kind = "tumbling", size = "10m" }"#)], &lines, 100, None);
    let at = out.iter().position(|o| o.starts_with("detect")).expect("fires");
    assert_eq!(&out[..at], ["alert:acme.1", "alert:acme.2", "alert:acme.3", "alert:acme.4"], "{out:?}");
    assert_eq!(out[at + 1], "alert:acme.5");
}

#[test]
fn bad_sql_and_missing_entity_columns_are_refused_with_the_rule_file() {
    let engine = Engine::new(&[]).unwrap();
    let typo = rule("SELECT srcip FROM alerts", r#"{ kind = "tumbling", size = "1h" }"#);
    let e = compile_all(&engine, vec![typo]).unwrap_err()[0].to_string();
    assert!(
        e.contains("test.toml") && e.contains("srcip") && e.contains("src_ip"),
        "names the column and the nearest: {e}"
    );
    let missing = rule("SELECT dst_user FROM alerts", r#"{ kind = "tumbling", size = "1h" }"#);
    let e = compile_all(&engine, vec![missing]).unwrap_err()[0].to_string();
    assert!(e.contains("entities.ip") && e.contains("dst_user"), "{e}");
    let ddl = rule("DROP TABLE alerts", r#"{ kind = "tumbling", size = "1h" }"#);
    assert!(compile_all(&engine, vec![ddl]).is_err(), "only queries run");
}

#[test]
fn windows_hold_only_the_rows_a_query_can_read_and_only_when_that_is_safe() {
    let engine = Engine::new(&[]).unwrap();
    let prefilter = |sql: &str| {
        let r = rule(sql, r#"{ kind = "tumbling", size = "1h" }"#);
        compile_all(&engine, vec![r]).unwrap().remove(0).prefilter_text
    };
    let filtered = prefilter(COUNT).expect("a filtered scan has a prefilter");
    assert!(filtered.contains("rule_id"), "{filtered}");
    // A scan that reads every row: nothing may be left out.
    assert_eq!(prefilter("SELECT src_ip, count(*) AS n FROM alerts GROUP BY src_ip"), None);
    let join = "SELECT f.src_ip FROM alerts f JOIN alerts a ON a.src_ip = f.src_ip WHERE f.rule_id = 5716";
    assert_eq!(prefilter(join), None, "the second scan is unfiltered");
    // Both scans filtered: either filter lets a row in.
    let both = "SELECT f.src_ip FROM alerts f JOIN alerts a ON a.src_ip = f.src_ip \
                WHERE f.rule_id = 5716 AND a.rule_id = 5715";
    let text = prefilter(both).expect("both scans are filtered");
    assert!(text.contains("5716") && text.contains("5715") && text.contains(" OR "), "{text}");
    // And the results are those of reading every row: the same count
    // written so that the scan reads every row fires the same windows.
    let every_row = "SELECT src_ip, sum(CASE WHEN rule_id = 5716 THEN 1 ELSE 0 END) AS n FROM alerts \
                     GROUP BY src_ip HAVING sum(CASE WHEN rule_id = 5716 THEN 1 ELSE 0 END) >= 3";
    assert_eq!(prefilter(every_row), None);
    let lines = stream();
    let window = r#"{ kind = "tumbling", size = "10m" }"#;
    let with = run(vec![rule(COUNT, window)], &lines, 7, None);
    let without = run(vec![rule(every_row, window)], &lines, 7, None);
    assert!(with.iter().any(|o| o.starts_with("detect")), "{with:?}");
    assert_eq!(with, without);
}

#[test]
fn a_plan_made_once_answers_each_window_on_its_own_rows() {
    // A join and aggregates: operators that would answer from the last
    // window's rows if their state were not reset between runs.
    let sql = "WITH f AS (SELECT src_ip, count(*) AS n FROM alerts WHERE rule_id = 5716 GROUP BY src_ip) \
               SELECT a.src_ip, max(f.n) AS n, array_agg(a.alert_id) AS alert_ids \
               FROM f JOIN alerts a ON a.src_ip = f.src_ip WHERE a.rule_id = 5715 GROUP BY a.src_ip";
    let window = r#"{ kind = "tumbling", size = "10m" }"#;
    let first: Vec<String> = (0..4).map(|i| line("acme", i, 1.0 + i as f64, "192.0.2.1", i < 3)).collect();
    let second: Vec<String> = (0..4).map(|i| line("acme", 10 + i, 11.0 + i as f64, "192.0.2.2", i < 3)).collect();
    let detections = |lines: &[String]| -> Vec<String> {
        run(vec![rule(sql, window)], lines, 3, None).into_iter().filter(|o| o.starts_with("detect")).collect()
    };
    let (a, b) = (detections(&first), detections(&second));
    assert_eq!((a.len(), b.len()), (1, 1), "{a:?} {b:?}");
    let both = detections(&[first, second].concat());
    assert_eq!(both, [a, b].concat(), "one engine over both windows = a fresh engine per window");
}

#[test]
fn windows_copy_only_the_columns_their_rules_read_and_detect_the_same() {
    let engine = Engine::new(&[]).unwrap();
    let window = r#"{ kind = "tumbling", size = "10m" }"#;
    let reads = |sql: &str| {
        let reads = compile_all(&engine, vec![rule(sql, window)]).unwrap().remove(0).reads;
        let schema = engine.schema();
        reads.map(|r| r.iter().map(|&i| schema.field(i).name().clone()).collect::<Vec<_>>())
    };
    assert_eq!(reads(COUNT), Some(vec!["rule_id".to_string(), "src_ip".to_string()]));
    // The JSON of the record is a column like the others.
    let json = "SELECT src_ip, count(*) AS n FROM alerts \
                WHERE json_get_str(raw, 'data', 'dstuser') = 'root' AND rule_id = 5715 GROUP BY src_ip";
    let json_reads = reads(json).expect("a projected scan");
    assert!(json_reads.contains(&"raw".to_string()) && !json_reads.contains(&"full_log".to_string()));
    let every = reads("SELECT * FROM alerts WHERE rule_id = 5716");
    assert!(every.as_ref().is_none_or(|r| r.len() == engine.schema().fields().len()), "{every:?}");
    // Rules that read different columns, run together, find what each
    // finds alone: no rule sees another's blanks.
    let lines = stream();
    let (a, b) = (rule(COUNT, window), named(rule(json, window), "json"));
    let alone: Vec<String> = [run(vec![a.clone()], &lines, 7, None), run(vec![b.clone()], &lines, 7, None)]
        .concat()
        .into_iter()
        .filter(|o| o.starts_with("detect"))
        .collect();
    let mut together: Vec<String> =
        run(vec![a, b], &lines, 7, None).into_iter().filter(|o| o.starts_with("detect")).collect();
    assert!(together.iter().any(|d| d.contains(":json:")), "{together:?}");
    let mut alone = alone;
    alone.sort();
    together.sort();
    assert_eq!(together, alone);
}

#[test]
fn a_rule_loaded_later_never_reads_a_column_no_rule_kept_before() {
    let window = r#"{ kind = "tumbling", size = "10m" }"#;
    let sql = "SELECT src_ip, count(*) AS n FROM alerts WHERE dst_user IS NULL AND rule_id = 5716 GROUP BY src_ip";
    let no_user = named(rule(sql, window), "no-user");
    let fired = |out: &[String]| out.iter().filter(|o| o.starts_with("detect:no-user")).count();
    // The rule works: it fires on failures without a user.
    let without_users: Vec<String> = stream().iter().map(|l| l.replace(r#","dstuser":"root""#, "")).collect();
    assert!(without_users[0] != stream()[0]);
    assert!(fired(&run(vec![no_user.clone()], &without_users, 7, None)) > 0);
    // Every alert here has a user. Loaded mid-window, the rule must not
    // take the rows buffered before it, whose user column no rule read
    // (and so was left blank), for rows without one.
    let out = run_with(vec![rule(COUNT, window)], &stream(), 7, None, Some((5, vec![rule(COUNT, window), no_user])));
    assert_eq!(fired(&out), 0, "{out:?}");
}

#[test]
fn the_guards_of_a_query_are_the_scans_its_result_cannot_do_without() {
    let engine = Engine::new(&[]).unwrap();
    let guards = |sql: &str| -> Vec<(usize, String)> {
        let r = rule(sql, r#"{ kind = "tumbling", size = "1h" }"#);
        compile_all(&engine, vec![r]).unwrap().remove(0).guards.into_iter().map(|g| (g.min_rows, g.text)).collect()
    };
    let count = guards(COUNT);
    assert_eq!(count.len(), 1, "{count:?}");
    assert!(count[0].0 == 3 && count[0].1.contains("5716"), "HAVING count(*) >= 3 needs three rows: {count:?}");
    // An inner join needs both sides, one row each.
    let inner = guards(
        "SELECT f.src_ip FROM alerts f JOIN alerts a ON a.src_ip = f.src_ip WHERE f.rule_id = 5716 AND a.rule_id = 5715",
    );
    assert_eq!(inner.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 1], "{inner:?}");
    assert!(inner.iter().any(|g| g.1.contains("5716")) && inner.iter().any(|g| g.1.contains("5715")), "{inner:?}");
    // An outer join needs only the side it keeps.
    let left = guards(
        "SELECT f.src_ip, max(a.alert_id) AS seen FROM alerts f LEFT JOIN alerts a \
         ON a.src_ip = f.src_ip AND a.rule_id = 5715 WHERE f.rule_id = 5716 GROUP BY f.src_ip",
    );
    assert!(left.len() == 1 && left[0].1.contains("5716"), "{left:?}");
    // A global aggregate answers a row even over no rows.
    assert_eq!(guards("SELECT count(*) AS n, max(src_ip) AS src_ip FROM alerts WHERE rule_id = 5716"), []);
    // A disjunction needs the least of its terms; a distinct count is at
    // most the number of rows.
    let either = guards(
        "SELECT src_ip FROM alerts WHERE rule_id = 5716 GROUP BY src_ip \
         HAVING (count(DISTINCT dst_user) >= 4 AND max(rule_level) > 3) OR count(*) > 9",
    );
    assert_eq!(either.iter().map(|g| g.0).collect::<Vec<_>>(), [4], "{either:?}");
    // A union needs neither branch on its own.
    let union = guards(
        "SELECT src_ip FROM alerts WHERE rule_id = 5716 UNION ALL SELECT src_ip FROM alerts WHERE rule_id = 5715",
    );
    assert_eq!(union, []);
    // A table function reads no alerts: it has no test, no guard, and does
    // not stop the alerts scan from having both.
    let engine_rule = |sql: &str| {
        let r = rule(sql, r#"{ kind = "tumbling", size = "1h" }"#);
        compile_all(&engine, vec![r]).unwrap().remove(0)
    };
    let series = engine_rule(
        "SELECT a.src_ip, g.value FROM alerts a CROSS JOIN generate_series(1, 3) g WHERE a.rule_id = 5716 AND g.value > 1",
    );
    let prefilter = series.prefilter_text.expect("the alerts scan is filtered");
    assert!(prefilter.contains("5716") && !prefilter.contains("value"), "{prefilter}");
    assert!(series.guards.len() == 1 && series.guards[0].text.contains("5716"), "{:?}", series.guards);
}

#[test]
fn a_window_its_guards_rule_out_is_not_evaluated_and_nothing_is_missed() {
    // Failures then a success, as in `stream`, then an hour of successes
    // alone: those windows cannot match.
    let mut lines = stream();
    lines.extend((0..60).map(|i| line("acme", 200 + i, 120.0 + i as f64, "203.0.113.7", false)));
    let sql = "WITH f AS (SELECT src_ip, count(*) AS n, min(event_time) AS first FROM alerts \
               WHERE rule_id = 5716 GROUP BY src_ip HAVING count(*) >= 3) \
               SELECT a.src_ip, max(f.n) AS n, array_agg(a.alert_id) AS alert_ids \
               FROM f JOIN alerts a ON a.src_ip = f.src_ip AND a.event_time > f.first \
               WHERE a.rule_id = 5715 GROUP BY a.src_ip";
    // The same query in a union with a branch that never matches: no
    // guards, so every window is evaluated.
    let unguarded = format!(
        "{sql} UNION ALL SELECT src_ip, 0 AS n, array_agg(alert_id) AS alert_ids FROM alerts WHERE rule_id = 1 GROUP BY src_ip"
    );
    let window = r#"{ kind = "hopping", size = "20m", slide = "10m" }"#;
    for batch in [7, 50] {
        let (guarded, g) = run_stats(vec![rule(sql, window)], &lines, batch, None, None);
        let (every, e) = run_stats(vec![rule(&unguarded, window)], &lines, batch, None, None);
        let (g, e) = (&g["test"], &e["test"]);
        assert!(guarded.iter().any(|o| o.starts_with("detect")), "{guarded:?}");
        assert_eq!(guarded, every, "the same detections at batch {batch}");
        assert_eq!(g.windows, e.windows);
        assert_eq!(e.evaluated, e.windows, "without guards every window with rows runs");
        assert!(g.evaluated + 6 <= e.evaluated, "the hour of successes alone runs no SQL: {g:?} against {e:?}");
    }
}

/// A hopping window reuses the rows of each slide gathered for the window
/// before; a row that arrives behind the clock (late, but buffered) in a
/// slide already gathered still counts in the windows still to come.
#[test]
fn a_late_row_counts_in_the_hopping_windows_still_open_over_its_slide() {
    let rules = vec![rule(&COUNT.replace(">= 3", ">= 5"), r#"{ kind = "hopping", size = "30m", slide = "10m" }"#)];
    let mut lines = Vec::new();
    // Four failures from .9 in the slide [10:20, 10:30).
    lines.extend((21..25).map(|m| line("a", m, m as f64, "10.0.0.9", true)));
    // Five from .7 in [10:30, 10:40): the window [10:10, 10:40) has rows
    // enough to be evaluated, and gathers the slides it reads.
    lines.extend((31..36).map(|m| line("a", m, m as f64, "10.0.0.7", true)));
    // The clock passes 10:40: that window closes.
    lines.push(line("a", 45, 45.0, "10.0.0.1", false));
    // A fifth failure from .9 at 10:26, behind the clock: [10:20, 10:50) holds it.
    lines.push(line("a", 26, 26.0, "10.0.0.9", true));
    lines.push(line("a", 75, 75.0, "10.0.0.1", false));
    let out = run(rules.clone(), &lines, 1, None);
    for batch in [2, 3, 100] {
        assert_eq!(run(rules.clone(), &lines, batch, None), out, "batch size {batch}");
    }
    let detections: Vec<&String> = out.iter().filter(|o| o.starts_with("detect")).collect();
    let end = |m: i64| (1_793_527_200_000 + m * 60_000).to_string();
    assert!(detections.contains(&&format!("detect:test:a:10.0.0.7:{}", end(40))), "{detections:?}");
    assert!(detections.contains(&&format!("detect:test:a:10.0.0.9:{}", end(50))), "{detections:?}");
}
