#!/usr/bin/env bash
# Installs what Jarvis needs to run on this machine, and nothing more (the tests'
# own tools are scripts/setup-tests.sh's), idempotently. Called by run.sh and
# test.sh; safe to run again.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"

# The Claude Code CLI the sandbox drives.
if [ -x "$root/scripts/install-claude.sh" ]; then
  "$root/scripts/install-claude.sh" >/dev/null
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

# bubblewrap confines local sandboxes.
if ! command -v bwrap >/dev/null 2>&1; then
  echo "setup: installing bubblewrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq bubblewrap >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null; }
fi
# The agent's tools in the local jail, which sees this machine's /usr only (so
# /usr/bin/python3, not a pyenv or a venv of the caller's): python3 with pip and
# venv, Node.js with npm, git (installs land in the workspace: sandbox/src/installs.rs).
# A Node.js that brings its own npm (NodeSource's) needs no Debian npm.
jail_path=/usr/local/bin:/usr/bin:/bin
agent_packages=()
/usr/bin/python3 -c 'import pip' >/dev/null 2>&1 || agent_packages+=(python3-pip)
/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || agent_packages+=(python3-venv)
PATH=$jail_path command -v git >/dev/null 2>&1 || agent_packages+=(git)
if ! PATH=$jail_path command -v node >/dev/null 2>&1; then
  agent_packages+=(nodejs npm)
elif ! PATH=$jail_path command -v npm >/dev/null 2>&1; then
  agent_packages+=(npm)
fi
if [ ${#agent_packages[@]} -gt 0 ]; then
  echo "setup: installing the agent's tools (${agent_packages[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${agent_packages[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${agent_packages[@]}" >/dev/null; }
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
# Piper only when it is the configured voice (the environment, or .env).
tts_engine="${JARVIS_TTS_ENGINE:-}"
if [ -z "$tts_engine" ] && [ -f "$root/.env" ]; then
  tts_engine=$(sed -n 's/^[[:space:]]*JARVIS_TTS_ENGINE[[:space:]]*=[[:space:]]*["'"'"']\{0,1\}\([a-z]*\).*/\1/p' "$root/.env" | tail -n 1)
fi
if [ "$tts_engine" = "piper" ]; then
  "$root/scripts/install-piper.sh"
fi
