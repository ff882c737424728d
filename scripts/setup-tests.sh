#!/usr/bin/env bash
# Installs what the tests need beyond what Jarvis itself needs (scripts/setup.sh),
# idempotently: real tools the tests run against. Called by test.sh; safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

# The Supabase CLI (npm, native binary): real Supabase tooling that mints the
# signing keys and tokens the router's Supabase tests verify.
supabase_version=3.1.0
if [ ! -x "$tools/supabase/node_modules/.bin/supabase" ] ||
   ! "$tools/supabase/node_modules/.bin/supabase" --version 2>/dev/null | grep -qF "$supabase_version"; then
  echo "setup: installing the Supabase CLI $supabase_version"
  npm install --silent --no-audit --no-fund --prefix "$tools/supabase" "supabase@$supabase_version"
fi

# s3s-fs: a real S3-compatible server the router's storage tests start (serves a
# directory over S3). 0.14.1 is the newest release that builds with rustc 1.95;
# built once (about 1.5 min) into .tools/s3s-fs, with its own target dir.
s3s_version=0.14.1
if [ ! -x "$tools/s3s-fs/bin/s3s-fs" ] ||
   ! grep -qF "s3s-fs $s3s_version" "$tools/s3s-fs/.crates.toml" 2>/dev/null; then
  echo "setup: building s3s-fs $s3s_version"
  CARGO_TARGET_DIR="$tools/s3s-fs/target" cargo install --quiet --locked \
    --root "$tools/s3s-fs" "s3s-fs@$s3s_version" --features binary
  rm -rf "$tools/s3s-fs/target"
fi

# Debian's Chromium, for the browser app's end-to-end tests (playwright-core drives
# it; `npx playwright install` cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 ||
      { apt-get update >/dev/null && apt-get install -y --no-install-recommends chromium >/dev/null; }
  else
    echo "setup: chromium is missing; install it with: sudo apt-get install chromium" >&2
  fi
fi

# Debian's PgBouncer: the pooler tests (router/tests/pooler.rs) run the router
# through it in transaction mode, as Supabase's pooler on port 6543.
if ! command -v pgbouncer >/dev/null 2>&1 && [ ! -x /usr/sbin/pgbouncer ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's pgbouncer"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends pgbouncer >/dev/null 2>&1 ||
      { apt-get update >/dev/null && apt-get install -y --no-install-recommends pgbouncer >/dev/null; }
  else
    echo "setup: pgbouncer is missing; install it with: sudo apt-get install pgbouncer" >&2
  fi
fi

# Piper, the neural local voice: the voice tests run it.
"$root/scripts/install-piper.sh"

# The contract check's --ws mode and the run.sh test need Python's websockets.
if ! python3 -c 'import websockets' 2>/dev/null; then
  echo "setup: installing the Python websockets package"
  python3 -m pip install --quiet websockets 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages websockets
fi

# The chart tests (charts/test_chart.py): helm-python-sdk embeds Helm 4 (no helm
# binary, no cluster) to lint and render charts/jarvis; kubernetes-validate checks
# the rendered objects against the Kubernetes API schemas it ships (offline).
helm_sdk_version=0.2.2
kubernetes_validate_version=1.37.0
if ! python3 -c "import helm_python, sys; sys.exit(helm_python.__version__ != '$helm_sdk_version')" 2>/dev/null; then
  echo "setup: installing the Python helm-python-sdk $helm_sdk_version"
  python3 -m pip install --quiet "helm-python-sdk==$helm_sdk_version" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "helm-python-sdk==$helm_sdk_version"
fi
if ! python3 -c "import importlib.metadata as m, sys, yaml; sys.exit(m.version('kubernetes-validate') != '$kubernetes_validate_version')" 2>/dev/null; then
  echo "setup: installing the Python kubernetes-validate $kubernetes_validate_version and PyYAML"
  python3 -m pip install --quiet "kubernetes-validate==$kubernetes_validate_version" PyYAML 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "kubernetes-validate==$kubernetes_validate_version" PyYAML
fi
