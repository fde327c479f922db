# kata-rv: Kata Containers runtime with Dragonball (riscv64 and x86_64).
# The two commands a newcomer needs are `make run` (arrives with the shim) and `make test`.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
ARCH ?= riscv64
SUPPORTED_ARCHES := riscv64 x86_64
# The arches multi-arch targets (test, bench) cover; `ARCHES=x86_64` narrows them.
ARCHES ?= $(SUPPORTED_ARCHES)
CARGO ?= cargo
export KATA_RV_CACHE ?= $(HOME)/.cache/kata-rv
OUT := $(CURDIR)/out
# Cargo's target dir lives in the cache too, one per clone path: a fresh clone at the same
# path (CI's) then rebuilds only our own crates, not every dependency for every target and
# profile, and `make test` builds incrementally, so rustc reuses what did not change in them.
# Per path, because cargo judges our crates fresh by mtime: a dir shared by two clones could
# take one's build for the other's newer edit. `make setup` trims the cache's target dirs
# when they outgrow KATA_RV_TARGET_CAP_GIB.
export CARGO_TARGET_DIR ?= $(KATA_RV_CACHE)/cargo-target/$(shell printf %s '$(CURDIR)' | sha256sum | cut -c1-12)
TARGET_DIR := $(CARGO_TARGET_DIR)

static_target_riscv64 := riscv64gc-unknown-linux-gnu
static_target_x86_64 := x86_64-unknown-linux-musl
cross_cc_riscv64 := riscv64-linux-gnu-gcc
cross_cc_x86_64 := gcc
kernel_files_riscv64 := Image config
kernel_files_x86_64 := vmlinux bzImage config
l1_kernel_files_riscv64 := Image config
l1_kernel_files_x86_64 := vmlinux config
STATIC_BINS := kvm-host-init kvm-smoke test-init dragonball kata-agent containerd-shim-kata-v2

ifeq ($(filter $(ARCH),$(SUPPORTED_ARCHES)),)
$(error ARCH=$(ARCH) is not supported: use riscv64 or x86_64)
endif

.PHONY: help setup build host static kernel kvm-host-kernel busybox initrd pause images kvm-artifacts kvm-host \
        vm-tests vm-suite bench bench-bins virtiofsd containerd cni runc e2e-tests e2e install run \
        lint test test-riscv64 fuzz fuzz-smoke soak clean

help:
	@echo "make setup                 install packages, rustup targets, virtiofsd (idempotent)"
	@echo "make build                 host binaries + static binaries for both arches"
	@echo "make kernel ARCH=a         microVM guest kernel (cached in $(KATA_RV_CACHE))"
	@echo "make kvm-host-kernel ARCH=a  the KVM test host's kernel (KVM, 9p, CNI), in out/ARCH/kvm-host"
	@echo "make initrd ARCH=a         test initrd + sandbox initrd (kata-agent as /init)"
	@echo "make images                OCI image tarballs: busybox + pause, both arches"
	@echo "make kvm-host ARCH=a CMD=c run CMD inside the KVM test host of ARCH"
	@echo "make bench BENCH=boot|fs|ctr|trace|cri|overhead|parallel|density  boot / virtio-fs / ctr-run / CRI benchmarks, start-path trace, idle-sandbox memory, parallel start, density (in the KVM test hosts)"
	@echo "make test                  the whole test suite (what CI runs)"
	@echo "make fuzz [FUZZ_TIME=s]    every cargo-fuzz target for s seconds (300), corpus kept in the cache; root"
	@echo "make fuzz-smoke            every fuzz target for 10 s plus the seeds and regressions (in make test)"
	@echo "make test-riscv64          the riscv64 KVM-host suites alone"
	@echo "make run [ARCH=a]          ctr run busybox uname -a in a kata-rv microVM (private containerd)"
	@echo "make e2e ARCH=a            containerd + ctr end-to-end tests inside the KVM test host"
	@echo "make soak ARCH=a           a 200-cycle soak (SOAK_CYCLES) with an exact leak check, in the KVM test host"
	@echo "make install [PREFIX=/usr] shim, configuration, kernel and initrd (DESTDIR for packaging)"
	@echo "make clean                 remove build outputs (keeps the cache)"

setup:
	@scripts/setup.sh

host:
	$(CARGO) build --workspace --release

