#!/usr/bin/env python3
"""Writes the seed inputs of each fuzz target into corpus/<target>/seed-*.

Seeds come from the demo snapshot, the test fixtures and the built-in role
catalog, plus hand-written edge cases. Run from anywhere; re-running
rewrites the same files. The fuzzers' own finds sit beside the seeds.
"""

import hashlib
import json
import re
from pathlib import Path

FUZZ = Path(__file__).resolve().parent
ROOT = FUZZ.parent
CORPUS = FUZZ / "corpus"

SUB = "/subscriptions/11111111-1111-1111-1111-111111111111"


def write(target: str, data: bytes) -> None:
    out = CORPUS / target
    out.mkdir(parents=True, exist_ok=True)
    name = "seed-" + hashlib.sha1(data).hexdigest()[:16]
    (out / name).write_bytes(data)


def snapshot_texts() -> list[str]:
    texts = [(ROOT / "src/snapshot/demo.yaml").read_text()]
    texts += [p.read_text() for p in sorted((ROOT / "tests/fixtures").glob("*.yaml"))]
    return texts


def scopes() -> list[str]:
    found = set()
    for text in snapshot_texts():
        found.update(re.findall(r"(/(?:subscriptions|providers)/[^\s,\]\"']+)", text))
    found.update(
        [
            "/",
            SUB,
            f"{SUB}/resourceGroups/rg-app",
            f"{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1",
            f"{SUB}/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm1"
            "/providers/Microsoft.Authorization/roleAssignments/ra1",
            f"{SUB}/providers/Microsoft.Authorization/roleDefinitions/r1",
            "/providers/Microsoft.Management/managementGroups/contoso",
            "/providers/Microsoft.Management/managementGroups/contoso/providers/Microsoft.Authorization/roleAssignments/x",
            "/providers/Microsoft.Capacity",
            "/providers/Microsoft.Capacity/reservationOrders/o-1",
            "/SUBSCRIPTIONS/abc/RESOURCEGROUPS/RG",
            "/subscriptions/",
            "/subscriptions//resourceGroups/x",
            "/subscriptions/s/resourceGroups",
            "/subscriptions/s/providers/Microsoft.Web",
            "/subscriptions/s/providers/Microsoft.Web/sites",
        ]
    )
    return sorted(found)


def role_patterns() -> list[str]:
    roles = json.loads((ROOT / "src/snapshot/catalog/builtin-roles.json").read_text())
    patterns = set()
    for role in roles if isinstance(roles, list) else roles.get("roles", []):
        for block in role.get("permissions", []):
            for key in ("actions", "notActions", "dataActions", "notDataActions"):
                patterns.update(block.get(key, []))
    return sorted(patterns)


def conditions() -> list[str]:
    found = set()
    catalog = (ROOT / "src/snapshot/catalog/builtin-roles.json").read_text()
    found.update(json.loads(f'"{c}"') for c in re.findall(r'"condition":\s*"((?:[^"\\]|\\.)*)"', catalog))
    for text in snapshot_texts():
        found.update(re.findall(r'condition:\s*"([^"]*)"', text))
    source = (ROOT / "src/model/condition.rs").read_text()
    found.update(re.findall(r'"((?:@|!|\(|NOT |ActionMatches)[^"]*)"', source))
    found.update(
        [
            "@Request[x] StringLike 'Al*-0?'",
            "@Request[n] NumericLessThanEquals 43.5",
            "@Request[t] DateTimeGreaterThanEquals '2025-12-31T23:59:59.0Z'",
            "@Environment[UtcNow] DateTimeLessThan '2030-01-01T00:00:00Z'",
            "@Request[b] BoolNotEquals false",
            "@Request[g] GuidNotEquals {8e3af657-a8ff-443c-a75c-2fe8c4bcb635}",
            "SubOperationMatches{'Blob.List'}",
            "@Request[r] ForAllOfAllValues:StringNotEqualsIgnoreCase {'a', 'c'}",
            "@Request[r] ForAnyOfAllValues:StringStartsWithIgnoreCase {'A', 'b'}",
            "((a StringEquals b) AND (c StringNotLike 'd*')) OR (!(ActionMatches{'*/read'}))",
            "(" * 70 + "@Request[a] StringEquals 'x'" + ")" * 70,
            "!" * 70 + "@Request[a] StringEquals 'x'",
        ]
    )
    return sorted(c for c in found if c)


def operations() -> list[str]:
    patterns = role_patterns()
    seeds = [
        "*\nMicrosoft.Compute/virtualMachines/read",
        "Microsoft.Compute/*\nMicrosoft.Compute/virtualMachines/read\nmicrosoft.compute",
        "*/read\nMicrosoft.Storage/storageAccounts/READ\nx/y/read/",
        "Microsoft.*/*/read\nMicrosoft.Web/sites/read\nMicrosoft/read",
        "a*b*c\nabc\naXbYc\nab\nabcabc",
        "a*a\na\naa\naaa",
        "**\n",
        "*a**b*\nab\nba",
        "Microsoft.Authorization/roleAssignments/write\nmicrosoft.authorization/roleassignments/WRITE",
        "x\na/b/c\na//c\n/a/b/c\na/b/c/\na/b\na b/c/d\na/b/*",
    ]
    for i in range(0, len(patterns), 7):
        seeds.append("\n".join(patterns[i : i + 7] + [p.replace("*", "x") for p in patterns[i : i + 7]]))
    return seeds


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_string(number: int, value: str) -> bytes:
    data = value.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_bool(number: int, value: bool) -> bytes:
    return varint(number << 3) + varint(int(value)) if value else b""


