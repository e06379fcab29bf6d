# wbengine — see README.md. `make help` lists the targets.
GO        ?= go
ICEBER    := -tags iceber -ldflags=-checklinkname=0
FUZZTIME  ?= 30s
# wbbench -version: the VCS revision, also where the go command records none (a git worktree).
VCSFLAGS  = -ldflags "-X github.com/wbengine/wbengine/bench.vcsRevision=$$(git rev-parse HEAD 2>/dev/null) \
	-X github.com/wbengine/wbengine/bench.vcsTime=$$(git log -1 --format=%cI 2>/dev/null) \
	-X github.com/wbengine/wbengine/bench.vcsModified=$$(git diff --quiet HEAD 2>/dev/null || echo true)"
# The SQLite VFS example is a module of its own (so the library's module
# graph does not grow by a database): ./... from the root does not reach
# it, and every target below that covers the code runs it there too.
SQLITEVFS := examples/sqlitevfs

.PHONY: help test vet testrace test-iceber test-sqlite tidy build stress stress-sqlite fuzz bench bench-iceber bench-sqlite ramdev ramdev-clean lint

help: ## list targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

test: tidy vet testrace test-iceber test-sqlite ## what CI runs: tidy check, vet, race tests with invariants, iceber backend tests, the SQLite VFS

tidy: ## go mod tidy -diff for both modules (fails when go.mod or go.sum is not tidy)
	$(GO) mod tidy -diff
	cd $(SQLITEVFS) && $(GO) mod tidy -diff

vet: ## go vet, plain and with the iceber and invariants tags, both modules
	$(GO) vet ./...
	$(GO) vet -tags invariants ./...
	cd $(SQLITEVFS) && $(GO) vet ./... && $(GO) vet -tags invariants ./...

testrace: ## unit, integration and crash tests under -race with invariant checks
	$(GO) test -race -tags invariants -timeout 6m ./...

test-iceber: ## the iceber backend's tests (needs the linkname flag; not under -race: outside code with known hangs)
	$(GO) test $(ICEBER) -timeout 120s ./ring/

# All of it under -race, the crash, power-cut and broken-sync rounds too:
# one build (the cold -race build of SQLite takes ~45 s; a second,
# plain build for the crash tests would cost more than -race costs them),
# and the race detector watches the VFS and the engine through crashes.
# ~40 s of tests; the crash tests need root and a loop device and skip
# without them, saying so. -v prints every crash, power-cut and
# broken-sync round: its commits and what the checks found.
test-sqlite: ## the SQLite VFS example's tests (unit, crash, power-cut, broken-sync), under -race with invariants
	cd $(SQLITEVFS) && $(GO) test -race -tags invariants -timeout 6m -v ./...

build: ## build wbbench (wbbench -version names the commit)
	$(GO) build -buildvcs=auto $(VCSFLAGS) -o wbbench ./cmd/wbbench

bench: build ## run wbbench on its default target (root: a 1 GiB /dev/shm loop device; else a temp file); BENCHFLAGS="-pattern runs -runs 3" adds flags
	./wbbench $(BENCHFLAGS)

bench-iceber: ## build wbbench with the iceber backend and run it with -ring iceber (BENCHFLAGS adds flags)
	$(GO) build $(ICEBER) -o wbbench-iceber ./cmd/wbbench
	./wbbench-iceber -ring iceber $(BENCHFLAGS)

bench-sqlite: ## SQLite on the wbengine VFS against SQLite's own VFS on ext4 (root: /dev/shm loop devices it makes and removes); SQLITEBENCHFLAGS="-runs 3" adds flags
	cd $(SQLITEVFS) && $(GO) run ./cmd/sqlitebench $(SQLITEBENCHFLAGS)

ramdev: ## make a loop device over a /dev/shm file (root; RAMDEV_SIZE=1G) for wbbench -device, and print its path
	@f=$$(mktemp --suffix=.img /dev/shm/wbengine-ramdev-XXXXXX) && truncate -s $${RAMDEV_SIZE:-1G} "$$f" && \
	  losetup --find --show "$$f" || { rm -f "$$f"; exit 1; }

ramdev-clean: ## detach and delete the loop devices `make ramdev` made (and only those)
	@for f in /dev/shm/wbengine-ramdev-*.img; do [ -e "$$f" ] || continue; \
	  for d in $$(losetup --list --noheadings --output NAME --associated "$$f"); do losetup --detach "$$d" && echo "$$d"; done; \
	  rm -f "$$f"; done

stress: stress-sqlite ## long randomized stress runs
	$(GO) test -race -tags invariants -run 'Stress|PowerCut|Faults|FaultMatrix' -timeout 60m -count 1 ./engine/ -args -stress.long

stress-sqlite: ## the SQLite VFS's crash, power-cut and broken-sync tests, 50 rounds per journal mode
	cd $(SQLITEVFS) && $(GO) test -race -tags invariants -run 'Crash|PowerCut|BrokenSync' -timeout 60m -count 1 -v . -args -stress.long

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzExtentMap$$' -fuzztime $(FUZZTIME) ./mapper/
	$(GO) test -run '^$$' -fuzz '^FuzzBatcher$$' -fuzztime $(FUZZTIME) ./engine/

lint: ## staticcheck, both modules (and the root module with -tags iceber,invariants)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -tags iceber,invariants ./...
	cd $(SQLITEVFS) && $(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
