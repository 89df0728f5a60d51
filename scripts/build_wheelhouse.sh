#!/usr/bin/env bash
# Download, here (where pip reaches the package index), the wheels that scripts/gpu_check.sh installs on a
# GPU machine that has no network, Python 3.12 and its own torch: every runtime and test dependency of
# `pip install -e ".[dev,hf,bench]"` (and trl, the vs-trl benchmark's) for CPython 3.12 on x86-64 Linux,
# except torch and what only torch needs (nvidia-*, triton, sympy, ...): the GPU machine's torch build is
# the one to measure, and its CUDA wheels alone are gigabytes.
#
#   bash scripts/build_wheelhouse.sh [--latest] [--max-mib N]
#
# Writes wheelhouse/ at the repository root (git-ignored):
#   *.whl                     the wheels (sdist-only dependencies built here into pure-Python wheels)
#   requirements-GROUP.txt    what gpu_check.sh asks pip to install, one file per group (core: the
#                             project's dependencies and build backend; dev, hf; bench: trl), each listing
#                             the requirements whose own wheel is here
#   dropped.txt               packages left out to fit --max-mib
#
# Versions: by default those of the Python environment running this script (what the tests ran on here),
# where it has them; --latest takes the newest that fit the project's ranges instead.
# Size: the wheelhouse travels to the GPU machine with the working tree, 64 MiB for everything, so packages
# the GPU run does not need (ruff, TensorBoard, ...) are dropped until the folder fits --max-mib (default
# 58), and then large compiled ones that GPU images ship beside torch (pyarrow, pandas, numpy, matplotlib):
# pip takes those from the GPU machine's Python, if it has them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/wheelhouse"
PY="${PYTHON:-python3}"
LATEST=0
MAX_MIB=58
# The GPU machine's torch (2.11 seen there); the resolver takes the versions of everything else that fit it.
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"

while (($#)); do
    case "$1" in
        --latest) LATEST=1 ;;
        --max-mib) MAX_MIB="$2"; shift ;;
        -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done

# The target: CPython 3.12 on x86-64 Linux. pip matches each manylinux_2_N tag exactly, so list the ones
# wheels are commonly built for (the GPU machine's glibc is newer than all of them).
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
    --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_27_x86_64
    --platform manylinux_2_31_x86_64 --platform manylinux_2_34_x86_64 --platform manylinux_2_35_x86_64)
# Dependencies published as source only: built here into (pure-Python) wheels, since --only-binary refuses
# them. docopt: num2words' command-line script needs it.
SDIST_ONLY=(docopt)
# Dropped, a group at a time, while the folder is over --max-mib. First what gpu_check.sh's steps never use:
# the linter, TensorBoard logging (training's tensorboard_log only), sb3-contrib (some CPU tests only). Then
# large compiled packages that GPU images ship beside torch, which pip then takes from the GPU machine.
DROP_GROUPS=(
    "ruff"
    "tensorboard tensorboard-data-server grpcio absl-py markdown werkzeug protobuf"
    "sb3-contrib"
    "pyarrow"
    "pandas"
    "numpy"
    "matplotlib pillow fonttools kiwisolver contourpy"
)

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The requirements, by group: the project's runtime ones (torch aside) and its build backend, which
# `pip install --no-build-isolation -e .` needs offline; the dev and hf extras; bench: its extra, and trl.
"$PY" - "$ROOT/pyproject.toml" "$work" <<'EOF'
import re
import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    pyproject = tomllib.load(f)
extras = pyproject["project"].get("optional-dependencies", {})
groups = {
    "core": pyproject["project"]["dependencies"] + pyproject["build-system"]["requires"],
    "dev": extras.get("dev", []),
    "hf": extras.get("hf", []),
    "bench": extras.get("bench", []) + ["trl"],
}
# torch is the GPU machine's; a self-reference (bench = ["lmrl-gym[hf]", ...]) names groups listed here anyway.
seen = {"torch", pyproject["project"]["name"].lower().replace("_", "-")}
for group, requirements in groups.items():
    with open(f"{sys.argv[2]}/requirements-{group}.txt", "w") as out:
        for requirement in requirements:
            name = re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            if name not in seen:
                seen.add(name)
                out.write(requirement + "\n")
