# syntax=docker/dockerfile:1
#
# One image holding both managers, /mk8s-bootstrap and /mk8s-controlplane (the Deployments
# choose one with `command:`). glibc build on Debian bookworm, run on distroless cc-debian12
# (same glibc), as the non-root user 65532; nothing is written at run time, so a read-only
# root filesystem works.
#
#   DOCKER_BUILDKIT=1 docker build -t ghcr.io/microk8s-capi-rs/mk8s-capi:v0.1.0 .
#
# The build command is exactly `make image-binaries` (which CI runs without Docker).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# BuildKit cache mounts keep the cargo registry and the target directory between builds. The
# target directory is a cache mount, so the binaries are copied out in the same step.
RUN --mount=type=cache,id=mk8s-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=mk8s-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=mk8s-target,target=/src/target,sharing=locked \
    cargo build --release --locked -p mk8s-bootstrap -p mk8s-controlplane \
    && mkdir -p /out \
    && cp target/release/mk8s-bootstrap target/release/mk8s-controlplane /out/

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="mk8s-capi" \
      org.opencontainers.image.description="MicroK8s Cluster API bootstrap and control plane providers (mk8s-bootstrap, mk8s-controlplane)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/mk8s-bootstrap /out/mk8s-controlplane /
USER 65532:65532
# No entrypoint: run `/mk8s-bootstrap` or `/mk8s-controlplane`.
CMD ["/mk8s-bootstrap", "--help"]
