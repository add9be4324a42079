#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine: installs what the tests need when
# it is missing, then runs every test. `.ci/run` calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs)" >&2
  exit 2
fi

# The LDAP tests start their own private slapd (Debian: slapd, ldap-utils; openssl makes the
# test CA); the metrics and alert tests use promtool (Debian: prometheus); the container test
# builds and runs the image with buildah and podman on runc (crun cannot run containers here);
# the systemd test runs systemd-analyze (Debian: systemd). Install them when missing; root
# installs directly, others through sudo.
need=()
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null 2>&1 || need+=(ldap-utils)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if ((${#need[@]})); then
  echo "installing ${need[*]} for the LDAP and metrics tests" >&2
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "need ${need[*]} (Debian packages) and neither root nor sudo is available: install them first" >&2
      exit 2
    fi
    sudo=(sudo)
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Kubernetes manifests are validated offline against the API schemas that
# kubernetes-validate (PyPI) bundles.
if ! python3 -c "import kubernetes_validate" >/dev/null 2>&1; then
  echo "installing kubernetes-validate (PyPI) for the Kubernetes manifest test" >&2
  python3 -m pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
fi
# A test binary killed hard (a timeout) cannot stop its private slapd: clear leftovers.
for pidfile in "${TMPDIR:-/tmp}"/bbsync-slapd-*/slapd.pid; do
  [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
done

# rustfmt and clippy come with rustup's default profile but not with every install.
for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    rustup component add "$component"
  fi
done

# Lints first: a formatting or clippy finding fails fast, before the long test build.
cargo fmt --all -- --check
cargo clippy --locked --all-targets --workspace -- -D warnings
cargo test --locked --workspace
