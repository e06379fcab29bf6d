# wbengine — see README.md. `make help` lists the targets.
GO        ?= go
ICEBER    := -tags iceber -ldflags=-checklinkname=0
FUZZTIME  ?= 30s

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

build: ## build wbbench
	$(GO) build -o wbbench ./cmd/wbbench

stress: ## long randomized stress runs
	$(GO) test -race -tags invariants -run 'Stress' -timeout 30m -count 1 ./... -args -stress.long

fuzz: ## run each fuzz target for FUZZTIME
	$(GO) test -run '^$$' -fuzz '^FuzzExtentMap$$' -fuzztime $(FUZZTIME) ./mapper/
	$(GO) test -run '^$$' -fuzz '^FuzzBatcher$$' -fuzztime $(FUZZTIME) ./engine/

lint: ## staticcheck
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...