# Static binaries of ARCH (for guests and the KVM test hosts) copied into out/ARCH.
static:
	$(CARGO) build --release --target $(static_target_$(ARCH)) -p kvm-host -p dragonball -p kata-agent -p containerd-shim-kata-v2 --bins
	mkdir -p $(OUT)/$(ARCH)
	for b in $(STATIC_BINS); do \
	  cp -f $(TARGET_DIR)/$(static_target_$(ARCH))/release/$$b $(OUT)/$(ARCH)/$$b; done

build: setup host
	$(MAKE) --no-print-directory static ARCH=riscv64
	$(MAKE) --no-print-directory static ARCH=x86_64

kernel:
	dir=$$(guest-kernel/build.sh $(ARCH)); mkdir -p $(OUT)/$(ARCH); \
	for f in $(kernel_files_$(ARCH)); do ln -sfn $$dir/$$f $(OUT)/$(ARCH)/$$f; done

# The KVM test host's own kernel (KVM, 9p, what containerd and CNI use) in out/ARCH/kvm-host.
kvm-host-kernel:
	dir=$$(guest-kernel/build.sh $(ARCH) kvm-host); mkdir -p $(OUT)/$(ARCH)/kvm-host; \
	for f in $(l1_kernel_files_$(ARCH)); do ln -sfn $$dir/$$f $(OUT)/$(ARCH)/kvm-host/$$f; done

busybox:
	bin=$$(tests/images/busybox.sh $(ARCH)); mkdir -p $(OUT)/$(ARCH); \
	ln -sfn $$bin $(OUT)/$(ARCH)/busybox; ln -sfn $$bin.links $(OUT)/$(ARCH)/busybox.links

# The test initrd (test-init as /init) and the sandbox initrd (kata-agent as /init).
initrd: host static
	$(TARGET_DIR)/release/rootfs-builder -o $(OUT)/$(ARCH)/test-initrd.cpio.gz \
	  --init $(OUT)/$(ARCH)/test-init
	$(TARGET_DIR)/release/rootfs-builder -o $(OUT)/$(ARCH)/kata-containers-initrd.img \
	  --init $(OUT)/$(ARCH)/kata-agent --dir etc --dir run --dir tmp:1777

pause:
	mkdir -p $(OUT)/$(ARCH)
	$(cross_cc_$(ARCH)) -static -O2 -s -o $(OUT)/$(ARCH)/pause tests/images/pause.c

images:
	mkdir -p $(OUT)/images
	for a in $(ARCHES); do \
	  $(MAKE) --no-print-directory busybox pause ARCH=$$a; \
	  tests/images/oci-image.py --arch $$a --name docker.io/library/busybox:latest \
	    -o $(OUT)/images/busybox-$$a.tar --file $(OUT)/$$a/busybox:/bin/busybox:0755 \
	    --links $(OUT)/$$a/busybox.links:/bin/busybox --dir tmp:1777 --dir proc --dir sys \
	    --dir dev --dir root:700 --text etc/passwd='root:x:0:0:root:/root:/bin/sh' \
	    --text etc/group='root:x:0:' --cmd '["sh"]'; \
	  tests/images/oci-image.py --arch $$a --name registry.k8s.io/pause:3.6 \
	    -o $(OUT)/images/pause-$$a.tar --file $(OUT)/$$a/pause:/pause:0755 \
	    --entrypoint '["/pause"]'; \
	done

# A static virtiofsd for ARCH (riscv64: cross-built; x86_64: the one `make setup` installs).
virtiofsd:
	mkdir -p $(OUT)/$(ARCH)
	if [[ $(ARCH) == riscv64 ]]; then ln -sfn $$(scripts/virtiofsd-riscv64.sh) $(OUT)/$(ARCH)/virtiofsd; \
	else rm -f $(OUT)/$(ARCH)/virtiofsd; cp $$(command -v virtiofsd) $(OUT)/$(ARCH)/virtiofsd; fi

# Everything a KVM test host of ARCH needs: its kernel, the guest kernel, static binaries,
# virtiofsd; riscv64 also busybox, containerd, CNI plugins and runc (the CRI test's baseline).
kvm-artifacts: kernel kvm-host-kernel static virtiofsd
	if [[ $(ARCH) == riscv64 ]]; then $(MAKE) --no-print-directory busybox containerd cni runc ARCH=riscv64; fi

# containerd + ctr for the test host: riscv64 cross-built from Debian's source (cached);
# x86_64 uses the installed Debian package (the x86_64 test host runs on this machine's /).
containerd:
	if [[ $(ARCH) == riscv64 ]]; then dir=$$(scripts/containerd-riscv64.sh); \
	  for b in containerd ctr containerd-shim-runc-v2; do ln -sfn $$dir/$$b $(OUT)/riscv64/$$b; done; fi

