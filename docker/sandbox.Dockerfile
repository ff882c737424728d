# syntax=docker/dockerfile:1
# The sandbox: the per-user agent process and the Claude Code CLI it drives, plus the
# tools the agent's code runs with (python3 with pip and venv, Node.js with npm, git,
# curl) and espeak-ng for speech. The agent's installs land in /workspace (a venv at
# /workspace/.venv the sandbox makes, npm's global prefix /workspace/.npm-global: see
# sandbox/src/installs.rs) and go out through the router's egress proxy.
# Build from the repository root: docker build -f docker/sandbox.Dockerfile -t jarvis-sandbox .
# The operator starts it as `sandbox --listen … --claude-bin /usr/local/bin/claude`,
# as uid/gid 1000 with a read-only root filesystem (writable: /workspace, /tmp, /state).

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p sandbox --bin sandbox \
    && install -m 0755 target/release/sandbox /usr/local/bin/sandbox

# The CLI, installed the way scripts/install-claude.sh does: the npm package's
# postinstall puts the platform's native binary at bin/claude.exe (no Node.js needed
# to run it). Keep the version equal to CLAUDE_VERSION there.
FROM node:22-bookworm-slim AS claude
ARG CLAUDE_VERSION=2.1.331
RUN npm install --prefix /opt/claude --no-audit --no-fund --loglevel=error \
        "@anthropic-ai/claude-code@${CLAUDE_VERSION}" \
    && test -x /opt/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        ca-certificates curl git python3 python3-pip python3-venv espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1000 jarvis \
    && useradd --uid 1000 --gid 1000 --create-home --shell /bin/bash jarvis \
    && install -d -o 1000 -g 1000 /workspace /state
COPY --from=claude /opt/claude/node_modules/@anthropic-ai/claude-code/bin/claude.exe /opt/claude/claude
# Node.js and npm for the agent's code, from the official image the CLI is installed
# with (the CLI itself is a native binary and needs neither).
COPY --from=claude /usr/local/bin/node /usr/local/bin/node
COPY --from=claude /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/npm
RUN ln -s /opt/claude/claude /usr/local/bin/claude \
    && ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
COPY --from=build /usr/local/bin/sandbox /usr/local/bin/sandbox
WORKDIR /workspace
EXPOSE 7070
USER 1000:1000
ENTRYPOINT ["/usr/local/bin/sandbox"]
