#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv/ with the OpenMMLab stack.
#
# Idempotent: a .venv whose stamp matches the requirement files and that passes the final
# check is reused as is. mmcv 2.1.0 has no wheel for this torch, so it is built from source
# once (about 12 minutes on 2 cores) and the wheel is cached outside the repository, keyed by
# the torch version and the Python tag; later installs take seconds.
# It prints its own steps only; pip's and the build's output go to $VENV/install.log, whose
# end is shown when a step fails.
# The traps this script encodes are recorded in docs/install.md.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.1.0
CACHE_ROOT="${TNT_MM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tnt_mm}"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
LOG=""

say() { printf '[install] %s\n' "$*"; }
die() {
    printf '[install] ERROR: %s\n' "$*" >&2
    if [ -s "$LOG" ]; then
        printf '[install] the full output is in %s; its last lines:\n' "$LOG" >&2
        tail -n 30 "$LOG" >&2
    fi
    exit 1
}
# quiet CMD...: run CMD with its output in the log only
quiet() { "$@" >>"$LOG" 2>&1; }

stamp_value() {
    cat requirements/*.txt setup.py tools/install.sh | sha256sum | cut -d' ' -f1
}

check_env() {
    # -W ignore: the libraries' deprecation warnings are not this check's findings
    "$VENV/bin/python" -W ignore - <<'PY'
import importlib, sys
failed = []
for stmt in ("from mmcv.ops import RoIAlign, nms", "import mmdet", "import mmseg",
             "import mmpretrain", "import timm", "import onnxruntime", "import onnxscript",
             "import tnt_mm"):
    try:
        exec(stmt)
    except Exception as exc:  # report every failure, not just the first
        failed.append(f"{stmt!r}: {type(exc).__name__}: {exc}")
if failed:
    print("\n".join(failed), file=sys.stderr)
    sys.exit(1)
import torch, mmcv, mmdet, mmseg, mmpretrain, mmengine
print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__} (ops ok), "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}")
PY
}

# one check (the imports take seconds): its output is the summary
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.tnt_mm_stamp" ] \
        && [ "$(cat "$VENV/.tnt_mm_stamp")" = "$(stamp_value)" ] \
        && summary=$(check_env 2>/dev/null); then
    say "reusing $VENV ($summary)"
    exit 0
fi

command -v "$PYTHON_BIN" >/dev/null || die "'$PYTHON_BIN' not found; set PYTHON=/path/to/python3.11"
mkdir -p "$VENV"
LOG="$VENV/install.log"  # git-ignored with .venv/
: >"$LOG"
say "pip's and the builds' output: $LOG"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $("$PYTHON_BIN" --version)"
    quiet "$PYTHON_BIN" -m venv "$VENV" || die "could not create a venv; install python3-venv"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

say "base tools"
quiet "${PIP[@]}" install -c "$CONSTRAINTS" --upgrade pip wheel 'setuptools>=77.0.3,<80' \
    ninja psutil || die "could not install pip, wheel, setuptools, ninja, psutil"

say "torch $TORCH_VERSION + torchvision $TORCHVISION_VERSION"
quiet "${PIP[@]}" install -c "$CONSTRAINTS" "torch==$TORCH_VERSION" \
    "torchvision==$TORCHVISION_VERSION" || die "could not install torch and torchvision"

PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
TORCH_INSTALLED="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
WHEEL_DIR="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch$TORCH_INSTALLED-$PYTAG"
if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    say "building mmcv $MMCV_VERSION with ops against torch $TORCH_INSTALLED ($PYTAG); about 12 minutes on 2 cores"
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    quiet "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation --no-cache-dir \
        -d "$BUILD" "mmcv==$MMCV_VERSION" || die "could not download the mmcv $MMCV_VERSION sdist"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0's setup.py hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    # mmcv's build imports torch (no build isolation); --no-cache-dir so pip never reuses a
    # wheel built against another torch (pip keys its cache by the sdist only).
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-2}" quiet "${PIP[@]}" wheel --no-deps \
        --no-build-isolation --no-cache-dir -w "$BUILD/dist" .) || die "the mmcv build failed"
    mkdir -p "$WHEEL_DIR"
    cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR"/
    say "cached $(ls "$WHEEL_DIR")"
fi
say "mmcv from $WHEEL_DIR"
quiet "${PIP[@]}" install -c "$CONSTRAINTS" "$WHEEL_DIR"/mmcv-*.whl \
    || die "could not install the mmcv wheel; delete $WHEEL_DIR to rebuild it"

say "OpenMMLab libraries, test and ONNX-export requirements, and tnt_mm (editable)"
quiet "${PIP[@]}" install -c "$CONSTRAINTS" -r requirements/runtime.txt \
    -r requirements/mminstall.txt -r requirements/tests.txt -r requirements/deploy.txt \
    || die "could not install the requirements"
quiet "${PIP[@]}" install --no-deps --no-build-isolation -e . || die "could not install tnt_mm"

say "the fused CPU inner-transformer kernels of tnt_mm/ops (compiled once, about 40 s)"
quiet "$PY" -c "from tnt_mm.ops import load_extension; assert load_extension() is not None" \
    || say "warning: the kernel did not build (see $LOG); TNT falls back to scaled_dot_product_attention"

if ! summary="$(check_env)"; then
    die "the environment in $VENV is incomplete (see the failed imports above). Remove it with 'rm -rf .venv' and run 'make install' again; if mmcv.ops fails, delete $WHEEL_DIR to rebuild mmcv."
fi
stamp_value > "$VENV/.tnt_mm_stamp"
say "ok: $summary"