def authorize_request(principal, action, scope, data_action=False, attributes=(), explain=False, dry_run=False) -> bytes:
    out = field_string(1, principal) + field_string(2, action) + field_string(3, scope)
    out += field_bool(4, data_action)
    for k, v in attributes:
        entry = field_string(1, k) + field_string(2, v)
        out += varint(5 << 3 | 2) + varint(len(entry)) + entry
    return out + field_bool(6, explain) + field_bool(7, dry_run)


def authorize_seeds() -> list[bytes]:
    rg_ai = f"{SUB}/resourceGroups/rg-ai/providers/Microsoft.CognitiveServices/accounts/foundry-contoso"
    role = "Microsoft.Authorization/roleAssignments:RoleDefinitionId"
    requests = [
        ("it-admin", "Microsoft.Resources/subscriptions/read", SUB),
        ("it-admin", "Microsoft.CognitiveServices/accounts/delete", rg_ai, False, (), True),
        ("developer", "Microsoft.CognitiveServices/accounts/read", rg_ai + "/projects/proj-chat", False, (), True),
        ("agent-consumer", "Microsoft.CognitiveServices/accounts/AIServices/agents/read", rg_ai + "/projects/proj-chat", True),
        ("sre-agent-mi", "Microsoft.Compute/virtualMachines/restart/action", f"{SUB}/resourceGroups/rg-app", False, (), True),
        ("sre-agent-mi", "Microsoft.Compute/virtualMachines/read", f"{SUB}/resourceGroups/rg-app", False, (), False, True),
        ("oncall", "Microsoft.Authorization/roleAssignments/write", f"{SUB}/resourceGroups/rg-app", False,
         ((role, "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"),), True),
        ("nobody", "a/b/c", "/"),
        ("", "", ""),
        ("it-admin", "Microsoft.Compute/*/read", SUB),
        ("it-admin", "Microsoft.Compute/virtualMachines/read", "/subscriptions/"),
        ("00000000-0000-0000-0000-000000000000", "x/y/read", "/providers/Microsoft.Management/managementGroups/contoso"),
    ]
    seeds = [bytes([i]) + authorize_request(*r) for i, r in enumerate(requests)]
    # The same requests as plain protobuf from their first byte.
    seeds += [authorize_request(*r) for r in requests]
    return seeds


def mapping_seeds() -> list[bytes]:
    paths = [
        f"{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1",
        f"{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1/restart?api-version=2024-03-01",
        f"{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines",
        f"{SUB}/resourceGroups/rg-app/providers/Microsoft.Compute/virtualMachines/vm1/providers/Microsoft.Authorization/roleAssignments/ra",
        f"{SUB}/resourcegroups",
        f"{SUB}/providers/Microsoft.Compute/register",
        f"{SUB}/tagNames/env/tagValues/prod",
        f"{SUB}/resourceGroups/rg/providers/Microsoft.Web/sites/app/config/appsettings/list",
        f"{SUB}/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/st/listKeys",
        f"{SUB}/resourceGroups/rg/providers/Microsoft.Resources/deployments/d/validate",
        "/providers/Microsoft.Management/managementGroups/mg-1",
        "/providers/Microsoft.Management/managementGroups/mg/providers/Microsoft.Authorization/roleAssignments/x",
        "/providers/Microsoft.Capacity/reservationOrders/o-1",
        "/providers",
        "/subscriptions",
        "/tenants",
        "/",
        f"{SUB}//resourceGroups/rg",
        f"{SUB}/resourceGroups/a%20b/x.",
        f"{SUB}/resourceGroups/%41",
        f"{SUB}/resourceGroups/rg#frag",
        f"{SUB}/resourceGroups/./rg",
        "/api/orders/42",
    ]
    seeds = []
    for i, path in enumerate(paths):
        seeds.append(bytes([(i % 6) << 1]) + path.encode())
    # Structured mode: the bytes drive route and path choices.
    for i in range(12):
        seeds.append(bytes([(i % 6) << 1 | 1]) + hashlib.sha256(bytes([i])).digest() * 4)
    return seeds


def main() -> None:
    for s in scopes():
        write("scope", s.encode())
    for o in operations():
        write("operation", o.encode())
    for c in conditions():
        write("condition", c.encode())
    for text in snapshot_texts():
        write("snapshot", text.encode())
    for p in sorted((ROOT / "tests/fixtures/azure").glob("*.json")):
        write("snapshot", p.read_bytes())
    write("snapshot", b"{}")
    write("snapshot", json.dumps({"revision": "r", "principals": [{"id": "u", "type": "User"}],
                                  "roleAssignments": [{"id": "a", "principal": "u", "role": "Reader", "scope": "/"}]}).encode())
    for a in authorize_seeds():
        write("authorize", a)
    for m in mapping_seeds():
        write("arm_mapping", m)


if __name__ == "__main__":
    main()
