# MicroK8s Cluster API providers in Rust. `make help` lists the targets.

SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/mk8s-capi/target
export CARGO_BUILD_JOBS ?= 2
CARGO ?= cargo

.PHONY: help build test testenv manifests release-manifests lint fmt clean

help: ## Show the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | sort

build: ## Build both managers (release)
	$(CARGO) build --release --locked --workspace --bins

testenv: ## Build the test binaries (kube-apiserver, etcd, CAPI, helm) from Go modules, cached by version
	bash hack/build-testenv.sh --all

test: testenv ## Run every test: unit, rendered artefacts, real API server, end to end (T0, T0b, T1, T2)
	$(CARGO) build --locked --workspace --bins
	bash hack/sweep-testenv.sh
	$(CARGO) test --locked --workspace --no-fail-fast
	bash hack/sweep-testenv.sh

manifests: ## Regenerate config/crd and config/rbac from the code
	$(CARGO) run --locked -q -p mk8s-gen -- .

release-manifests: ## clusterctl release manifests into out/ (components, metadata.yaml, the simulator's)
	$(CARGO) run --locked -q -p mk8s-gen -- release out

lint: ## rustfmt, clippy (warnings are errors), shellcheck of our scripts
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --workspace --all-targets -- -D warnings
	shellcheck -x hack/*.sh .ci/run

fmt: ## Format the code
	$(CARGO) fmt --all

clean: ## Remove build outputs (the shared target dir under ~/.cache)
	$(CARGO) clean

.PHONY: e2e
e2e: testenv ## Run tests/e2e on the local management plane: the ten end-to-end scenarios, clusterctl, packaging and takeover tests (E2E_THREADS at once, default 3)
	$(CARGO) build --locked --workspace --bins
	bash hack/sweep-testenv.sh
	$(CARGO) test --locked -p mk8s-e2e --no-fail-fast -- --test-threads=$${E2E_THREADS:-3}
	bash hack/sweep-testenv.sh

.PHONY: demo
demo: ## Start a local management plane, create a 3+2 MicroK8s cluster on the simulator, show it (Ctrl-C ends)
	bash hack/build-testenv.sh --with-capi >/dev/null
	$(CARGO) build --locked --workspace --bins
	bash hack/sweep-testenv.sh
	$(CARGO_TARGET_DIR)/debug/mk8s-demo $(DEMO_ARGS)

.PHONY: chart-lint image-binaries
chart-lint: ## helm lint + template of charts/microk8s-capi, applied by server-side dry-run; the cloud templates checked
	bash hack/build-testenv.sh --all >/dev/null
	$(CARGO) build --locked --workspace --bins
	bash hack/sweep-testenv.sh
	$(CARGO) test --locked -p mk8s-e2e --test packaging
	bash hack/sweep-testenv.sh

image-binaries: ## The release build of the image (Dockerfile): both managers in target/release
	$(CARGO) build --release --locked -p mk8s-bootstrap -p mk8s-controlplane

.PHONY: bench takeover
bench: ## Benchmarks on the local plane (release build), ours beside Canonical's where they build: `make bench BENCH_ARGS="available --runs 3"`; table + target/bench/results.json
	bash hack/build-testenv.sh --with-capi >/dev/null
	bash hack/build-canonical.sh >/dev/null || echo "make bench: Canonical's providers are unavailable (the table says why); benchmarking ours" >&2
	$(CARGO) build --release --locked --workspace --bins
	bash hack/sweep-testenv.sh
	BENCH_OUT=$${BENCH_OUT:-target/bench/results.json} $(CARGO_TARGET_DIR)/release/mk8s-bench $(BENCH_ARGS)
	bash hack/sweep-testenv.sh

takeover: ## Take over a cluster from Canonical's providers: a synthetic v0.6.11 state, then their running managers where they build (see README)
	bash hack/build-testenv.sh --with-capi >/dev/null
	bash hack/build-canonical.sh >/dev/null || echo "make takeover: Canonical's providers are unavailable; the live takeover records why" >&2
	$(CARGO) build --locked --workspace --bins
	bash hack/sweep-testenv.sh
	$(CARGO) test --locked -p mk8s-e2e --test takeover -- --nocapture
	$(CARGO_TARGET_DIR)/debug/mk8s-bench takeover --out $${TAKEOVER_OUT:-target/bench/takeover.json}
	bash hack/sweep-testenv.sh
