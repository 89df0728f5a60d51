#!/usr/bin/env bash
# The GPU check, in one call of a few minutes: the CUDA tests, `lmrl-gym bench decoding` at batch 1024 with
# achieved TFLOP/s and MFU (fp32 and bf16), `lmrl-gym bench vs-trl --quick` in bf16, and the policy and
# decoding tests on the machine's own torch build. Made for a machine with no network: it uses the torch
# of the Python it finds and installs everything else from wheelhouse/ (scripts/build_wheelhouse.sh builds
# it where pip reaches the index). Without CUDA it says so, skips the CUDA parts and runs the rest small.
#
#   bash scripts/gpu_check.sh [--dry-run] [--skip-install] [--budget SECONDS]
#
#   --dry-run        print the machine found and the plan, run nothing
#   --skip-install   use the Python as it is (lmrl-gym installed there with its [dev,hf,bench] extras)
#   --budget S       stop starting steps after S seconds in all (default 540: a 10-minute limit with room)
#
# Environment: PYTHON, the interpreter whose torch to use (default: the first of python3, python that
# imports torch); OUT, the folder for the logs and summary.md (default: ./gpu_check_out); WHEELHOUSE
# (default: ./wheelhouse). Exit status: 0 when no step failed or timed out (skipped steps are fine).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
DRY_RUN=0
SKIP_INSTALL=0
BUDGET=540
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --skip-install) SKIP_INSTALL=1 ;;
        --budget) BUDGET="$2"; shift ;;
        -h | --help) sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

OUT="${OUT:-$ROOT/gpu_check_out}"
WHEELHOUSE="${WHEELHOUSE:-$ROOT/wheelhouse}"
# No network there: the Hugging Face libraries must not try the hub (each try waits for a timeout).
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
DEADLINE=$((SECONDS + BUDGET))

# ------------------------------------------------------------------------------------------- the machine
PY=""
for candidate in "${PYTHON:-}" python3 python; do
    if [[ -n "$candidate" ]] && command -v "$candidate" >/dev/null && "$candidate" -c 'import torch' 2>/dev/null; then
        PY="$(command -v "$candidate")"
        break
    fi
done
if [[ -z "$PY" ]]; then
    echo "no Python here imports torch (tried: ${PYTHON:-} python3 python); set PYTHON to one that does" >&2
    exit 1
fi
MACHINE="$("$PY" - <<'EOF'
import platform
import torch

print(f"python: {platform.python_version()} ({__import__('sys').executable})")
print(f"torch: {torch.__version__} (CUDA build {torch.version.cuda})")
if torch.cuda.is_available():
    props = torch.cuda.get_device_properties(0)
    print(f"CUDA: available, {torch.cuda.device_count()} device(s)")
    print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, compute capability {props.major}.{props.minor}, "
          f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'NOT supported'}")
else:
    print("CUDA: not available (the CUDA steps are skipped)")
EOF
)"
CUDA=0
grep -q '^CUDA: available' <<<"$MACHINE" && CUDA=1
# Every test file with a test marked cuda (pyproject's `cuda` marker), and this script's own tests.
mapfile -t CUDA_TEST_FILES < <(grep -l '@pytest.mark.cuda' tests/test_*.py)

if ((CUDA)); then
    DECODING_RUNS=(
        "--device cuda --batch 1024 --dtype fp32"
        "--device cuda --batch 1024 --dtype bf16"
        # A GPT-2-small-sized model (12 x 768, vocab 32,000), where the matmuls are large enough to matter.
        "--device cuda --batch 1024 --dtype bf16 --n-layer 12 --n-embd 768 --vocab 32000"
    )
    VS_TRL="--quick --device cuda --precision bf16"
else
    # CPU: one tiny run of each dtype, to check that the command works.
    DECODING_RUNS=(
        "--device cpu --batch 8 --new-tokens 8 --repeats 1 --dtype fp32"
        "--device cpu --batch 8 --new-tokens 8 --repeats 1 --dtype bf16"
    )
    VS_TRL=""
fi

plan() {
    echo "$MACHINE"
    echo "logs: $OUT"
    echo "plan (each step with a timeout, all within ${BUDGET}s):"
    if ((SKIP_INSTALL)); then
        echo "  install         skipped (--skip-install): $PY as it is"
    elif [[ -d "$WHEELHOUSE" ]]; then
        echo "  install         a new venv seeing $PY's packages (its torch); pip install --no-index from $WHEELHOUSE"
        echo "                  (requirements-{core,dev,hf,bench}.txt), then pip install --no-deps -e ."
    else
        echo "  install         no $WHEELHOUSE: $PY as it is (build one with scripts/build_wheelhouse.sh)"
    fi
    echo "  cuda-tests      pytest -m cuda ${CUDA_TEST_FILES[*]}$( ((CUDA)) || echo '  (they skip: no CUDA)')"
    for run in "${DECODING_RUNS[@]}"; do echo "  bench-decoding  lmrl-gym bench decoding $run"; done
    if ((CUDA)); then
        echo "  bench-vs-trl    lmrl-gym bench vs-trl $VS_TRL"
        echo "  policy-tests    pytest -m 'not slow' tests/test_policy.py tests/test_decoding.py"
    else
        echo "  bench-vs-trl    skipped: no CUDA"
        echo "  policy-tests    skipped: no CUDA (CI runs them on CPU)"
    fi
}

