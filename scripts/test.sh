#!/usr/bin/env bash
# Runs every test of Jarvis: installs what the tests need, then formatting, lints
# and the whole test suite (unit, integration against the local PostgreSQL, the
# shared contract check). Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Each test gets a fresh database created on this server (sqlx::test).
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The router's end-to-end tests start the real sandbox binary from target/.
cargo build -p sandbox --bin sandbox --locked
cargo test --workspace --locked

# The browser app: type check, then component and unit tests (Vitest, jsdom).
(cd router/web && npx tsc --noEmit && npm test --silent)
