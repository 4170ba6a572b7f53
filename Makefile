# hubgrade — see README.md. Every target works on a fresh machine (Rust and Go installed).
SHELL := /bin/bash
CLUSTER_DIR := $(CURDIR)/target/cluster
export KUBECONFIG := $(CLUSTER_DIR)/kubeconfig
# The local cluster's binaries (built once per pinned version by tests/cluster/build.sh).
CLUSTER_BIN = $(shell tests/cluster/build.sh)

.PHONY: test deps lint deny chaos bench fuzz build crd cluster-build cluster-up cluster-down demo jupyterhub-venvs \
	images image standins test-images
# The binary the local hubgrade image packs (tests/images/build.sh hubgrade).
HUBGRADE_BIN ?= $(CURDIR)/target/release/hubgrade

## Run every test: unit, state machine, and the tests against the local cluster (started if needed).
## The cluster (Go builds: CPU), the JupyterHub venvs and the test images (downloads, disk) are
## prepared at once; on a fresh machine that takes the images off the critical path.
test: deps
	@$(MAKE) --no-print-directory -j3 cluster-up jupyterhub-venvs test-images
	@$(MAKE) --no-print-directory standins
	HUBGRADE_CLUSTER_BIN="$(CLUSTER_BIN)" cargo test --locked --all-targets --no-fail-fast
	tests/chaos-cluster.sh

## The real node's test images but hubgrade's own (which packs the tests' build of it).
test-images:
	@tests/images/build.sh k8s-hub:3.3.8 k8s-hub:4.4.0 configurable-http-proxy busybox test-k8s-hub >/dev/null

## Build the KWOK stand-ins (tests/standins, test infrastructure) into target/debug, where the end-to-end tests find them.
standins:
	cargo build --locked -p hubgrade-standins

## Install the missing system packages (PostgreSQL, MariaDB, npm, jq, ...) from Debian's packages.
deps:
	@tests/install-deps.sh

## cargo fmt --check and clippy with warnings as errors.
lint:
	cargo fmt --all --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

## cargo deny check licenses bans sources (deny.toml): permissive licenses, no OpenSSL, crates.io
## only. cargo-deny is built once into ~/.cache/hubgrade/tools (about 4 min on 2 cores).
CARGO_DENY_VERSION := 0.20.2
CARGO_DENY := $(HOME)/.cache/hubgrade/tools/cargo-deny-$(CARGO_DENY_VERSION)/bin/cargo-deny
deny: $(CARGO_DENY)
	$(CARGO_DENY) deny check --hide-inclusion-graph licenses bans sources
$(CARGO_DENY):
	CARGO_TARGET_DIR=$(HOME)/.cache/hubgrade/tools/cargo-deny-build cargo install --locked cargo-deny \
		--version $(CARGO_DENY_VERSION) --root $(HOME)/.cache/hubgrade/tools/cargo-deny-$(CARGO_DENY_VERSION)
	rm -rf $(HOME)/.cache/hubgrade/tools/cargo-deny-build

## Time hubgrade's SQLite and PostgreSQL backups against cp and pg_dump/pg_restore (~1 GiB databases); writes docs/BENCHMARKS.md.
## Then the fleet on the local cluster (started if needed): 1, 50, 200 and 500 hubs upgraded at once by one operator
## (HUBGRADE_FLEET_SIZES=...); writes docs/BENCHMARKS-fleet.md.
bench:
	cargo bench --bench backup
	@$(MAKE) --no-print-directory cluster-up
	cargo build --release --locked -p hubgrade-standins
	cargo bench --bench fleet
	cargo bench --bench downtime

## The chaos that restarts the control plane (etcd, kube-apiserver in every phase; tests/e2e_chaos.rs's
## ignored tests), on a KWOK cluster of its own (tests/chaos-cluster.sh); make test runs it too.
chaos: standins
	tests/chaos-cluster.sh

## Fuzz the database URL parser (and its redaction), the spec, image and revision checks and backup references: 10^6 inputs each (make test runs 2,000 each).
fuzz:
	HUBGRADE_FUZZ_CASES=1000000 cargo test --release --locked --test fuzz -- --test-threads=2

build:
	cargo build --locked

## Regenerate crds/hubupgrade.yaml and the chart's copy from the code (a test fails when either drifts).
crd: build
	target/debug/hubgrade crd > crds/hubupgrade.yaml
	cp crds/hubupgrade.yaml charts/hubgrade/crds/hubupgrade.yaml

## Install the pinned JupyterHub releases from PyPI into cached venvs (tests/jupyterhub/).
jupyterhub-venvs:
	@tests/jupyterhub/venvs.sh >/dev/null

## Build the local test cluster's images as OCI layouts (z2jh hub 3.3.8 and 4.4.0, configurable-http-proxy, busybox, hubgrade); cached in ~/.cache/hubgrade/images. Push: tests/images/push.sh HOST:PORT.
images: deps image
	@HUBGRADE_BIN="$(HUBGRADE_BIN)" tests/images/build.sh

## Build the hubgrade image from a release build of this tree, or from HUBGRADE_BIN=path (for your own registry: see Containerfile).
image: deps
	$(if $(filter file,$(origin HUBGRADE_BIN)),cargo build --release --locked --bin hubgrade)
	@HUBGRADE_BIN="$(HUBGRADE_BIN)" tests/images/build.sh hubgrade

## Build (or find cached) etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kwok, helm, kubelet, kube-proxy, registry.
cluster-build:
	@tests/cluster/build.sh

## Start the local cluster (control plane, KWOK node, real node); kubeconfig at target/cluster/kubeconfig.
cluster-up:
	@tests/cluster/up.sh

## Stop every process of the local cluster and remove what its real node made.
cluster-down:
	@tests/cluster/down.sh

## The local cluster, the example hub, the operator, one upgrade end to end (exit 0 on Succeeded).
demo: deps
	@examples/z2jh-hub/demo.sh
