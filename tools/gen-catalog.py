#!/usr/bin/env python3
"""Regenerate src/snapshot/catalog/builtin-roles.json from Azure's published role
definitions (../shared/catalog/azure-builtin-roles.json in the workspace).

The embedded file keeps the facts rampart needs (id, name, earlier names,
permission blocks with conditions verbatim, assignable scopes, category),
one role per line so diffs stay readable. Descriptions come from the seed
documents' tables (002 for the catalog, 001 for the Foundry roles), not
from the published definitions.
"""
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent.parent
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else here.parent / "shared/catalog/azure-builtin-roles.json")
roles = json.loads(src.read_text())
seeds = src.parent.parent / "seeds"


def seed_descriptions():
    """Role name -> description, from the 'Built-in role Description' tables
    of seed 002 and the role table of seed 001 ('| Role | Description |')."""
    names = sorted({n for r in roles for n in [r["roleName"], *r.get("aliases", [])]}, key=len, reverse=True)
    found = {}
    for path in sorted(seeds.glob("002_*.txt")):
        in_table = False
        for line in path.read_text().splitlines():
            line = line.strip()
            if line == "Built-in role Description":
                in_table = True
            elif not line:
                in_table = False
            elif in_table:
                name = next((n for n in names if line.lower().startswith(n.lower() + " ")), None)
                if name:
                    found.setdefault(name.lower(), line[len(name) + 1:].strip())
    for path in sorted(seeds.glob("001_*.txt")):
        for line in path.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 2 and cells[0].startswith("Foundry ") and cells[1] != "Description":
                found.setdefault(cells[0].lower(), cells[1])
    return found


descriptions = seed_descriptions()
out = []
for r in sorted(roles, key=lambda r: r["roleName"].lower()):
    blocks = []
    for p in r["permissions"]:
        b = {k: p.get(k, []) for k in ("actions", "notActions", "dataActions", "notDataActions")}
        if p.get("condition"):
            b["condition"] = p["condition"]
            b["conditionVersion"] = p.get("conditionVersion", "2.0")
        blocks.append(b)
    description = next(
        (descriptions[n.lower()] for n in [r["roleName"], *r.get("aliases", [])] if n.lower() in descriptions),
        None,
    )
    entry = {
        "id": r["id"],
        "roleName": r["roleName"],
        "aliases": r.get("aliases", []),
        "category": r.get("category", ""),
        "permissions": blocks,
        "assignableScopes": r["assignableScopes"],
    }
    if description:
        entry["description"] = description
    out.append(entry)
lines = ",\n".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in out)
(here / "src/snapshot/catalog/builtin-roles.json").write_text("[\n" + lines + "\n]\n")
print(f"wrote {len(out)} roles, {sum('description' in r for r in out)} with a description from the seeds")
