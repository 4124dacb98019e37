# syntax=docker/dockerfile:1
# Container image of dynamiq-sidecar (used by the Helm chart in helm/dynamiq-sidecar).
#
#   docker build -t registry.example.com/dynamiq/dynamiq-sidecar:0.1.0 .
#
# Two stages: a release build on the official Rust image, then a Debian slim runtime (same glibc
# as the build) with the CA certificates (TLS uses rustls with the system's roots; no OpenSSL),
# running as the non-root uid/gid 65532 with the buffer at /var/lib/dynamiq-sidecar. Debian slim
# rather than distroless because the Helm chart's sidecar-mode probes run bash (/dev/tcp against
# 127.0.0.1, where the kubelet's httpGet cannot reach) and because `kubectl exec ... dynamiq-sidecar
# buffer inspect` is handy. Nothing but the binary runs in it.
#
# The image's config listens on 127.0.0.1 only (sidecar use). To publish the port from a plain
# container, listen on all interfaces and give it an inbound token, e.g.
#   docker run -e DYNAMIQ_ACCESS_KEY=... -e DYNAMIQ_SIDECAR_INGEST_AUTH_TOKEN=... -p 4318:4318 \
#     IMAGE run --config /etc/dynamiq-sidecar/dynamiq-sidecar.toml --http-addr 0.0.0.0:4318
#
# Not built in this repository's CI (no container engine there).

ARG RUST_VERSION=1
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# Symbols stay (readable backtraces); the debug info of the release profile does not.
ENV CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN cargo build --release --locked --bin dynamiq-sidecar \
 && install -D -m 0755 target/release/dynamiq-sidecar /out/dynamiq-sidecar
# The shipped config with the image's buffer path, validated by the binary itself.
RUN sed -e 's|^path = "./data"$|path = "/var/lib/dynamiq-sidecar"|' config/dynamiq-sidecar.toml \
      > /out/dynamiq-sidecar.toml \
 && grep -q '^path = "/var/lib/dynamiq-sidecar"$' /out/dynamiq-sidecar.toml \
 && env -u DYNAMIQ_ACCESS_KEY /out/dynamiq-sidecar check-config --config /out/dynamiq-sidecar.toml >/dev/null

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 nonroot \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nonroot \
 && install -d -o 65532 -g 65532 -m 0700 /var/lib/dynamiq-sidecar
COPY --from=build /out/dynamiq-sidecar /usr/local/bin/dynamiq-sidecar
COPY --from=build /out/dynamiq-sidecar.toml /etc/dynamiq-sidecar/dynamiq-sidecar.toml
LABEL org.opencontainers.image.title="dynamiq-sidecar" \
      org.opencontainers.image.description="Buffers Dynamiq traces on disk and forwards them to the Dynamiq collector" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 65532:65532
WORKDIR /var/lib/dynamiq-sidecar
# 4318: HTTP (Dynamiq runs, OTLP/HTTP, /healthz, /readyz, /metrics); 4317: OTLP/gRPC.
EXPOSE 4317 4318
VOLUME /var/lib/dynamiq-sidecar
ENTRYPOINT ["dynamiq-sidecar"]
CMD ["run", "--config", "/etc/dynamiq-sidecar/dynamiq-sidecar.toml"]