# CNI plugins (bridge, host-local, loopback, portmap) for containerd's CRI in the test host:
# riscv64 cross-built from Debian's source (cached) into out/riscv64/cni; x86_64 uses the
# installed Debian package (/usr/lib/cni).
cni:
	if [[ $(ARCH) == riscv64 ]]; then ln -sfn $$(scripts/cni-plugins-riscv64.sh) $(OUT)/riscv64/cni; fi

# runc for the riscv64 test host (the ctr bench's baseline): cross-built from Debian's source
# (cgo, static, cached); x86_64 uses the installed Debian package.
runc:
	if [[ $(ARCH) == riscv64 ]]; then ln -sfn $$(scripts/runc-riscv64.sh) $(OUT)/riscv64/runc; fi

# Test executables of the crates that run inside a KVM test host, built for ARCH.
VM_TEST_PKGS := -p dragonball -p dbs-address-space -p dbs-arch -p dbs-boot -p dbs-interrupt -p dbs-legacy-devices \
                -p dbs-virtio-devices -p kata-agent
vm-tests:
	$(CARGO) test --release --target $(static_target_$(ARCH)) $(VM_TEST_PKGS) \
	  --features dragonball/kvm-tests,kata-agent/vm-tests --no-run \
	  --message-format=json | scripts/test-executables.py $(OUT)/$(ARCH)/tests

