#!/usr/bin/env python3
"""Runs Sluice's rules with DuckDB over the same `alerts` table, for the
side-by-side benchmark in BENCHMARKS.md ("SQL correlation rules").

    sluice rules bench --input alerts.json --export-table alerts.arrows \\
        --export-sql rules-sql --format json > sluice.json
    python3 benches/rules_duckdb.py --table alerts.arrows --sql rules-sql \\
        --sluice sluice.json

Like `sluice rules bench`, every rule runs once per tenant over all of that
tenant's alerts (one window), and only the queries are timed (loading the
table is not). The SQL is Sluice's, with the few spellings DuckDB does not
share translated (listed in `translate`); the result row counts are printed
beside Sluice's so that a difference in meaning shows. DuckDB runs with
one thread, as each Sluice shard does, and then with every core.

Needs `pip install duckdb pyarrow`.
"""
import argparse
import json
import os
import re
import sys
import time


def json_path(args):
    """'data', 'win', 'eventID' -> '$.data.win.eventID'"""
    keys = [k.strip().strip("'") for k in args.split(",")]
    return "$." + ".".join(keys)


def translate(sql):
    """DataFusion spellings → DuckDB's."""
    # json_get_str / json_as_text(raw, 'a', 'b') → json_extract_string(raw, '$.a.b')
    sql = re.sub(
        r"json_(?:get_str|as_text)\(raw,\s*((?:'[^']*'\s*,?\s*)+)\)",
        lambda m: f"json_extract_string(raw, '{json_path(m.group(1))}')",
        sql,
    )
    # regexp_like(x, 'p') → regexp_matches(x, 'p'); DuckDB takes (?i)/(?s) the same way (RE2).
    sql = sql.replace("regexp_like(", "regexp_matches(")
    # LIKE has no escape character in DuckDB unless one is named.
    sql = re.sub(r"(LIKE\s+'(?:[^']|'')*')", r"\1 ESCAPE '\\'", sql)
    # strpos(text, 'needle') exists in both; array_has as well; TRY_CAST too.
    return sql


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", required=True, help="the Arrow IPC stream from `sluice rules bench --export-table`")
    ap.add_argument("--sql", required=True, help="the directory from `sluice rules bench --export-sql`")
    ap.add_argument("--sluice", help="`sluice rules bench --format json` output, to print side by side")
    ap.add_argument("--runs", type=int, default=1, help="time each query this many times, keep the fastest")
    a = ap.parse_args()

    import duckdb
    import pyarrow as pa
    import pyarrow.compute as pc

    with pa.memory_map(a.table) as source:
        table = pa.ipc.open_stream(source).read_all()
    tenants = sorted(pc.unique(table.column("tenant").cast(pa.string())).to_pylist())
    parts = {t: table.filter(pc.equal(table.column("tenant").cast(pa.string()), t)) for t in tenants}
    rules = sorted(f[:-4] for f in os.listdir(a.sql) if f.endswith(".sql"))
    sluice = {}
    if a.sluice:
        with open(a.sluice) as f:
            doc = json.load(f)
        sluice = {r["rule"]: r for r in doc["rules"]}

    results = {}
    for threads in (1, os.cpu_count() or 1):
        con = duckdb.connect()
        con.execute(f"SET threads = {threads}")
        for rule in rules:
            with open(os.path.join(a.sql, rule + ".sql")) as f:
                sql = translate(f.read())
            best, rows = None, 0
            for _ in range(a.runs):
                elapsed, rows = 0.0, 0
                for t in tenants:
                    con.register("alerts", parts[t])
                    started = time.perf_counter()
                    try:
                        rows += len(con.execute(sql).fetchall())
                    except Exception as e:  # a rule DuckDB cannot run: say so, go on
                        print(f"{rule}: DuckDB: {str(e).splitlines()[0]}", file=sys.stderr)
                        rows = None
                        break
                    elapsed += time.perf_counter() - started
                    con.unregister("alerts")
                if rows is None:
                    break
                best = elapsed if best is None else min(best, elapsed)
            results.setdefault(rule, {})[threads] = (best, rows)
        con.close()

    cores = os.cpu_count() or 1
    print(f"{len(table)} alerts, {len(tenants)} tenants, {len(rules)} rules; DuckDB {duckdb.__version__}")
    print(f"{'rule':<42} {'Sluice ms':>10} {'rows':>5} {'DuckDB 1t ms':>13} {'rows':>5} {f'DuckDB {cores}t ms':>13}")
    total = {"sluice": 0.0, 1: 0.0, cores: 0.0}
    for rule in rules:
        s = sluice.get(rule, {})
        line = f"{rule:<42} {s.get('time_ms', float('nan')):>10.1f} {s.get('rows', '-'):>5}"
        total["sluice"] += s.get("time_ms", 0.0)
        for threads in (1, cores):
            best, rows = results[rule][threads]
            if best is None:
                line += f" {'failed':>13} {'-':>5}" if threads == 1 else f" {'failed':>13}"
                continue
            total[threads] += best * 1e3
            line += f" {best * 1e3:>13.1f} {rows:>5}" if threads == 1 else f" {best * 1e3:>13.1f}"
        print(line)
    print(f"{'total':<42} {total['sluice']:>10.1f} {'':>5} {total[1]:>13.1f} {'':>5} {total[cores]:>13.1f}")


if __name__ == "__main__":
    main()
