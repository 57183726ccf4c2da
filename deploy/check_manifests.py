#!/usr/bin/env python3
"""What a schema cannot see: checks the rendered base and admin-tls overlay
for the properties deploy/README.md promises (native sidecar, gRPC probes,
security context, resources, mounts, NetworkPolicy ports, the overlay's TLS
flags and Service, and the fleet overlay's shared database from a Secret
and central admin-only rampart). Run by deploy/check.sh as

    check_manifests.py BASE.yaml OVERLAY.yaml TOKENS.yaml SNAPSHOT.yaml [FLEET.yaml]

and exits non-zero listing every failed check."""

import re
import sys

import yaml

HEALTH, AUTHORIZER, ADMIN = 50053, 50051, 50052
UID = 65532
# Secrets that the manifests mount but leave to the operator (cert-manager).
EXTERNAL_SECRETS = {"rampart-admin-tls"}

problems = []


def check(cond, what):
    if not cond:
        problems.append(what)
    return cond


def load(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(docs, kind, name, where):
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    check(len(found) == 1, f"{where}: expected one {kind}/{name}, found {len(found)}")
    return found[0] if found else None


def flag(args, name):
    """The value after `name` in an argument list, or None."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def mount_for(container, volumes, path):
    """(mount, volume) of the volume mount that contains `path`."""
    best = None
    for m in container.get("volumeMounts", []):
        mp = m["mountPath"].rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best["mountPath"].rstrip("/")):
                best = m
    if best is None:
        return None, None
    return best, volumes.get(best["name"])


def check_container_hardening(c, where):
    sc = c.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True, f"{where}: runAsNonRoot must be true")
    check(sc.get("runAsUser") == UID, f"{where}: runAsUser must be {UID}")
    check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem must be true")
    check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation must be false")
    check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: capabilities must drop ALL")
    check(not sc.get("capabilities", {}).get("add"), f"{where}: no capabilities may be added")
    check(sc.get("privileged") in (None, False), f"{where}: must not be privileged")
    check(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", f"{where}: seccompProfile must be RuntimeDefault")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            check(r in res.get(kind, {}), f"{where}: resources.{kind}.{r} missing")
    for p in c.get("ports", []):
        check("hostPort" not in p, f"{where}: hostPort {p.get('hostPort')} declared")
        check(p.get("containerPort") != AUTHORIZER, f"{where}: the Authorizer port {AUTHORIZER} must not be declared")


def check_render(docs, where, overlay):
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    dep = one(docs, "Deployment", "agent", where)
    if dep is None:
        return
    pod = dep["spec"]["template"]["spec"]
    labels = dep["spec"]["template"]["metadata"].get("labels", {})
    sel = dep["spec"]["selector"].get("matchLabels", {})
    check(sel and all(labels.get(k) == v for k, v in sel.items()), f"{where}: Deployment selector does not match its pod labels")
    check(not pod.get("hostNetwork"), f"{where}: hostNetwork must be off")
    check(pod.get("automountServiceAccountToken") is False, f"{where}: automountServiceAccountToken should be false")
    psc = pod.get("securityContext", {})
    check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == UID, f"{where}: pod securityContext must run as non-root {UID}")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}

    # Every mount names a volume; every ConfigMap/Secret volume names an
    # object the render contains (or one left to the operator).
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        for m in c.get("volumeMounts", []):
            check(m["name"] in volumes, f"{where}: container {c['name']} mounts unknown volume {m['name']}")
            v = volumes.get(m["name"], {})
            if "configMap" in v or "secret" in v:
                check("subPath" not in m, f"{where}: {c['name']} mounts {m['name']} with subPath; updates would not propagate")
    for v in volumes.values():
        if "configMap" in v:
            check(("ConfigMap", v["configMap"]["name"]) in names, f"{where}: volume {v['name']} names missing ConfigMap {v['configMap']['name']}")
        if "secret" in v:
            sn = v["secret"]["secretName"]
            check(("Secret", sn) in names or sn in EXTERNAL_SECRETS, f"{where}: volume {v['name']} names missing Secret {sn}")

    # rampart: a native sidecar with gRPC probes on the health port.
    sidecars = [c for c in pod.get("initContainers", []) if c["name"] == "rampart"]
    if not check(len(sidecars) == 1, f"{where}: no initContainer named rampart"):
        return
    r = sidecars[0]
    check(r.get("restartPolicy") == "Always", f"{where}: rampart must be a native sidecar (initContainers[].restartPolicy: Always)")
    check(not any(c["name"] == "rampart" for c in pod.get("containers", [])), f"{where}: rampart must not also be a main container")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        check(r.get(probe, {}).get("grpc", {}).get("port") == HEALTH, f"{where}: rampart {probe} must be grpc on port {HEALTH}")
    check_container_hardening(r, f"{where}: rampart")
    args = r.get("args", [])
    check(args[:1] == ["serve"], f"{where}: rampart args must start with serve")
    check(flag(args, "--listen") == f"127.0.0.1:{AUTHORIZER}", f"{where}: --listen must be 127.0.0.1:{AUTHORIZER}")
    check(flag(args, "--health-listen") == f"0.0.0.0:{HEALTH}", f"{where}: --health-listen must be 0.0.0.0:{HEALTH}")
    check(flag(args, "--log-format") == "json", f"{where}: --log-format must be json")
    for opt, kind in (("--snapshot", "configMap"), ("--tokens", "secret"), ("--state-dir", "emptyDir")):
        path = flag(args, opt)
        if check(path, f"{where}: rampart has no {opt}"):
            m, v = mount_for(r, volumes, path)
            check(v is not None and kind in v, f"{where}: {opt} {path} is not on a {kind} volume")
    check(any(m["mountPath"] == "/tmp" for m in r.get("volumeMounts", [])), f"{where}: rampart needs a writable /tmp")

    agents = [c for c in pod.get("containers", []) if c["name"] == "agent"]
    if check(len(agents) == 1, f"{where}: no container named agent"):
        a = agents[0]
        env = {e["name"]: e.get("value") for e in a.get("env", [])}
        check(env.get("RAMPART_ADDR") == f"127.0.0.1:{AUTHORIZER}", f"{where}: agent env RAMPART_ADDR must be 127.0.0.1:{AUTHORIZER}")
        check_container_hardening(a, f"{where}: agent")

    # NetworkPolicy: ingress only on listed ports; never the Authorizer.
    pols = [d for d in docs if d["kind"] == "NetworkPolicy"]
    selecting = [p for p in pols if all(labels.get(k) == v for k, v in p["spec"]["podSelector"].get("matchLabels", {}).items())]
    if check(selecting, f"{where}: no NetworkPolicy selects the agent pod"):
        allowed = set()
        for p in selecting:
            check("Ingress" in p["spec"].get("policyTypes", []), f"{where}: NetworkPolicy {p['metadata']['name']} must list Ingress in policyTypes")
            for rule in p["spec"].get("ingress", []):
                if check(rule.get("ports"), f"{where}: NetworkPolicy {p['metadata']['name']} has an ingress rule for every port"):
                    allowed |= {pt.get("port") for pt in rule["ports"]}
        want = {HEALTH, ADMIN} if overlay else {HEALTH}
        check(allowed == want, f"{where}: NetworkPolicy ingress ports are {sorted(allowed, key=str)}, want {sorted(want)}")

    admin = flag(args, "--admin-listen")
    if not overlay:
        check(admin == f"127.0.0.1:{ADMIN}", f"{where}: base --admin-listen must stay on loopback")
        check(not any(d["kind"] == "Service" for d in docs), f"{where}: the base exposes no Service")
        return

    # Overlay: admin on the pod IP with TLS, and a Service for it.
    check(admin == f"0.0.0.0:{ADMIN}", f"{where}: --admin-listen must be 0.0.0.0:{ADMIN}")
    check("--insecure" not in args, f"{where}: --insecure must not be set")
    for opt, key in (("--tls-cert", "tls.crt"), ("--tls-key", "tls.key"), ("--admin-client-ca", "ca.crt")):
        path = flag(args, opt)
        if check(path and path.endswith("/" + key), f"{where}: {opt} must point at {key}"):
            m, v = mount_for(r, volumes, path)
            check(v is not None and v.get("secret", {}).get("secretName") == "rampart-admin-tls",
                  f"{where}: {opt} {path} is not on the rampart-admin-tls Secret")
    ports = {p.get("name"): p["containerPort"] for p in r.get("ports", [])}
    svc = one(docs, "Service", "rampart-admin", where)
    if svc:
        ssel = svc["spec"].get("selector", {})
        check(ssel and all(labels.get(k) == v for k, v in ssel.items()), f"{where}: Service rampart-admin does not select the agent pod")
        sp = svc["spec"].get("ports", [])
        check(len(sp) == 1 and sp[0]["port"] == ADMIN, f"{where}: Service rampart-admin must expose exactly port {ADMIN}")
        for p in sp:
            tp = p.get("targetPort", p["port"])
            check(ports.get(tp, tp) == ADMIN, f"{where}: Service targetPort {tp} does not reach container port {ADMIN}")
        check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", f"{where}: Service rampart-admin should be ClusterIP")


def check_tokens(tokens_path, snapshot_path):
    tokens = yaml.safe_load(open(tokens_path, encoding="utf-8"))
    snap = yaml.safe_load(open(snapshot_path, encoding="utf-8"))
    ids = {p["id"] for p in snap.get("principals", [])}
    if not check(isinstance(tokens, list) and tokens, f"{tokens_path}: must be a non-empty list"):
        return
    for i, t in enumerate(tokens):
        check(set(t) <= {"sha256", "principal", "admin"}, f"{tokens_path}[{i}]: unknown keys {sorted(set(t) - {'sha256', 'principal', 'admin'})}")
        check(re.fullmatch(r"[0-9a-f]{64}", str(t.get("sha256", ""))), f"{tokens_path}[{i}]: sha256 must be 64 lowercase hex digits")
        check(t.get("principal") in ids, f"{tokens_path}[{i}]: principal {t.get('principal')} is not in {snapshot_path}")
        check(isinstance(t.get("admin", False), bool), f"{tokens_path}[{i}]: admin must be a boolean")


def state_db_from_secret(c, where):
    """The container reads --state-db from the Secret, never from a literal."""
    env = {e["name"]: e for e in c.get("env", [])}
    ref = env.get("RAMPART_STATE_DB", {}).get("valueFrom", {}).get("secretKeyRef", {})
    check(ref.get("name") == "rampart-state-db" and ref.get("key") == "url",
          f"{where}: RAMPART_STATE_DB must come from secretKeyRef rampart-state-db/url")
    check("value" not in env.get("RAMPART_STATE_DB", {}), f"{where}: RAMPART_STATE_DB must not be a literal")
    args = c.get("args", [])
    check(flag(args, "--state-db") is None, f"{where}: the database URL must not be an argument")
    check(flag(args, "--state-dir") is None, f"{where}: --state-dir and the shared database are one or the other")


def check_fleet(docs, where):
    agent = one(docs, "Deployment", "agent", where)
    if agent:
        check(agent["spec"].get("replicas", 1) > 1, f"{where}: the agent runs as several pods")
        spec = agent["spec"]["template"]["spec"]
        sidecar = next((c for c in spec.get("initContainers", []) if c["name"] == "rampart"), None)
        if check(sidecar is not None, f"{where}: the rampart sidecar"):
            state_db_from_secret(sidecar, f"{where}: sidecar")
            check(flag(sidecar["args"], "--admin-listen").startswith("127.0.0.1:"),
                  f"{where}: the sidecars' admin listeners stay on loopback")
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            check(mount_for(sidecar, volumes, "/var/lib/rampart") == (None, None),
                  f"{where}: no state volume on a sidecar of the fleet")
    central = one(docs, "Deployment", "rampart", where)
    if central:
        c = central["spec"]["template"]["spec"]["containers"][0]
        check_container_hardening(c, f"{where}: central rampart")
        state_db_from_secret(c, f"{where}: central rampart")
        args = c.get("args", [])
        check(flag(args, "--listen").startswith("127.0.0.1:"), f"{where}: the central Authorizer stays on loopback")
        check(flag(args, "--admin-listen") == f"0.0.0.0:{ADMIN}", f"{where}: the central admin listener on the pod IP")
        check(flag(args, "--tls-cert") and flag(args, "--tls-key"), f"{where}: the central admin listener has TLS")
        check(central["spec"].get("replicas", 1) == 1,
              f"{where}: one central rampart (it sends the notifications)")
    service = one(docs, "Service", "rampart-admin", where)
    if service:
        check(service["spec"]["selector"] == {"app.kubernetes.io/name": "rampart"},
              f"{where}: rampart-admin selects the central rampart")
        check([p["port"] for p in service["spec"]["ports"]] == [ADMIN],
              f"{where}: rampart-admin exposes only the admin port")


def main():
    base, overlay, tokens, snapshot = sys.argv[1:5]
    check_render(load(base), "base", overlay=False)
    check_render(load(overlay), "overlays/admin-tls", overlay=True)
    check_tokens(tokens, snapshot)
    if len(sys.argv) > 5:
        check_fleet(load(sys.argv[5]), "overlays/fleet")
    for p in problems:
        print(f"FAIL {p}")
    if problems:
        sys.exit(1)
    print("manifest checks passed")


if __name__ == "__main__":
    main()