if ((DRY_RUN)); then
    plan
    exit 0
fi

mkdir -p "$OUT"
VENV="$(mktemp -d "${TMPDIR:-/tmp}/lmrl-gym-gpu-check.XXXXXX")"
trap 'rm -rf "$VENV"' EXIT
# The device tool brings back at most 8 files from $OUT: one log per step and summary.md.
rm -f "$OUT"/*.log "$OUT/summary.md"
plan | tee "$OUT/detect.log"

# ------------------------------------------------------------------------------------------- the steps
NAMES=()
STATUSES=()
TIMES=()
NOTES=()
record() { NAMES+=("$1"); STATUSES+=("$2"); TIMES+=("$3"); NOTES+=("$4"); }

# run_step NAME LIMIT FUNCTION: run FUNCTION in a child bash under `timeout`, its output to the console and
# $OUT/NAME.log; the log's last line is the summary's note. Exit 77 from FUNCTION means "skipped".
run_step() {
    local name="$1" limit="$2" fn="$3" left start rc
    left=$((DEADLINE - SECONDS - 10))
    if ((left < 30)); then
        record "$name" SKIP 0 "out of the ${BUDGET}s budget"
        return
    fi
    ((limit <= left)) || limit=$left
    echo
    echo "=== $name (timeout ${limit}s)"
    start=$SECONDS
    set +e
    timeout --kill-after=10 "$limit" bash -euo pipefail -c "$fn" 2>&1 | tee -a "$OUT/$name.log"
    rc=${PIPESTATUS[0]}
    set -e
    local took=$((SECONDS - start)) last
    last="$(grep -v '^[[:space:]]*$' "$OUT/$name.log" 2>/dev/null | tail -n 1 | cut -c1-100)"
    case "$rc" in
        0) record "$name" PASS "$took" "$([[ "$name" == *tests ]] && echo "$last")" ;;
        77) record "$name" SKIP "$took" "$last" ;;
        124 | 137) record "$name" TIMEOUT "$took" "stopped after ${limit}s" ;;
        *) record "$name" FAIL "$took" "exit $rc: $last" ;;
    esac
}

export ROOT OUT WHEELHOUSE VENV PY CUDA
export CUDA_TEST_FILES_LIST="${CUDA_TEST_FILES[*]}"

step_install() {
    # Not --system-site-packages: where the machine's python3 is itself a virtual environment (as on the
    # GPU machines seen: /opt/torch/.venv), that flag shows the base interpreter's packages, not its torch.
    # A .pth file adds the site folders of that Python instead (their own .pth files processed), after
    # the new environment's, so what pip installs here shadows older versions there.
    if "$PY" -m venv "$VENV"; then
        PIP=("$VENV/bin/python" -m pip)
    else # no ensurepip: a venv without pip, driven by that Python's pip
        "$PY" -m venv --without-pip "$VENV"
        PIP=("$PY" -m pip --python "$VENV/bin/python")
    fi
    local purelib
    purelib="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    "$PY" - "$purelib" <<'EOF'
import sys
from pathlib import Path

folders = [p for p in sys.path if p.endswith(("site-packages", "dist-packages")) and Path(p).is_dir()]
lines = [f"import site; site.addsitedir({folder!r})" for folder in folders]
Path(sys.argv[1], "_gpu_check_outer_site.pth").write_text("\n".join(lines) + "\n")
print(f"the new environment also sees: {', '.join(folders)}")
EOF
    local pip_install=("${PIP[@]}" install --quiet --no-index --find-links "$WHEELHOUSE")
    # core must install; each other group is tried whole, then a requirement at a time, and what fails
    # is reported (the steps needing it skip).
    "${pip_install[@]}" -r "$WHEELHOUSE/requirements-core.txt"
    local failed=()
    for group in dev hf bench; do
        [[ -s "$WHEELHOUSE/requirements-$group.txt" ]] || continue
        if ! "${pip_install[@]}" -r "$WHEELHOUSE/requirements-$group.txt"; then
            while read -r requirement; do
                "${pip_install[@]}" "$requirement" || failed+=("$requirement")
            done <"$WHEELHOUSE/requirements-$group.txt"
        fi
    done
    # The build backend (setuptools, from core) is installed now: no isolated build, nothing fetched.
    "${PIP[@]}" install --quiet --no-index --no-deps --no-build-isolation -e "$ROOT"
    "$VENV/bin/python" -c 'import agents, lmrl_gym, torch; print("installed; torch", torch.__version__, "from", torch.__file__)'
    if ((${#failed[@]})); then
        echo "could not install (their steps will skip): ${failed[*]}"
    fi
}

step_cuda_tests() {
    # shellcheck disable=SC2086  # the list is file names without spaces
    "$VPY" -m pytest -q -p no:cacheprovider -m cuda $CUDA_TEST_FILES_LIST
}

step_bench_decoding() {
    local run
    while read -r run; do
        echo "--- lmrl-gym bench decoding $run"
        # shellcheck disable=SC2086
        "$VPY" -m agents.commands.cli bench decoding $run
        echo
    done <<<"$DECODING_RUNS_LIST"
}

step_bench_vs_trl() {
    if ! "$VPY" -m agents.commands.cli bench vs-trl --help >/dev/null 2>&1; then
        echo "lmrl-gym bench vs-trl is not in this checkout (agents/bench/vs_trl.py and its command), or it cannot start: $("$VPY" -m agents.commands.cli bench vs-trl --help 2>&1 | tail -n 1)"
        exit 77
    fi
    if ! "$VPY" -c 'import trl' 2>/dev/null; then
        echo "trl is not installed (see install.log): pip install 'lmrl-gym[bench]'"
        exit 77
    fi
    # shellcheck disable=SC2086
    "$VPY" -m agents.commands.cli bench vs-trl $VS_TRL
}

step_policy_tests() {
    # CPU tests (they pin device="cpu"), here to check the policies and decoding on this machine's torch.
    "$VPY" -m pytest -q -p no:cacheprovider -m "not slow" tests/test_policy.py tests/test_decoding.py
}
export -f step_install step_cuda_tests step_bench_decoding step_bench_vs_trl step_policy_tests
DECODING_RUNS_LIST="$(printf '%s\n' "${DECODING_RUNS[@]}")"
export DECODING_RUNS_LIST VS_TRL

record detect PASS 0 "$(grep '^GPU:\|^CUDA: not' <<<"$MACHINE" | head -n 1 | cut -c1-100)"
VPY="$PY"
if ((SKIP_INSTALL)); then
    record install SKIP 0 "--skip-install: $PY as it is"
elif [[ ! -d "$WHEELHOUSE" ]]; then
    record install SKIP 0 "no wheelhouse/: $PY as it is"
else
    run_step install 240 step_install
    if [[ "${STATUSES[-1]}" == PASS ]]; then
        VPY="$VENV/bin/python"
        if grep -q '^could not install' "$OUT/install.log"; then
            NOTES[-1]="$(grep '^could not install' "$OUT/install.log" | cut -c1-100)"
        fi
    else
        echo "install failed (see $OUT/install.log); going on with $PY as it is"
    fi
fi
export VPY

run_step cuda-tests 180 step_cuda_tests
run_step bench-decoding 240 step_bench_decoding
if ((CUDA)); then
    run_step bench-vs-trl 240 step_bench_vs_trl
    run_step policy-tests 150 step_policy_tests
else
    record bench-vs-trl SKIP 0 "no CUDA"
    record policy-tests SKIP 0 "no CUDA (CI runs them on CPU)"
fi

# ------------------------------------------------------------------------------------------- summary
{
    echo "# GPU check, $(date -u '+%Y-%m-%d %H:%M UTC'), ${SECONDS}s"
    echo
    echo '```'
    echo "$MACHINE"
    echo '```'
    echo
    echo "| step | status | seconds | note |"
    echo "|---|---|---:|---|"
    for i in "${!NAMES[@]}"; do
        echo "| ${NAMES[$i]} | ${STATUSES[$i]} | ${TIMES[$i]} | ${NOTES[$i]//|/\\|} |"
    done
    if [[ -f "$OUT/bench-decoding.log" ]]; then
        echo
        echo "bench decoding (TFLOP/s and MFU):"
        echo
        grep -E '^(--- |causal|seq2seq|FLOPs counted|\| (KV-cached|one teacher))' "$OUT/bench-decoding.log" || true
    fi
} >"$OUT/summary.md"
echo
echo "=== summary ($OUT/summary.md)"
cat "$OUT/summary.md"
for status in "${STATUSES[@]}"; do
    [[ "$status" == FAIL || "$status" == TIMEOUT ]] && exit 1
done
exit 0
