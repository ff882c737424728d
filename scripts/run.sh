#!/usr/bin/env bash
# Starts Jarvis on this machine: installs what it needs to run (scripts/setup.sh;
# the tests' own tools are not installed here), builds the browser app and every
# binary the router runs (the router and the sandbox, release profile), then
# serves; the router creates the `jarvis` database on the local PostgreSQL if it
# is missing and runs the migrations. Settings come from the environment or
# `.env` (see the table in README.md); without ANTHROPIC_API_KEY the router
# starts, warns, and every chat turn ends with an error naming it.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf 'run.sh: %s\n' "$*" >&2; }

say "installing what Jarvis needs (only what is missing: the Claude Code CLI, the web app's packages, bubblewrap, espeak-ng)"
./scripts/setup.sh
say "building the browser app (router/web/dist)"
(cd router/web && npm run build --silent >/dev/null)
if [ -x target/release/router ] && [ -x target/release/sandbox ]; then
  say "building the router and the sandbox (release; only what changed)"
else
  say "building the router and the sandbox (release; the first build takes about 10 minutes on 2 cores)"
fi
cargo build --release --locked -p router -p sandbox --bin router --bin sandbox
say "starting Jarvis at http://${JARVIS_LISTEN:-127.0.0.1:8080} (ctrl-c stops it)"
exec ./target/release/router