# Runs those tests inside the KVM test host of ARCH (natively where KVM is real).
# riscv64 runs the VM tests twice: with the in-kernel AIA, and with an L1 whose KVM has no
# irqchip, so every guest interrupt goes through the userspace PLIC.
VM_SUITE_CMD = for t in $(OUT)/$(ARCH)/tests/*; do echo "==== $$t"; $$t --test-threads=1 || exit 1; done
vm-suite: kvm-artifacts initrd vm-tests
	$(CARGO) build --release -p kvm-host --bin kvm-host
	KATA_RV_EXPECT_IRQCHIP=$(if $(filter riscv64,$(ARCH)),aia,) $(TARGET_DIR)/release/kvm-host --arch $(ARCH) \
	  --timeout 1200 -- '$(VM_SUITE_CMD)'
	if [[ $(ARCH) == riscv64 ]]; then \
	  echo "==== riscv64 again, L1 without AIA: the userspace PLIC fallback"; \
	  KATA_RV_EXPECT_IRQCHIP=plic $(TARGET_DIR)/release/kvm-host --arch $(ARCH) --no-aia \
	    --timeout 1200 -- '$(VM_SUITE_CMD)'; fi

# End-to-end tests: a private containerd + ctr driving the shim, inside the KVM test host.
e2e-tests:
	$(CARGO) test --release --target $(static_target_$(ARCH)) -p kata-rv-e2e --features kata-rv-e2e/e2e --no-run \
	  --message-format=json | scripts/test-executables.py $(OUT)/$(ARCH)/e2e
e2e: kvm-artifacts initrd images e2e-tests
	$(CARGO) build --release -p kvm-host --bin kvm-host
	$(TARGET_DIR)/release/kvm-host --arch $(ARCH) --timeout 1800 -- \
	  'for t in $(OUT)/$(ARCH)/e2e/*; do echo "==== $$t"; $$t --test-threads=1 --nocapture || exit 1; done'

SOAK_CYCLES ?= 200
soak: kvm-artifacts initrd images e2e-tests
	$(CARGO) build --release -p kvm-host --bin kvm-host
	$(TARGET_DIR)/release/kvm-host --arch $(ARCH) --timeout 7200 -- \
	  'KATA_RV_SOAK_CYCLES=$(SOAK_CYCLES) $(OUT)/$(ARCH)/e2e/kata-rv-e2e-ctr --ignored soak_alone --test-threads=1 --nocapture'

# Installs the shim where containerd finds it by name, the configuration, and the guest
# kernel + initrd of ARCH (the machine's own architecture by default).
PREFIX ?= /usr
DESTDIR ?=
INSTALL_ARCH := $(shell uname -m)
install_kernel_riscv64 := Image
install_kernel_x86_64 := vmlinux
install:
	$(MAKE) --no-print-directory kernel static initrd ARCH=$(INSTALL_ARCH)
	install -D -m 0755 $(OUT)/$(INSTALL_ARCH)/containerd-shim-kata-v2 $(DESTDIR)$(PREFIX)/bin/containerd-shim-kata-v2
	install -D -m 0644 $(OUT)/$(INSTALL_ARCH)/$(install_kernel_$(INSTALL_ARCH)) \
	  $(DESTDIR)$(PREFIX)/share/kata-containers/$(install_kernel_$(INSTALL_ARCH))-dragonball
	install -D -m 0644 $(OUT)/$(INSTALL_ARCH)/kata-containers-initrd.img \
	  $(DESTDIR)$(PREFIX)/share/kata-containers/kata-containers-initrd.img
	install -d $(DESTDIR)/etc/kata-containers/runtime-rs
	sed 's|@PREFIX@|$(PREFIX)|g' configuration/configuration-dragonball-$(INSTALL_ARCH).toml \
	  > $(DESTDIR)/etc/kata-containers/runtime-rs/configuration.toml
	if [[ -x $(OUT)/$(INSTALL_ARCH)/virtiofsd ]]; then install -D -m 0755 $(OUT)/$(INSTALL_ARCH)/virtiofsd \
	  $(DESTDIR)$(PREFIX)/libexec/kata-rv/virtiofsd; fi

# The main job: `ctr run --runtime io.containerd.kata.v2 … uname -a` in a microVM, with a
# private containerd, natively where KVM is real, otherwise inside the KVM test host.
run: setup
	$(MAKE) --no-print-directory kvm-artifacts initrd images ARCH=$(ARCH)
	$(CARGO) build --release -p kvm-host --bin kvm-host
	$(TARGET_DIR)/release/kvm-host --arch $(ARCH) --timeout 900 -- 'tests/e2e/run.sh $(ARCH)'

# Benchmarks print figures (and ratios against a baseline where one exists); BENCH=boot.
BENCH ?= boot
bench-bins: kvm-artifacts initrd
	$(CARGO) build --release --target $(static_target_$(ARCH)) -p kata-rv-bench --bins
	cp -f $(TARGET_DIR)/$(static_target_$(ARCH))/release/{boot-bench,fs-bench} $(OUT)/$(ARCH)/

bench:
	for a in $(ARCHES); do $(MAKE) --no-print-directory bench-bins containerd runc ARCH=$$a; done
	$(MAKE) --no-print-directory images
	$(CARGO) build --release -p kvm-host --bin kvm-host
	bench/$(BENCH).sh

kvm-host: kvm-artifacts
	$(CARGO) build --release -p kvm-host --bin kvm-host
	$(TARGET_DIR)/release/kvm-host --arch $(ARCH) -- $(CMD)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --workspace --all-targets --target $(static_target_riscv64) -- -D warnings
	$(CARGO) clippy -p dragonball --all-targets --features kvm-tests -- -D warnings
	$(CARGO) clippy -p dragonball --all-targets --features kvm-tests --target $(static_target_riscv64) -- -D warnings
	$(CARGO) clippy -p kata-agent --all-targets --features vm-tests -- -D warnings
	$(CARGO) clippy -p kata-agent --all-targets --features vm-tests --target $(static_target_riscv64) -- -D warnings
	$(CARGO) clippy -p kata-rv-e2e --all-targets --features e2e -- -D warnings
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml -- --check
	$(CARGO) clippy --manifest-path fuzz/Cargo.toml --all-targets --target-dir $(TARGET_DIR) -- -D warnings

test: export CARGO_INCREMENTAL = 1
test: setup lint
	for a in $(ARCHES); do $(MAKE) --no-print-directory kvm-artifacts initrd ARCH=$$a; done
	$(MAKE) --no-print-directory images
	$(CARGO) test --workspace --release -- --test-threads=2
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory vm-suite ARCH=riscv64
	$(MAKE) --no-print-directory vm-suite ARCH=x86_64
	$(MAKE) --no-print-directory e2e ARCH=riscv64
	$(MAKE) --no-print-directory e2e ARCH=x86_64

test-riscv64: setup
	$(MAKE) --no-print-directory kvm-artifacts initrd ARCH=riscv64
	$(CARGO) test --release -p kvm-host --test kvm_host_smoke -- riscv64
	$(MAKE) --no-print-directory vm-suite ARCH=riscv64

fuzz:
	scripts/fuzz.sh long

fuzz-smoke:
	scripts/fuzz.sh smoke

clean:
	$(CARGO) clean
	rm -rf $(OUT)
