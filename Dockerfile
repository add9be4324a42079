# syntax=docker/dockerfile:1
#
# bbsync's container image: a Rust builder, and a runtime FROM scratch that holds only the
# binary, the libraries it links, a CA bundle and an unprivileged user (docs/operations.md,
# "Container").
#
#   docker build -t bbsync .                      # or: podman build -t bbsync .
#   docker run --rm bbsync --version
#   docker run -d -p 127.0.0.1:9184:9184 \
#     -v "$PWD/bbsync.toml:/etc/bbsync/bbsync.toml:ro" \
#     -v "$PWD/secrets:/run/secrets/bbsync:ro" -v bbsync-state:/var/lib/bbsync bbsync
#
# Without a registry (the project's own container test, an air-gapped builder), the image is
# built from a filesystem laid out on the host by the same scripts/rootfs.sh the builder runs:
#
#   scripts/rootfs.sh target/release/bbsync CTX/rootfs
#   podman build -f Dockerfile --target runtime-from-context CTX
#
# Both targets are the stage `image` (every setting of the image) plus the same two COPYs of
# scripts/rootfs.sh's output, from the builder or from the context; a build stops at the stages
# its target needs, so runtime-from-context never pulls the Rust image.

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Dependencies first, in their own layer: it is rebuilt only when a manifest or the lock file
# changes, not on every source edit. Stub targets stand in for the sources meanwhile.
COPY Cargo.toml Cargo.lock ./
COPY emulator/Cargo.toml emulator/
COPY testkit/Cargo.toml testkit/
RUN mkdir -p src emulator/src testkit/src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs emulator/src/lib.rs testkit/src/lib.rs \
 && for b in ldap_source pool offboarding; do echo 'fn main() {}' > "benches/$b.rs"; done \
 && cargo build --release --locked --bin bbsync \
 && rm -rf src emulator/src testkit/src benches
COPY . .
# COPY keeps the sources' modification times, older than the stub build's outputs: without
# the touch, cargo would take the stubs' build for the real crates'.
RUN touch src/main.rs src/lib.rs emulator/src/lib.rs testkit/src/lib.rs \
 && cargo build --release --locked --bin bbsync \
 && ./target/release/bbsync --version

FROM builder AS rootfs-build
RUN scripts/rootfs.sh target/release/bbsync /rootfs

# Everything about the image but its files, shared by both targets.
FROM scratch AS image
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="bbsync" \
      org.opencontainers.image.description="Keeps Bitbucket Cloud group membership and repository access equal to what the company directory says" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/bbsync/bbsync" \
      org.opencontainers.image.documentation="https://github.com/bbsync/bbsync/blob/main/docs/operations.md"
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
# /healthz, /readyz, /metrics, /status, POST /sync, POST /approve. The config must listen on
# 0.0.0.0:9184 in a container (the default, 127.0.0.1, is not reachable from outside it).
EXPOSE 9184
# Exec form, no shell: the binary asks its own endpoint (127.0.0.1:9184, or
# $BBSYNC_HEALTHCHECK_ADDR).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/bbsync", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/bbsync"]
CMD ["run", "--config", "/etc/bbsync/bbsync.toml"]

# The image from a rootfs/ that scripts/rootfs.sh laid out in the build context.
FROM image AS runtime-from-context
COPY rootfs/files/ /
# The only directory the process writes (offboarding.state_dir, audit.path): created here,
# owned by the runtime user; everything else stays root's and read-only to it.
COPY --chown=65532:65532 rootfs/state/ /var/lib/bbsync/
VOLUME ["/var/lib/bbsync"]

# The default target: the image from the binary compiled above. Keep its COPYs the same as
# runtime-from-context's but for their source (tests/container.rs checks).
FROM image AS runtime
COPY --from=rootfs-build /rootfs/files/ /
COPY --from=rootfs-build --chown=65532:65532 /rootfs/state/ /var/lib/bbsync/
VOLUME ["/var/lib/bbsync"]
