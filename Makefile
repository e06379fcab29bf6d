# wbengine — see README.md. `make help` lists the targets.
GO        ?= go
ICEBER    := -tags iceber -ldflags=-checklinkname=0
FUZZTIME  ?= 30s
# wbbench -version: the VCS revision, also where the go command records none (a git worktree).
VCSFLAGS  = -ldflags "-X github.com/wbengine/wbengine/bench.vcsRevision=$$(git rev-parse HEAD 2>/dev/null) \
	-X github.com/wbengine/wbengine/bench.vcsTime=$$(git log -1 --format=%cI 2>/dev/null) \
	-X github.com/wbengine/wbengine/bench.vcsModified=$$(git diff --quiet HEAD 2>/dev/null || echo true)"

.PHONY: help test vet testrace test-iceber build stress fuzz bench bench-iceber ramdev ramdev-clean lint

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

test: vet testrace test-iceber ## what CI runs: vet, race tests with invariants, iceber backend tests

vet: ## go vet, plain and with the iceber and invariants tags
	$(GO) vet ./...
	$(GO) vet -tags invariants ./...

testrace: ## unit, integration and crash tests under -race with invariant checks
	$(GO) test -race -tags invariants -timeout 6m ./...

test-iceber: ## the iceber backend's tests (needs the linkname flag; not under -race: outside code with known hangs)
	$(GO) test $(ICEBER) -timeout 120s ./ring/

build: ## build wbbench (wbbench -version names the commit)
	$(GO) build -buildvcs=auto $(VCSFLAGS) -o wbbench ./cmd/wbbench

bench: build ## run wbbench on its default target (root: a 1 GiB /dev/shm loop device; else a temp file); BENCHFLAGS="-pattern runs -runs 3" adds flags
	./wbbench $(BENCHFLAGS)

bench-iceber: ## build wbbench with the iceber backend and run it with -ring iceber (BENCHFLAGS adds flags)
	$(GO) build $(ICEBER) -o wbbench-iceber ./cmd/wbbench
	./wbbench-iceber -ring iceber $(BENCHFLAGS)

ramdev: ## make a loop device over a /dev/shm file (root; RAMDEV_SIZE=1G) for wbbench -device, and print its path
	@f=$$(mktemp --suffix=.img /dev/shm/wbengine-ramdev-XXXXXX) && truncate -s $${RAMDEV_SIZE:-1G} "$$f" && \
	  losetup --find --show "$$f" || { rm -f "$$f"; exit 1; }

ramdev-clean: ## detach and delete the loop devices `make ramdev` made (and only those)
	@for f in /dev/shm/wbengine-ramdev-*.img; do [ -e "$$f" ] || continue; \
	  for d in $$(losetup --list --noheadings --output NAME --associated "$$f"); do losetup --detach "$$d" && echo "$$d"; done; \
	  rm -f "$$f"; done

stress: ## long randomized stress runs
	$(GO) test -race -tags invariants -run 'Stress|PowerCut|Faults|FaultMatrix' -timeout 30m -count 1 ./engine/ -args -stress.long

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzExtentMap$$' -fuzztime $(FUZZTIME) ./mapper/
	$(GO) test -run '^$$' -fuzz '^FuzzBatcher$$' -fuzztime $(FUZZTIME) ./engine/

lint: ## staticcheck
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
