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
