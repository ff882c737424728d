#!/usr/bin/env bash
# Runs every test of Jarvis: installs what Jarvis and its tests need, then the Helm
# chart and Dockerfile checks, formatting, lints and the whole test suite (unit,
# integration against the local PostgreSQL, the shared contract check, the browser
# app), and last the README's first command (scripts/run.sh) from a clean state.
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/setup-tests.sh

# The Helm chart (linted and rendered offline by Helm 4's engine) and the Dockerfiles.
python3 -m unittest discover -s charts -p 'test_*.py'
python3 -m unittest discover -s docker -p 'test_*.py'

# Each test gets a fresh database created on this server (sqlx::test).
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
# A clean build gains nothing from incremental artifacts, and they double the disk
# the target directory takes.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The router's end-to-end tests start the real sandbox binary from target/; the
# browser app's end-to-end run also needs the fake model API as a process.
cargo build -p sandbox --bin sandbox --locked
cargo build -p sandbox --features test-support --bin fake-anthropic --locked
cargo test --workspace --locked

# The browser app: type check, then component and unit tests (Vitest, jsdom), then
# end to end in headless Chromium against the real router, real local sandboxes and
# the fake model API (screenshots in router/web/e2e/screenshots/).
(cd router/web && npx tsc --noEmit && npm test --silent && npm run build --silent && E2E_NO_BUILD=1 npm run e2e --silent)

# The README's first command, as a newcomer runs it: scripts/run.sh from a fresh
# database and data directory (its release build included), a chat answered over
# /ws, the contract check against it, then once more without a model key
# (scripts/test_run.py).
python3 -m unittest discover -s scripts -p 'test_*.py'
