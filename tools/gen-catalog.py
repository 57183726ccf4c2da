#!/usr/bin/env python3
"""Regenerate src/catalog/builtin-roles.json from Azure's published role
definitions (../shared/catalog/azure-builtin-roles.json in the workspace).

The embedded file keeps the facts rampart needs (id, name, earlier names,
permission blocks with conditions verbatim, assignable scopes, category),
one role per line so diffs stay readable. Descriptions are left out: the
published text is Microsoft's; rampart's own words can be added per role.
"""
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent.parent
src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else here.parent / "shared/catalog/azure-builtin-roles.json")
roles = json.loads(src.read_text())
out = []
for r in sorted(roles, key=lambda r: r["roleName"].lower()):
    blocks = []
    for p in r["permissions"]:
        b = {k: p.get(k, []) for k in ("actions", "notActions", "dataActions", "notDataActions")}
        if p.get("condition"):
            b["condition"] = p["condition"]
            b["conditionVersion"] = p.get("conditionVersion", "2.0")
        blocks.append(b)
    out.append({
        "id": r["id"],
        "roleName": r["roleName"],
        "aliases": r.get("aliases", []),
        "category": r.get("category", ""),
        "permissions": blocks,
        "assignableScopes": r["assignableScopes"],
    })
lines = ",\n".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False) for r in out)
(here / "src/catalog/builtin-roles.json").write_text("[\n" + lines + "\n]\n")
print(f"wrote {len(out)} roles")
