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
