#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers (fuzz/, cargo-fuzz + libFuzzer on the nightly
# toolchain): every target in turn for FUZZ_SECONDS (default 60) seconds, one process each.
#
#   bash .ci/fuzz.sh                  fails when nightly or cargo-fuzz cannot be had (make fuzz)
#   bash .ci/fuzz.sh --if-available   says it skipped and succeeds instead (CI)
#
# Environment: FUZZ_SECONDS (per target), FUZZ_TARGETS (space-separated, default: all),
# FUZZ_LOG_DIR (default target/fuzz-logs: one libFuzzer log per target), FUZZ_NICE (niceness
# of the runs, default 10, so that a run does not starve builds on a shared machine).
# One input running over 10 s or the process over 2 GB of memory (a single allocation that
# large included) counts as a failure, besides the properties each target asserts.
# The committed seeds in fuzz/corpus/<target> are read, never written: what the fuzzer finds
# goes to fuzz/corpus-run/<target> (not committed). A crash or failed property stops that
# target, leaves the input in fuzz/artifacts/<target>/ and makes the script exit 1 after the
# other targets have run.
set -euo pipefail
cd "$(dirname "$0")/.."

if_available=0
[ "${1:-}" = "--if-available" ] && if_available=1
seconds=${FUZZ_SECONDS:-60}
log_dir=${FUZZ_LOG_DIR:-target/fuzz-logs}
niceness=${FUZZ_NICE:-10}

unavailable() {
	if [ "$if_available" = 1 ]; then
		echo "fuzz: SKIPPED: $* (the fuzz targets need the nightly toolchain and cargo-fuzz)"
		exit 0
	fi
	echo "fuzz: error: $*" >&2
	exit 1
}

command -v rustup >/dev/null 2>&1 || unavailable "rustup not found"
rustup run nightly rustc --version >/dev/null 2>&1 ||
	unavailable "no nightly toolchain (install it with: rustup toolchain install nightly)"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
	echo "fuzz: installing cargo-fuzz"
	cargo install cargo-fuzz --locked || unavailable "cannot install cargo-fuzz"
fi

# Every binary of fuzz/ but the seed extractor.
targets=${FUZZ_TARGETS:-$(cargo +nightly fuzz list --fuzz-dir fuzz | grep -vx 'extract-seeds')}
mkdir -p "$log_dir"
echo "fuzz: $(rustup run nightly rustc --version); ${seconds}s per target: $(echo $targets)"
nice -n "$niceness" cargo +nightly fuzz build --fuzz-dir fuzz

failed=()
for t in $targets; do
	mkdir -p "fuzz/corpus-run/$t" "fuzz/corpus/$t"
	log="$log_dir/$t.log"
	echo "fuzz: $t for ${seconds}s (log: $log)"
	if nice -n "$niceness" cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus-run/$t" "fuzz/corpus/$t" -- \
		-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
		# The last status line: runs, coverage (cov: edges, ft: features), corpus, exec/s.
		echo "fuzz: $t ok: $(grep -E '^#[0-9]+' "$log" | tail -n 1)"
	else
		failed+=("$t")
		echo "fuzz: $t FAILED:"
		grep -E 'panicked at|^==[0-9]+==ERROR|Test unit written|SUMMARY' "$log" | head -n 8 | sed 's/^/    /'
	fi
done
if [ ${#failed[@]} -gt 0 ]; then
	echo "fuzz: failed targets: ${failed[*]} (inputs in fuzz/artifacts/<target>/; reproduce with: cargo +nightly fuzz run --fuzz-dir fuzz <target> <input>)"
	exit 1
fi
echo "fuzz: all targets ok"
