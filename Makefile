# Basalt. `make run` starts the local stack; `make test` runs every test.
GO ?= go
BIN := bin/basalt

.PHONY: run build test test-short bench fuzz openapi lint clean

build:
	$(GO) build -o $(BIN) ./cmd/basalt

## run: the local stack (API on 127.0.0.1:8776; its state persists under ./data unless REDIS_URL is set)
run: build
	./$(BIN) local

## test: install missing test dependencies (.ci/deps), vet, then every test with the race detector
test:
	./.ci/deps
	$(GO) vet ./...
	BASALT_REQUIRE_REDIS=$${BASALT_REQUIRE_REDIS:-1} $(GO) test -race -count=1 -timeout 15m ./...

test-short:
	$(GO) test -short -count=1 ./...

## bench: performance tables (scheduler placement, end-to-end creates, API latency, attach latency and iSCSI/NBD throughput, snapshot and clone time, volume listing at 10,000 and 100,000 volumes; LIST_SIZES=10000,100000,1000000 adds a million, about 10 minutes and 4 GB of Redis)
LIST_SIZES ?= 10000,100000
bench:
	$(GO) test -run '^$$' -bench . -benchtime 2000x ./functions/scheduler/
	$(GO) run ./local/bench
	$(GO) test -run '^$$' -bench SnapshotClone -benchtime 5x ./drivers/file/
	$(GO) test -run '^$$' -bench List -benchtime 100x -timeout 60m ./functions/store/ -args -list.sizes=$(LIST_SIZES)

## fuzz: each fuzz target for FUZZTIME (default 60s), one after the other; the corpora (and any
## crasher, a regression test from then on in `make test`) are under each package's testdata/fuzz
FUZZTIME ?= 60s
FUZZ_TARGETS := \
	FuzzRequests:./functions/api/ FuzzNegotiate:./functions/api/ FuzzListOptions:./functions/api/ \
	FuzzListFilters:./functions/control/ FuzzSortKeys:./functions/control/ FuzzParseDictLiteral:./functions/control/ \
	FuzzCapabilities:./functions/scheduler/ FuzzPyFloat:./functions/scheduler/ \
	FuzzPoolsFromReport:./functions/store/
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		echo "== $${t%%:*} ($${t#*:}, $(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$${t%%:*}\$$" -fuzztime $(FUZZTIME) $${t#*:}; \
	done

## openapi: write openapi/openapi.yaml from the code
openapi:
	$(GO) run ./cmd/basalt openapi > openapi/openapi.yaml

lint:
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet ./...

clean:
	rm -rf bin data
