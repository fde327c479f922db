#!/usr/bin/env bash
# make fuzz / make fuzz-smoke: builds the cargo-fuzz targets in fuzz/ (libFuzzer, ASan,
# debug assertions) and runs each for FUZZ_TIME seconds; fails on the first crash,
# leak, timeout or out-of-memory, leaving the input under out/fuzz/artifacts/<target>/.
#
#   scripts/fuzz.sh smoke   fresh corpus + fuzz/seeds + fuzz/regressions (make test)
#   scripts/fuzz.sh long    the corpus kept in $KATA_RV_CACHE/fuzz-corpus grows per run
#
# cargo-fuzz comes from crates.io into the cache; the stable toolchain is used with
# RUSTC_BOOTSTRAP=1 for the sanitizer flags (the machine has no other toolchain). The
# build's target dir is kept in the cache too, so a fresh clone rebuilds only our crates.
set -euo pipefail
mode="${1:-smoke}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${KATA_RV_CACHE:-$HOME/.cache/kata-rv}"
cargo_fuzz_version=0.13.2
tools="$cache/tools/cargo-fuzz-$cargo_fuzz_version"
case "$mode" in
  smoke) time_per_target="${FUZZ_TIME:-10}" ;;
  long) time_per_target="${FUZZ_TIME:-300}" ;;
  *) echo "usage: $0 smoke|long" >&2; exit 2 ;;
esac
if [ "$(id -u)" != 0 ]; then
  echo "fuzz: virtio_net needs root (a network namespace and a tap); run as root" >&2
  exit 1
fi

if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install --locked cargo-fuzz --version "$cargo_fuzz_version" --root "$tools"
fi
export RUSTC_BOOTSTRAP=1
target_dir="$cache/fuzz-target"
cd "$root/fuzz"
"$tools/bin/cargo-fuzz" build -O -a --target-dir "$target_dir"
bin_dir="$target_dir/x86_64-unknown-linux-gnu/release"

out="$root/out/fuzz"
mkdir -p "$out"
work="$(mktemp -d /tmp/kata-rv-fuzz.XXXXXX)"
trap 'rm -rf "$work"' EXIT
failed=()
for target in $("$tools/bin/cargo-fuzz" list); do
  case "$mode" in
    smoke) corpus="$work/$target" ;;
    long) corpus="$cache/fuzz-corpus/$target" ;;
  esac
  mkdir -p "$corpus" "$out/artifacts/$target"
  dirs=("$corpus")
  for extra in "$root/fuzz/seeds/$target" "$root/fuzz/regressions/$target"; do
    if [ -d "$extra" ]; then dirs+=("$extra"); fi
  done
  log="$out/$target.log"
  # New inputs go to the first directory only: seeds and regressions stay as committed.
  if "$bin_dir/$target" "${dirs[@]}" -max_total_time="$time_per_target" -timeout=10 \
      -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len=65536 -print_final_stats=1 \
      -artifact_prefix="$out/artifacts/$target/" >"$log" 2>&1; then
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
    cov="$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -n 's/.*cov: \([0-9]*\).*/\1/p')"
    echo "fuzz $target: ok, ${runs:-?} executions in ${time_per_target}s, ${cov:-?} edges covered"
  else
    echo "fuzz $target: FAILED (log: $log, input under $out/artifacts/$target/)"
    grep -m5 -E 'panicked|ERROR: |SUMMARY' "$log" | sed 's/^/  /' || true
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}"
  exit 1
fi
echo "fuzz: every target passed ($mode, ${time_per_target}s each)"
