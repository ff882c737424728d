# syntax=docker/dockerfile:1
# The router: the Rust binary plus the browser app it serves.
# Build from the repository root: docker build -f docker/router.Dockerfile -t jarvis-router .

# The browser app (router/web): npm ci, then a Vite build into dist/.
FROM node:22-bookworm-slim AS web
WORKDIR /src/router/web
COPY router/web/package.json router/web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY router/web/ ./
RUN npm run build

# The router binary (the workspace builds together: the router depends on the
# operator and sandbox libraries).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p router --bin router \
    && install -m 0755 target/release/router /usr/local/bin/router

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates espeak-ng opus-tools \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/router /usr/local/bin/router
COPY --from=web /src/router/web/dist /usr/share/jarvis/web
# 8080: browsers and the API; 8081: the sandboxes' routes (the gateway, workspace
# sync), which pods reach and the public listener does not serve.
ENV JARVIS_WEB_DIR=/usr/share/jarvis/web \
    JARVIS_LISTEN=0.0.0.0:8080 \
    JARVIS_SANDBOX_LISTEN=0.0.0.0:8081
EXPOSE 8080 8081
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/router"]
