#!/usr/bin/env bash
# Installs the pinned Claude Code CLI into <repo>/.tools/claude (idempotent) and a
# dedicated unprivileged user `jarvis-sandbox` (when run as root) for the sandbox to
# drop to: the CLI refuses some things as root, and an escaped agent must not be root.
# Prints the path of the CLI binary on its last line.
set -euo pipefail

CLAUDE_VERSION="2.1.331"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PREFIX="$ROOT/.tools/claude"
BIN="$PREFIX/node_modules/@anthropic-ai/claude-code/bin/claude.exe"

installed_version() {
  node -e "console.log(require('$PREFIX/node_modules/@anthropic-ai/claude-code/package.json').version)" 2>/dev/null || true
}

if [ "$(installed_version)" != "$CLAUDE_VERSION" ] || [ ! -x "$BIN" ]; then
  mkdir -p "$PREFIX"
  npm install --prefix "$PREFIX" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_VERSION" >&2
fi

if [ ! -x "$BIN" ]; then
  echo "install-claude.sh: $BIN missing after install (optional native dependency not installed?)" >&2
  exit 1
fi

if [ "$(id -u)" = "0" ] && ! id jarvis-sandbox >/dev/null 2>&1; then
  useradd --system --no-create-home --shell /usr/sbin/nologin jarvis-sandbox >&2
fi

echo "$BIN"
