#!/usr/bin/env bash
# Starts Jarvis on this machine: installs what it needs, builds the router, creates
# the `jarvis` database on the local PostgreSQL if missing, runs the migrations
# and serves (the URL is printed). Settings come from the environment or `.env`
# (see the table in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The browser app the router serves (router/web/dist).
(cd router/web && npm run build --silent)
cargo build --release --bin router
echo "Jarvis starts at http://${JARVIS_LISTEN:-127.0.0.1:8080}"
exec ./target/release/router
