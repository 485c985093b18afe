#!/usr/bin/env python3
"""How often would verdict priors fire on the generated scenario?

For each pair of seeds (A, B): run Sluice on both streams (case files with
members), treat every escalated cluster of A without a campaign alert as
judged false positive (a prior on its signature), and count in B how many
false-positive escalations a prior matches, and how many campaign
escalations it would wrongly lower. Also tries coarser signatures (only
rules at or above a level) to show the trade-off.

    cargo build --release
    python3 benches/priors_recurrence.py [SEEDS...]   # default 42 43 7 2026
"""
import json, os, subprocess, sys, tempfile

SLUICE = os.path.join(os.path.dirname(__file__), "..", "target", "release", "sluice")
seeds = [int(s) for s in sys.argv[1:]] or [42, 43, 7, 2026]
work = tempfile.mkdtemp(prefix="sluice-priors-")


def cases(seed):
    alerts = os.path.join(work, f"g{seed}.json")
    out = os.path.join(work, f"c{seed}.ndjson")
    if not os.path.exists(out):
        subprocess.run([SLUICE, "generate", "--seed", str(seed), "--output", alerts], check=True, capture_output=True)
        subprocess.run([SLUICE, "run", "--format", "quiet", "--members", "--input", alerts, "--output", out],
                       check=True, capture_output=True, cwd=work)
    labelled = {json.loads(l)["alert_id"] for l in open(alerts + ".labels.ndjson")}
    for line in open(out):
        c = json.loads(line)
        if c["kind"] == "escalate":
            yield c, any(m in labelled for m in c.get("members") or [])


def signature(c, min_level):
    if min_level == 0:
        return c["tenant"], c["signature"]
    rules = tuple(sorted(r["rule_id"] for r in c["rules"] if r["level"] >= min_level))
    return c["tenant"], rules, tuple(sorted(c["entities"])), tuple(sorted(d["rule"] for d in c.get("detections", [])))


data = {s: list(cases(s)) for s in seeds}
pairs = list(zip(seeds, seeds[1:] + seeds[:1]))
print(f"seed pairs {pairs}")
for min_level in (0, 6, 8, 10):
    covered = fps = hit = tps = 0
    for a, b in pairs:
        priors = {signature(c, min_level) for c, campaign in data[a] if not campaign}
        for c, campaign in data[b]:
            if campaign:
                tps += 1
                hit += signature(c, min_level) in priors
            else:
                fps += 1
                covered += signature(c, min_level) in priors
    name = "Sluice's signature" if min_level == 0 else f"rules at level >= {min_level}"
    print(f"{name:28} false positives matched {covered}/{fps}; campaign escalations matched {hit}/{tps}")
