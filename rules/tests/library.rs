//! The shipped rules as data: each `rules/library/<rule>.toml` (or `.yml`,
//! a Sigma correlation) has a
//! `<rule>/positive.ndjson` that must fire (its detections are compared to
//! `<rule>/expected.txt`) and a `<rule>/negative.ndjson`, the near miss, that
//! must not. `SLUICE_BLESS=1 cargo test -p sluice-rules --test library`
//! rewrites the expected files for review; `rules/library/fixtures.py`
//! writes the fixtures.

use std::path::{Path, PathBuf};

use sluice_operators::decode::{DecodeConfig, TenantConfig};
use sluice_rules::workbench::{detection_line, run_file};
use sluice_rules::{Engine, Limits, compile_all, library};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("library")
}

fn run(rule: &str, fixture: &str) -> Vec<String> {
    let engine = Engine::new(&[]).unwrap();
    let rules: Vec<_> = library::rules(Limits::default()).unwrap().into_iter().filter(|r| r.name == rule).collect();
    assert_eq!(rules.len(), 1, "rule {rule} is in the library");
    let compiled = compile_all(&engine, rules).unwrap_or_else(|e| panic!("{rule}: {e:?}"));
    let path = dir().join(rule).join(fixture);
    let report = run_file(engine, compiled, &path, DecodeConfig::default(), &TenantConfig::default(), 30_000).unwrap();
    assert_eq!(report.dead_letters, 0, "{}: every fixture alert decodes", path.display());
    report.detections.iter().map(detection_line).collect()
}

fn stem(file: &str) -> &str {
    file.rsplit_once('.').map_or(file, |(stem, _)| stem)
}

#[test]
fn every_shipped_rule_fires_on_its_positive_fixture_as_expected_and_not_on_its_negative() {
    let bless = std::env::var("SLUICE_BLESS").is_ok_and(|v| v == "1");
    let mut failures = Vec::new();
    for (file, _) in library::FILES {
        let rule = stem(file);
        let got = run(rule, "positive.ndjson");
        if got.is_empty() {
            failures.push(format!("{rule}: no detection on its positive fixture"));
        }
        let expected_path = dir().join(rule).join("expected.txt");
        let text = got.iter().map(|l| format!("{l}\n")).collect::<String>();
        if bless {
            std::fs::write(&expected_path, &text).unwrap();
        } else {
            let want = std::fs::read_to_string(&expected_path).unwrap_or_default();
            if want != text {
                failures.push(format!("{rule}: detections differ from expected.txt\n  got:\n{text}  want:\n{want}"));
            }
        }
        let negative = run(rule, "negative.ndjson");
        if !negative.is_empty() {
            failures.push(format!("{rule}: fired on its negative fixture: {negative:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_library_lists_every_rule_file_and_every_rule_has_fixtures() {
    let mut on_disk: Vec<String> = std::fs::read_dir(dir())
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|f| f.ends_with(".toml") || f.ends_with(".yml"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = library::FILES.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(listed, on_disk, "rules/src/library.rs lists exactly the files of rules/library/");
    for f in &listed {
        let rule = stem(f);
        for fixture in ["positive.ndjson", "negative.ndjson", "expected.txt"] {
            assert!(dir().join(rule).join(fixture).exists(), "{rule} has no {fixture}");
        }
    }
    assert!(listed.len() >= 16, "the library has {} rules", listed.len());
    let sigma = listed.iter().filter(|f| f.ends_with(".yml")).count();
    assert!(sigma >= 3, "the library has {sigma} Sigma correlation rules");
}
