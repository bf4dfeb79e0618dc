# loopgate. Every target that needs Debian packages or Go modules installs
# them first (scripts/deps.sh); run as root on Debian 12.
GO      ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build generate test bench demo fuzz deps clean deb

all: build

deps:
	@sh scripts/deps.sh

build: deps
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/loopgate ./cmd/loopgate

# The Debian package, bin/loopgate_<version>_amd64.deb (packaging/; nfpm as a
# library): binary, systemd unit, conffile, man pages and completions.
deb: build
	$(GO) run ./packaging/mkdeb -binary bin/loopgate -version $(VERSION) -out bin -require-completion

# Rebuild the committed eBPF objects and Go bindings with clang.
generate: deps
	$(GO) generate ./bpf

# The whole suite: unit tests, fuzz seed corpora, real-kernel end-to-end tests.
test: deps
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 12m ./...

# Proxy vs direct in the same run; see README "Performance".
bench: deps
	$(GO) test -run '^$$' -bench '^Benchmark(RoundTrip|ConnectNonTarget|Approval.*)$$' -benchtime 2000x -count 3 ./tests/
	$(GO) test -run '^$$' -bench . -benchtime 2s ./store/
	$(GO) test -run '^$$' -bench Pgbench -benchtime 1x -timeout 30m -v ./tests/ | grep -E '^(Benchmark|    pg|ok|FAIL)' 
	$(GO) test -run '^$$' -bench '^BenchmarkHTTP$$' -benchtime 1x -timeout 10m ./tests/ | grep -E '^(Benchmark|ok|FAIL)'
	$(GO) test -run '^$$' -bench '^Benchmark(Proxy|Mint)$$' -benchtime 4000x ./l7/http/
	$(GO) test -run '^$$' -bench '^BenchmarkSSH(Transfer|Login|Concurrent)$$' -benchtime 3x -timeout 20m ./tests/ | grep -E '^(Benchmark|ok|FAIL)'

# Short fuzzing of every parser of untrusted bytes (seeds live in testdata/fuzz).
fuzz: deps
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./policy/
	$(GO) test -run '^$$' -fuzz FuzzClassify -fuzztime 30s ./policy/sqlclass/
	$(GO) test -run '^$$' -fuzz FuzzShellClassify -fuzztime 30s ./policy/shellclass/
	$(GO) test -run '^$$' -fuzz FuzzSFTPFrames -fuzztime 30s ./l7/ssh/sftpwire/
	$(GO) test -run '^$$' -fuzz FuzzSCPStream -fuzztime 30s ./l7/ssh/sftpwire/
	$(GO) test -run '^$$' -fuzz FuzzCastWriter -fuzztime 30s ./l7/ssh/cast/
	$(GO) test -run '^$$' -fuzz FuzzCastReader -fuzztime 30s ./l7/ssh/cast/
	$(GO) test -run '^$$' -fuzz FuzzStreamMask -fuzztime 30s ./policy/mask/
	$(GO) test -run '^$$' -fuzz FuzzAgentStream -fuzztime 30s ./l7/postgres/
	$(GO) test -run '^$$' -fuzz FuzzLoopAgentStream -fuzztime 30s ./l7/postgres/
	$(GO) test -run '^$$' -fuzz FuzzStartup -fuzztime 30s ./l7/postgres/
	$(GO) test -run '^$$' -fuzz FuzzOptions -fuzztime 30s ./l7/postgres/
	$(GO) test -run '^$$' -fuzz FuzzCopyRow -fuzztime 30s ./l7/postgres/
	$(GO) test -run '^$$' -fuzz FuzzCanonicalJSON -fuzztime 30s ./store/
	$(GO) test -run '^$$' -fuzz '^FuzzJSON$$' -fuzztime 30s ./policy/mask/
	$(GO) test -run '^$$' -fuzz '^FuzzNormalizePath$$' -fuzztime 30s ./l7/http/
	$(GO) test -run '^$$' -fuzz '^FuzzFrames$$' -fuzztime 30s ./l7/http/
	$(GO) test -run '^$$' -fuzz '^FuzzSSE$$' -fuzztime 30s ./l7/http/

demo: build
	@bash scripts/demo.sh

clean:
	rm -rf bin
