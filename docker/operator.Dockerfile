# syntax=docker/dockerfile:1
# The operator: one static-ish Rust binary on distroless (glibc, CA certificates, no shell).
# Build from the repository root: docker build -f docker/operator.Dockerfile -t jarvis-operator .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p operator --bin operator \
    && install -m 0755 target/release/operator /usr/local/bin/operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /usr/local/bin/operator /usr/local/bin/operator
EXPOSE 9090
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/operator"]
