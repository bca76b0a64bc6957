# Gatehouse developer entry points. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

SCRIPTS  := tests/scripts
# `make up` keeps its control plane here (git-ignored); tests use their own under target/.
UP_DIR   ?= $(CURDIR)/.gatehouse/control-plane
TEST_DIR ?= $(CURDIR)/target/gatehouse/test-control-plane
# `make node-up` keeps its control plane and node here; images.sh writes the images here.
NODE_DIR   ?= $(CURDIR)/target/gatehouse/node-control-plane
IMAGES_DIR ?= $(CURDIR)/target/gatehouse/images
# `make e2e-node` runs its plane and node here.
E2E_NODE_DIR ?= $(CURDIR)/target/gatehouse/e2e-node-control-plane
# The images `make e2e-node` runs: debug binaries (what `make test` builds anyway) unless set.
E2E_NODE_PROFILE ?= debug
# Where `make up` stores recordings: local (a directory), minio (a local MinIO) or s3 (README).
RECORDINGS ?= local

.PHONY: help deps up demo down status test lint crds unit bench bench-operator node-deps images node-up node-down node-check e2e-node

help: ## list targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

deps: ## install missing system packages and build the pinned kube-apiserver/kubectl/helm (cached)
	@$(SCRIPTS)/install-deps.sh
	@$(SCRIPTS)/build-tools.sh >/dev/null

up: deps ## a local Gatehouse: control plane, chart, operator, proxy, demo target, recording store
	@GATEHOUSE_RECORDINGS=$(RECORDINGS) $(SCRIPTS)/up.sh $(UP_DIR)

demo: deps ## request → approve → certificate → recorded ssh session → replay (runs `up` if needed)
	@GATEHOUSE_RECORDINGS=$(RECORDINGS) $(SCRIPTS)/demo.sh $(UP_DIR)

down: ## stop everything `make up` started
	@$(SCRIPTS)/control-plane.sh down $(UP_DIR)

status: ## show whether the `make up` control plane runs
	@$(SCRIPTS)/control-plane.sh status $(UP_DIR)

lint: ## rustfmt, clippy (warnings are errors), generated-CRD freshness, crate arrows and module cycles
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo run -q -p gatehouse-crds --bin crdgen -- --check
	tests/scripts/check-architecture.py

crds: ## regenerate charts/gatehouse/crds from the Rust types
	cargo run -q -p gatehouse-crds --bin crdgen

test: deps lint ## everything: lint, unit tests, and end-to-end tests against a real control plane
	cargo build -p gatehouse-operator -p gatehouse-proxy -p gatehouse-bridge -p gatehouse-cli -p gatehouse-audit-api
	$(SCRIPTS)/control-plane.sh run $(TEST_DIR) -- cargo test --workspace --no-fail-fast

bench: deps ## proxy vs direct sshd: upload/download CPU per GiB by cipher, connect latency, logins/s, idle-session memory (knobs: docs/benchmarks.md)
	# Separate: `--bin` would limit every -p to that one binary.
	cargo build --release -p gatehouse-operator -p gatehouse-proxy
	cargo build --release -p gatehouse-tests --bin bench-proxy
	GATEHOUSE_OPERATOR_BIN=$(CURDIR)/target/release/gatehouse-operator \
	GATEHOUSE_PROXY_BIN=$(CURDIR)/target/release/gatehouse-proxy \
	$(SCRIPTS)/control-plane.sh run $(CURDIR)/target/gatehouse/bench-control-plane -- \
	  $(CURDIR)/target/release/bench-proxy
	@$(MAKE) --no-print-directory bench-operator

# The operator benchmark's profile: release like `make bench`; BENCH_PROFILE=debug reuses `make test`'s build.
BENCH_PROFILE ?= release
bench-operator: deps ## operator: 10,000 auto-approved requests, 1,000 approved in a burst (BENCH_REQUESTS, BENCH_APPROVALS)
	cargo build $(if $(filter release,$(BENCH_PROFILE)),--release) -p gatehouse-operator -p gatehouse-proxy
	cargo build $(if $(filter release,$(BENCH_PROFILE)),--release) -p gatehouse-tests --bin bench-operator
	GATEHOUSE_OPERATOR_BIN=$(CURDIR)/target/$(BENCH_PROFILE)/gatehouse-operator \
	GATEHOUSE_PROXY_BIN=$(CURDIR)/target/$(BENCH_PROFILE)/gatehouse-proxy \
	BENCH_REQUESTS=$${BENCH_REQUESTS:-10000} BENCH_APPROVALS=$${BENCH_APPROVALS:-1000} \
	$(SCRIPTS)/control-plane.sh run $(CURDIR)/target/gatehouse/bench-operator-control-plane -- \
	  $(CURDIR)/target/$(BENCH_PROFILE)/bench-operator

node-deps: ## also what a real node needs: containerd, runc, CNI, buildah; kubelet & co., crictl (cached)
	@$(SCRIPTS)/install-deps.sh node
	@$(SCRIPTS)/build-tools.sh node >/dev/null

images: ## operator, proxy and pause images built here from the Dockerfile, no registry
	@$(SCRIPTS)/install-deps.sh node
	@$(SCRIPTS)/images.sh $(IMAGES_DIR)

node-up: node-deps images ## control plane + one real node (kubelet, containerd) that runs the chart's pods
	@GATEHOUSE_NODE=1 $(SCRIPTS)/control-plane.sh up $(NODE_DIR)
	@GATEHOUSE_IMAGES_DIR=$(IMAGES_DIR) $(SCRIPTS)/node.sh up $(NODE_DIR) || { $(SCRIPTS)/control-plane.sh down $(NODE_DIR); exit 1; }
	@echo "helm install gatehouse charts/gatehouse -n gatehouse-system --create-namespace -f $(NODE_DIR)/node/values.yaml"
	@echo "  with: source $(NODE_DIR)/env (GATEHOUSE_HELM, GATEHOUSE_KUBECTL) and --kubeconfig $(NODE_DIR)/kubeconfigs/admin.kubeconfig"

node-down: ## stop the node and its control plane; fails if anything is left behind
	@$(SCRIPTS)/control-plane.sh down $(NODE_DIR)

node-check: node-up ## the chart on the real node: install, pods Ready and locked down, Lease, webhook via its Service, uninstall
	@rc=0; $(SCRIPTS)/node-check.sh $(NODE_DIR) || rc=1; $(SCRIPTS)/control-plane.sh down $(NODE_DIR) || rc=1; exit $$rc

e2e-node: node-deps ## the chart's pods on a real node end to end: install, webhook, recorded ssh, failover, upgrade, uninstall
	@GATEHOUSE_IMAGE_PROFILE=$(E2E_NODE_PROFILE) $(SCRIPTS)/images.sh $(IMAGES_DIR)
	cargo test -p gatehouse-tests --test real_node --no-run
	GATEHOUSE_NODE=1 $(SCRIPTS)/control-plane.sh run $(E2E_NODE_DIR) -- \
	  env GATEHOUSE_IMAGES_DIR=$(IMAGES_DIR) $(SCRIPTS)/node.sh run $(E2E_NODE_DIR) -- \
	  cargo test -p gatehouse-tests --test real_node -- --ignored --nocapture