EOF
cat "$work"/requirements-*.txt >"$work/requirements.txt"

# torch is kept out by a stand-in: an empty wheel `torch==$TORCH_VERSION+stub` offered beside the index and
# pinned by a constraint, so the resolver neither fetches torch nor follows its dependencies.
mkdir -p "$work/links"
"$PY" - "$work/links" "$TORCH_VERSION+stub" <<'EOF'
import sys
import zipfile

folder, version = sys.argv[1], sys.argv[2]
info = f"torch-{version}.dist-info"
with zipfile.ZipFile(f"{folder}/torch-{version}-py3-none-any.whl", "w") as wheel:
    wheel.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: torch\nVersion: {version}\n")
    wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    wheel.writestr(f"{info}/RECORD", "")
EOF
echo "torch==$TORCH_VERSION+stub" >"$work/constraints.txt"
if ((!LATEST)); then
    # The versions installed here, where they are (torch and this project aside).
    "$PY" -m pip freeze --exclude-editable | grep -v -i -E '^(torch|nvidia-|triton|lmrl-gym)' |
        grep -E '^[A-Za-z0-9_.-]+==' >>"$work/constraints.txt" || true
fi

for name in "${SDIST_ONLY[@]}"; do
    pin="$(grep -i -E "^$name==" "$work/constraints.txt" || echo "$name")"
    "$PY" -m pip wheel --quiet --no-deps --wheel-dir "$work/links" "$pin"
done
for whl in "$work"/links/*.whl; do # built here, so it must be pure Python to install on the GPU machine
    [[ "$whl" == *-none-any.whl ]] || { echo "not a pure-Python wheel: $whl" >&2; exit 1; }
done

rm -rf "$DEST"
mkdir -p "$DEST"
"$PY" -m pip download --quiet --dest "$DEST" "${TARGET[@]}" --find-links "$work/links" \
    --constraint "$work/constraints.txt" --requirement "$work/requirements.txt"
rm -f "$DEST"/torch-*+stub-*.whl

normalise() { tr '[:upper:]' '[:lower:]' | tr '_.' '--'; }
size_mib() { du -sm "$DEST" | cut -f1; }
: >"$DEST/dropped.txt"
dropped=()
for group in "${DROP_GROUPS[@]}"; do
    (($(size_mib) > MAX_MIB)) || break
    for whl in "$DEST"/*.whl; do
        name="$(basename "$whl" | cut -d- -f1 | normalise)"
        if [[ " $group " == *" $name "* ]]; then
            rm "$whl"
            dropped+=("$name")
            echo "$name" >>"$DEST/dropped.txt"
        fi
    done
done
if (($(size_mib) > MAX_MIB)); then
    echo "wheelhouse is $(size_mib) MiB, over --max-mib $MAX_MIB after dropping ${dropped[*]}" >&2
    exit 1
fi

# Each group's requirements whose own wheel stayed; a dropped dependency of one (pyarrow of datasets, say)
# must then be on the GPU machine, or that group's install fails there and the steps needing it skip.
for file in "$work"/requirements-core.txt "$work"/requirements-dev.txt "$work"/requirements-hf.txt \
    "$work"/requirements-bench.txt; do
    while read -r requirement; do
        name="$(echo "$requirement" | sed -E 's/[<>=!~[; ].*//' | normalise)"
        printf '%s\n' "${dropped[@]}" | grep -qx -- "$name" || echo "$requirement"
    done <"$file" >"$DEST/$(basename "$file")"
done

echo "wheelhouse: $(ls "$DEST"/*.whl | wc -l) wheels, $(du -sh "$DEST" | cut -f1) in $DEST"
if ((${#dropped[@]})); then echo "dropped to fit $MAX_MIB MiB: ${dropped[*]}"; fi
