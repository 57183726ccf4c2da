#!/usr/bin/env python3
"""Writes snapshots built to exhaust the snapshot loader, for measuring by hand.

    python3 fuzz/probes.py /tmp/probes
    /usr/bin/time -v target/debug/rampart validate /tmp/probes/aliases-1g.yaml

Not part of any corpus: what they cost is a property of the loader's bounds.
"""

import sys
from pathlib import Path


def aliases(string_bytes: int, per_list: int, roles: int) -> str:
    """YAML aliases multiplying one string: a list of `per_list` aliases to
    it, then `roles` role definitions whose actions alias that list. The
    file is tens of kilobytes; deserialized, the strings take
    string_bytes * per_list * roles bytes."""
    lines = [f"revision: &s {'x' * string_bytes}", "roleDefinitions:"]
    items = ", ".join(["*s"] * per_list)
    lines.append(f"  - {{id: r0, roleName: r0, permissions: [{{actions: &l [{items}]}}]}}")
    for i in range(1, roles):
        lines.append(f"  - {{id: r{i}, roleName: r{i}, permissions: [{{actions: *l}}]}}")
    return "\n".join(lines) + "\n"


def nested(depth: int) -> str:
    """Flow sequences nested `depth` deep, where a list of strings goes."""
    return "principals:\n  - {id: p, type: User, memberOf: " + "[" * depth + "]" * depth + "}\n"


def many_keys(count: int) -> str:
    """One principal with `count` attributes."""
    lines = ["principals:", "  - id: p", "    type: User", "    attributes:"]
    lines += [f"      k{i}: v" for i in range(count)]
    return "\n".join(lines) + "\n"


def many_entries(count: int) -> str:
    """`count` principals, each assigned Reader at its own resource group."""
    lines = ["subscriptions: [{id: s}]", "principals:"]
    lines += [f"  - {{id: p{i}, type: User}}" for i in range(count)]
    lines.append("roleAssignments:")
    lines += [
        f"  - {{id: a{i}, principal: p{i}, role: Reader, scope: /subscriptions/s/resourceGroups/rg{i}}}"
        for i in range(count)
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "probes")
    out.mkdir(parents=True, exist_ok=True)
    probes = {
        "aliases-100m.yaml": aliases(1000, 1000, 100),
        "aliases-1g.yaml": aliases(1000, 1000, 1000),
        "aliases-4g.yaml": aliases(4000, 1000, 1000),
        "nested-100.yaml": nested(100),
        "nested-200.yaml": nested(200),
        "nested-100k.yaml": nested(100_000),
        "keys-1m.yaml": many_keys(1_000_000),
        "entries-100k.yaml": many_entries(100_000),
    }
    for name, text in probes.items():
        (out / name).write_text(text)
        print(f"{name}: {len(text)} bytes")


if __name__ == "__main__":
    main()
