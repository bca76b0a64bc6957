# syntax=docker/dockerfile:1
# Container images for the operator and the proxy, from one build of the workspace:
#   docker build --target operator -t gatehouse-operator:dev .
#   docker build --target proxy    -t gatehouse-proxy:dev .
#   docker build --target bridge   -t gatehouse-bridge:dev .   (compiled here: BINARIES does not apply)
#   docker build --target audit-api -t gatehouse-audit-api:dev . (likewise)
# Runtime images are distroless (glibc, CA certificates, no shell) and run as uid 65532, the
# user the chart's securityContext expects.
#
# Every base image is a build argument, so the images can be built without a registry:
#   BUILD_IMAGE    the Rust toolchain image the `build` stage compiles in
#   RUNTIME_IMAGE  the base of the operator and proxy images (glibc, CA certificates, /etc/passwd
#                  with uid 65532)
#   BINARIES       `build` (default) compiles in BUILD_IMAGE; `prebuilt` takes gatehouse-operator
#                  and gatehouse-proxy from the root of the build context instead, already built
#                  on a glibc-compatible host with `cargo build --release --locked -p
#                  gatehouse-operator -p gatehouse-proxy`. tests/scripts/images.sh builds that way
#                  offline, with a RUNTIME_IMAGE it assembles from the host's glibc runtime files.
ARG BUILD_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# The whole workspace (.dockerignore leaves out target/ and local state), so new crates need
# no change here.
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries are copied out
# of the cached target dir because later stages cannot see a cache mount.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gatehouse-operator -p gatehouse-proxy -p gatehouse-bridge \
      -p gatehouse-audit-api \
 && install -D -m 0755 target/release/gatehouse-operator /out/gatehouse-operator \
 && install -D -m 0755 target/release/gatehouse-proxy /out/gatehouse-proxy \
 && install -D -m 0755 target/release/gatehouse-bridge /out/gatehouse-bridge \
 && install -D -m 0755 target/release/gatehouse-audit-api /out/gatehouse-audit-api

FROM scratch AS prebuilt
COPY gatehouse-operator gatehouse-proxy /out/

# The stage the runtime images copy their binary from: `build` or `prebuilt`.
FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS operator
COPY --from=binaries /out/gatehouse-operator /usr/local/bin/gatehouse-operator
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-operator"]

FROM ${RUNTIME_IMAGE} AS proxy
COPY --from=binaries /out/gatehouse-proxy /usr/local/bin/gatehouse-proxy
USER 65532:65532
EXPOSE 2222 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-proxy"]

FROM ${RUNTIME_IMAGE} AS bridge
COPY --from=build /out/gatehouse-bridge /usr/local/bin/gatehouse-bridge
USER 65532:65532
EXPOSE 8090 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-bridge"]

FROM ${RUNTIME_IMAGE} AS audit-api
COPY --from=build /out/gatehouse-audit-api /usr/local/bin/gatehouse-audit-api
USER 65532:65532
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/gatehouse-audit-api"]
