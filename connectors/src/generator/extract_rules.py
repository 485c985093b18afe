#!/usr/bin/env python3
"""Extract the Wazuh rules the generator uses from the full rules index.

The generator embeds only the rules it emits (`wazuh-rules.ndjson`, loaded
with include_str!), so the crate builds from a clean clone. The list of rule
ids is read from the USED_RULES block of rules.rs, the one place it lives.

Usage:
    python3 extract_rules.py path/to/wazuh-rules-index.ndjson

Writes wazuh-rules.ndjson next to this script and fails if a used rule is
missing from the index.
"""

import json
import pathlib
import re
import sys

HERE = pathlib.Path(__file__).resolve().parent


def used_rule_ids():
    src = (HERE / "rules.rs").read_text(encoding="utf-8")
    block = re.search(r"// BEGIN USED_RULES(.*?)// END USED_RULES", src, re.S)
    if not block:
        sys.exit("rules.rs has no USED_RULES block")
    body = re.sub(r"//[^\n]*", "", block.group(1))
    body = body.split("=", 1)[1]
    return sorted({int(x.replace("_", "")) for x in re.findall(r"\b[0-9][0-9_]*\b", body)})


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    wanted = set(used_rule_ids())
    found = {}
    with open(sys.argv[1], encoding="utf-8") as index:
        for line in index:
            rule = json.loads(line)
            rid = int(rule["id"])
            if rid in wanted:
                if rid in found:
                    sys.exit(f"rule {rid} appears twice in the index")
                found[rid] = rule
    missing = wanted - found.keys()
    if missing:
        sys.exit(f"rules missing from the index: {sorted(missing)}")
    out = HERE / "wazuh-rules.ndjson"
    with open(out, "w", encoding="utf-8") as f:
        for rid in sorted(found):
            f.write(json.dumps(found[rid], ensure_ascii=False) + "\n")
    print(f"wrote {len(found)} rules to {out}")


if __name__ == "__main__":
    main()
