# obdfs — see README.md. Every target that needs system packages installs
# them itself through test/install-deps.sh (root on a Debian machine).
GO        ?= go
BIN       := bin/obdfs
FUZZTIME  ?= 30000x
BENCHTIME ?= 1s
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)

.PHONY: all build deps test test-short fuzz bench bench-go bench-convert bench-lazy bench-fleet bench-metrics demo test-vm bench-ublk vet clean

all: build

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/obdfs

# A static binary for the ublk VM initramfs.
bin/obdfs-static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $@ ./cmd/obdfs

deps:
	bash test/install-deps.sh

# The format packages must keep building off Linux (darwin stands for all).
PORTABLE = ./lsmt ./zfile ./tarwrap ./layerfile ./image ./remote

vet:
	$(GO) vet ./...
	GOOS=darwin $(GO) vet $(PORTABLE)

# The test command of the README: vet, every package with -race (root-only
# tests skip with a message when not root), the FUSE suites again over FUSE
# over io_uring (internal/fusetest; as root it enables the fuse module's
# enable_uring for the run and restores it), zfile's allocation test (which
# -race skips), then a short run of every fuzz target.
test: deps vet
	$(GO) test -race -count=1 -timeout 30m ./...
	OBDFS_TEST_FUSE_URING=on $(GO) test -race -count=1 -timeout 30m ./fusefs ./server ./test/e2e
	$(GO) test -count=1 -run Allocs ./zfile
	$(MAKE) fuzz FUZZTIME=$(FUZZTIME)

test-short: vet
	$(GO) test -short -count=1 ./...

fuzz:
	bash test/fuzz.sh $(FUZZTIME)

# Side by side (test/bench/side-by-side.sh): the same dataset served by obdfs
# (lz4, zstd), qemu-storage-daemon (qcow2 zstd chain), a memory-backed go-fuse
# file and the raw image in the page cache; medians and ratios go into
# docs/PERFORMANCE.md. Tunables: BENCH_DATA_MB, BENCH_RUNS, BENCH_FIO_SECS,
# BENCH_TARGETS, BENCH_TESTS, BENCH_DOC (see the script's header).
bench: deps build
	bash test/bench/side-by-side.sh

# obdfs convert side by side with umoci unpack of the same image, and the
# conversion cache on a second image (test/bench/convert.sh; BENCH_RUNS).
bench-convert: deps
	bash test/bench/convert.sh

# Lazy registry reads (test/bench/lazy.sh): a real image in docker-registry
# behind the shaping proxy at several RTTs and bandwidths; obdfs lazy, with
# trace replay, with background download, eager pull, and
# qemu-storage-daemon's http driver; medians into docs/PERFORMANCE.md.
# Tunables: BENCH_NETS, BENCH_RUNS, BENCH_ROWS, BENCH_WORKLOADS, BENCH_DIR.
bench-lazy: deps build
	bash test/bench/lazy.sh

# Fleets (test/bench/fleet.sh): origin bytes for BENCH_NODES daemons starting
# one image at once behind a cold docker-registry pull-through mirror; and the
# cost of --metrics on reads (test/bench/metrics.sh: fio, two daemons).
bench-fleet: deps build
	bash test/bench/fleet.sh

bench-metrics: deps build
	bash test/bench/metrics.sh

# The Go benchmarks (testing.B) of every package.
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

demo: deps build
	bash test/demo.sh

# Real-kernel ublk tests: qemu (TCG) boots Debian's kernel with ublk_drv and
# runs the ublk package tests and the CLI checks inside (test/vm/run.sh).
# VM_KERNELS="6.12 6.1" adds Debian 12's 6.1 kernel with ublk_drv built out
# of tree (legacy opcodes); downloads are cached in /var/cache/obdfs-vm.
VM_KERNELS ?= 6.12
test-vm: deps
	bash test/vm/run.sh $(VM_KERNELS)

# fio: ublk vs FUSE file through a direct-I/O loop vs loop on a flat raw copy
# of the same STACK (default: the fixture stack). Needs a host with ublk_drv.
BENCH_STACK ?=
bench-ublk: deps build
	bash test/vm/bench-ublk.sh $(BENCH_STACK)

clean:
	rm -rf bin
