# syntax=docker/dockerfile:1
# Container images for the operator and the proxy, from one build of the workspace:
#   docker build --target operator -t gatehouse-operator:dev .
#   docker build --target proxy    -t gatehouse-proxy:dev .
# Runtime images are distroless (glibc, CA certificates, no shell) and run as uid 65532, the
# user the chart's securityContext expects.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crds crds
COPY ssh-ca ssh-ca
COPY runtime runtime
COPY operator operator
COPY proxy proxy
COPY tests tests
# Cache mounts keep the registry and target dir between builds; the binaries are copied out
# of the cached target dir because later stages cannot see a cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gatehouse-operator -p gatehouse-proxy \
 && install -D -m 0755 target/release/gatehouse-operator /out/gatehouse-operator \
 && install -D -m 0755 target/release/gatehouse-proxy /out/gatehouse-proxy

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/gatehouse-operator /usr/local/bin/gatehouse-operator
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-operator"]

FROM gcr.io/distroless/cc-debian12:nonroot AS proxy
COPY --from=build /out/gatehouse-proxy /usr/local/bin/gatehouse-proxy
USER 65532:65532
EXPOSE 2222 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-proxy"]
