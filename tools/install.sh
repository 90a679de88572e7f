#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv/ with the OpenMMLab stack.
#
# Settings (environment variables; docs/install.md has the details):
#   TORCH=pip|system      pip (default): torch from requirements/constraints.txt; system: keep
#                         the torch (>= 2.6) and torchvision of $PYTHON's environment
#   TNT_MM_MMCV_OPS=auto|cpu|cuda   which mmcv to build; auto: cuda when torch sees a GPU
#   TORCH_CUDA_ARCH_LIST, MAX_JOBS, CUDA_HOME   for the CUDA build (tools/mmcv_build.py)
#   WHEELHOUSE=DIR        install from DIR only, with no network (make wheelhouse fills it)
#   PYTHON, VENV, TNT_MM_CACHE
#
# Idempotent: a .venv whose stamp matches the requirement files and the mmcv variant, and that
# passes the final check, is reused as is. mmcv 2.1.0 has no wheel for today's torch, so it is
# built from source once per variant and the wheel is cached outside the repository, keyed by
# the torch version, the Python tag and the variant. Decisions and early refusals come from
# tools/mmcv_build.py; pip's and the build's output go to $VENV/install.log, whose end is shown
# when a step fails.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="${VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
TORCH_MODE="${TORCH:-pip}"
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
# refuse: one line, no log tail (for refusals that are not a tool's failure)
refuse() { printf '[install] %s\n' "$*" >&2; exit 2; }
# quiet CMD...: run CMD with its output in the log only
quiet() { "$@" >>"${LOG:-/dev/null}" 2>&1; }
# pin NAME: the version requirements/constraints.txt pins (the one source of versions)
pin() { sed -n "s/^$1==\([^ ;#]*\).*/\1/p" "$CONSTRAINTS"; }
MMCV_VERSION="$(pin mmcv)"

case "$TORCH_MODE" in
    pip|system) ;;
    *) refuse "ERROR: TORCH=$TORCH_MODE is not pip or system. Fix: unset TORCH (pip's torch $(pin torch)) or TORCH=system (keep your environment's torch)." ;;
esac
if [ -n "${WHEELHOUSE:-}" ]; then
    [ -d "$WHEELHOUSE" ] || refuse "ERROR: WHEELHOUSE=$WHEELHOUSE is not a folder. Fix: make wheelhouse WHEELHOUSE=$WHEELHOUSE on a machine with network, then copy it here."
    # the wheelhouse alone: no index, so a missing wheel fails now instead of being fetched
    export PIP_FIND_LINKS="$(cd "$WHEELHOUSE" && pwd)" PIP_NO_INDEX=1
fi

stamp_value() {
    cat requirements/*.txt setup.py tools/install.sh tools/mmcv_build.py | sha256sum | cut -d' ' -f1
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
print(f"torch {torch.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmpretrain {mmpretrain.__version__}")
PY
}

# plan: the mmcv variant and build settings, as shell variables (or one refusal line)
plan() {
    local out
    out="$("$VENV/bin/python" tools/mmcv_build.py plan)" || exit 2
    eval "$out"
}

# one check (the imports take seconds): its output is the summary
if [ -x "$VENV/bin/python" ] && [ -f "$VENV/.tnt_mm_stamp" ] \
        && "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
    plan
    if [ "$(cat "$VENV/.tnt_mm_stamp")" = "$(stamp_value) $TORCH_MODE $MMCV_VARIANT_KEY" ] \
            && summary=$(check_env 2>/dev/null) \
            && ops=$("$VENV/bin/python" -W ignore tools/mmcv_build.py verify --variant "$MMCV_VARIANT" 2>/dev/null); then
        say "reusing $VENV ($summary; $ops)"
        exit 0
    fi
fi

command -v "$PYTHON_BIN" >/dev/null || die "'$PYTHON_BIN' not found; set PYTHON=/path/to/python3.11"
mkdir -p "$VENV"
LOG="$VENV/install.log"  # git-ignored with .venv/
: >"$LOG"
say "pip's and the builds' output: $LOG"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
SITE_PACKAGES=""
if [ -f "$VENV/pyvenv.cfg" ]; then  # a venv made for the other TORCH mode
    over_system="$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg")"
    if { [ "$over_system" = true ] && [ "$TORCH_MODE" = pip ]; } \
            || { [ "$over_system" != true ] && [ "$TORCH_MODE" = system ]; }; then
        refuse "ERROR: $VENV was made for the other torch (include-system-site-packages = $over_system), TORCH=$TORCH_MODE now. Fix: rm -rf $VENV, then make install again."
    fi
fi

if [ "$TORCH_MODE" = system ]; then
    SYSTEM_TORCH="$("$PYTHON_BIN" -c 'import torch; print(torch.__file__)' 2>/dev/null)" \
        || refuse "ERROR: TORCH=system, but $PYTHON_BIN cannot import torch. Fix: PYTHON=/path/to/the/python/with/torch, or leave TORCH unset for pip's torch."
    if [ ! -x "$PY" ]; then
        say "creating $VENV over $("$PYTHON_BIN" --version)'s packages (TORCH=system)"
        quiet "$PYTHON_BIN" -m venv --system-site-packages "$VENV" || die "could not create a venv; install python3-venv"
    fi
    SITE_PACKAGES="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    # A venv over a venv sees the base interpreter's packages, not the middle venv's: list the
    # middle one's site-packages in a .pth file.
    "$PYTHON_BIN" -c 'import site, sys; sys.prefix != sys.base_prefix and print("\n".join(site.getsitepackages()))' \
        >"$SITE_PACKAGES/_tnt_mm_system_site.pth"
    FOUND_TORCH="$("$PY" -c 'import torch; print(torch.__file__)' 2>/dev/null || true)"
    [ "$FOUND_TORCH" = "$SYSTEM_TORCH" ] || die "the venv finds torch at '${FOUND_TORCH:-nowhere}', not $SYSTEM_TORCH"
    "$PY" - <<'PY' || refuse "ERROR: the environment's torch is too old or has no torchvision (above). Fix: torch >= 2.6 with its torchvision, or leave TORCH unset."
import sys
import torch
major, minor = (int(x) for x in torch.__version__.split('.')[:2])
if (major, minor) < (2, 6):
    sys.exit(f'torch {torch.__version__} < 2.6')
import torchvision  # noqa: F401
PY
    # Pins of what the environment ($PYTHON's, not the venv) has are dropped: its packages stay
    # where they meet the ranges of requirements/*.txt; only missing ones come at the tested
    # version.
    EFFECTIVE_CONSTRAINTS="$VENV/constraints.txt"
    "$PYTHON_BIN" - "$CONSTRAINTS" >"$EFFECTIVE_CONSTRAINTS" <<'PY'
import re, sys
from importlib import metadata
have = {re.sub(r'[-_.]+', '-', d.metadata['Name']).lower() for d in metadata.distributions()}
for line in open(sys.argv[1]):
    name = re.split(r'[=<>!~;\s\[]', line.strip(), maxsplit=1)[0]
    if not line.startswith('#') and re.sub(r'[-_.]+', '-', name).lower() not in have:
        print(line.rstrip())
PY
else
    if [ ! -x "$PY" ]; then
        command -v "$PYTHON_BIN" >/dev/null || die "'$PYTHON_BIN' not found"
        say "creating $VENV with $("$PYTHON_BIN" --version)"
        quiet "$PYTHON_BIN" -m venv "$VENV" || die "could not create a venv; install python3-venv"
    fi
    SITE_PACKAGES="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    EFFECTIVE_CONSTRAINTS="$CONSTRAINTS"
fi
PIPC=("${PIP[@]}" install -c "$EFFECTIVE_CONSTRAINTS")

say "base tools"
quiet "${PIPC[@]}" --upgrade pip wheel 'setuptools>=77.0.3,<80' ninja psutil \
    || die "could not install pip, wheel, setuptools, ninja, psutil"

if [ "$TORCH_MODE" = pip ]; then
    say "torch $(pin torch) + torchvision $(pin torchvision)"
    quiet "${PIPC[@]}" "torch==$(pin torch)" "torchvision==$(pin torchvision)" \
        || die "could not install torch and torchvision"
else
    say "torch $("$PY" -c 'import torch; print(torch.__version__)') from $(dirname "$(dirname "$SYSTEM_TORCH")") (TORCH=system)"
fi

plan
PYTAG="$("$PY" -c 'import sys; print(f"cp{sys.version_info[0]}{sys.version_info[1]}")')"
TORCH_INSTALLED="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
WHEEL_DIR="$CACHE_ROOT/mmcv-$MMCV_VERSION-torch$TORCH_INSTALLED-$PYTAG-$MMCV_VARIANT_KEY"
if [ "$MMCV_VARIANT" = cuda ]; then
    say "mmcv variant: $MMCV_VARIANT_KEY (architectures from $ARCH_SOURCE), $BUILD_JOBS jobs"
else
    say "mmcv variant: cpu (CPU kernels only; TNT_MM_MMCV_OPS=cuda for GPU kernels), $BUILD_JOBS jobs"
fi

if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
    BUILD_ENV=(MMCV_WITH_OPS=1 MAX_JOBS="$BUILD_JOBS")
    if [ "$MMCV_VARIANT" = cuda ]; then
        if [ "$TOOLKIT" = pip ]; then
            say "CUDA $TORCH_CUDA toolkit (nvcc, cccl) into the venv: no system toolkit of that version"
            quiet "${PIP[@]}" install "cuda-toolkit[nvcc,cccl]==$TORCH_CUDA.*" \
                || refuse "ERROR: no CUDA $TORCH_CUDA toolkit: none on this machine (CUDA_HOME, nvcc on PATH, /usr/local/cuda) and pip could not install cuda-toolkit==$TORCH_CUDA.* (offline, or not in WHEELHOUSE; see $LOG). Fix: install CUDA $TORCH_CUDA and set CUDA_HOME, or make the wheelhouse with TNT_MM_MMCV_OPS=cuda, or TNT_MM_MMCV_OPS=cpu."
            # where the cuda-toolkit wheels put nvcc, the headers and the libraries
            TOOLKIT_HOME="$SITE_PACKAGES/nvidia/cu${TORCH_CUDA%%.*}"
        fi
        out="$("$PY" tools/mmcv_build.py toolkit --cuda-home "$TOOLKIT_HOME" \
            --cxx "${CXX:-g++}" --link-root "$VENV/lib/tnt_mm_cudart")" || exit 2
        eval "$out"
        say "nvcc $NVCC_VERSION from $CUDA_HOME accepts ${CXX:-g++}"
        BUILD_ENV+=(FORCE_CUDA=1 CUDA_HOME="$CUDA_HOME" TORCH_CUDA_ARCH_LIST="$BUILD_ARCHS"
                    LIBRARY_PATH="${CUDART_LINK_DIR:+$CUDART_LINK_DIR:}${LIBRARY_PATH:-}")
        say "building mmcv $MMCV_VERSION with CUDA ops for $BUILD_ARCHS against torch $TORCH_INSTALLED ($PYTAG); about 55 CPU-minutes per architecture"
    else
        # mmcv's setup.py takes the CUDA branch whenever torch sees a GPU: hide it
        BUILD_ENV+=(CUDA_VISIBLE_DEVICES= FORCE_CUDA=)
        say "building mmcv $MMCV_VERSION with CPU ops against torch $TORCH_INSTALLED ($PYTAG); about 12 minutes on 2 cores"
    fi
    BUILD="$(mktemp -d)"
    trap 'rm -rf "$BUILD"' EXIT
    quiet "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation --no-cache-dir \
        -d "$BUILD" "mmcv==$MMCV_VERSION" || die "could not get the mmcv $MMCV_VERSION sdist${WHEELHOUSE:+ from $WHEELHOUSE}"
    tar -xzf "$BUILD"/mmcv-"$MMCV_VERSION".tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20; mmcv 2.1.0's setup.py hard-codes -std=c++17.
    sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    # mmcv's build imports torch (no build isolation); --no-cache-dir so pip never reuses a
    # wheel built against another torch or variant (pip keys its cache by the sdist only).
    BUILD_START=$SECONDS
    (cd "$SRC" && quiet env "${BUILD_ENV[@]}" "${PIP[@]}" wheel --no-deps \
        --no-build-isolation --no-cache-dir -w "$BUILD/dist" .) || die "the mmcv build failed"
    say "mmcv build took $((SECONDS - BUILD_START)) s"
    mkdir -p "$WHEEL_DIR"
    cp "$BUILD"/dist/mmcv-*.whl "$WHEEL_DIR"/
    say "cached $(ls "$WHEEL_DIR") in $WHEEL_DIR"
fi

# install_pkgs SPEC...: pip install, where the environment's OpenCV is not opencv-python (a
# headless build serves the same cv2) without the opencv-python that mmengine's and mmcv's
# wheels ask for by name: the packages come without dependencies, then their other ones.
OTHER_OPENCV=0
if [ "$TORCH_MODE" = system ] && "$PY" -c 'import cv2' 2>/dev/null \
        && ! "$PY" -c 'from importlib.metadata import version; version("opencv-python")' 2>/dev/null; then
    OTHER_OPENCV=1
    say "keeping the environment's OpenCV $("$PY" -c 'import cv2; print(cv2.__version__)') for mmengine and mmcv"
fi
install_pkgs() {
    if [ "$OTHER_OPENCV" = 0 ]; then
        quiet "${PIPC[@]}" "$@"
        return
    fi
    quiet "${PIPC[@]}" --no-deps "$@" || return 1
    local needs
    needs="$("$PY" - <<'PY'
from importlib.metadata import requires
from packaging.requirements import Requirement
ours = ('mmengine', 'mmcv')  # named again, pip would resolve their opencv-python anew
for dist in ours:
    for text in requires(dist) or []:
        req = Requirement(text)
        if req.name.startswith('opencv') or req.name in ours:
            continue
        if req.marker is None or req.marker.evaluate({'extra': ''}):
            print(str(req).replace(' ', ''))
PY
)" || return 1
    quiet "${PIPC[@]}" $needs
}

say "mmcv from $WHEEL_DIR"
install_pkgs "mmengine==$(pin mmengine)" "$WHEEL_DIR"/mmcv-*.whl \
    || die "could not install mmengine and the mmcv wheel; delete $WHEEL_DIR to rebuild it"
# pip keeps an installed mmcv of the same version, built as another variant: replace it
quiet "${PIP[@]}" install --force-reinstall --no-deps "$WHEEL_DIR"/mmcv-*.whl \
    || die "could not install the mmcv wheel; delete $WHEEL_DIR to rebuild it"

say "OpenMMLab libraries, test and ONNX-export requirements, and tnt_mm (editable)"
REQUIREMENTS="$VENV/requirements.txt"
cat requirements/runtime.txt requirements/mminstall.txt requirements/tests.txt \
    requirements/deploy.txt >"$REQUIREMENTS"
if [ "$OTHER_OPENCV" = 1 ]; then  # installed above; named again, they would bring opencv-python
    sed -i -E '/^(mmengine|mmcv)([^a-z_-]|$)/d' "$REQUIREMENTS"
fi
quiet "${PIPC[@]}" -r "$REQUIREMENTS" || die "could not install the requirements"
quiet "${PIP[@]}" install --no-deps --no-build-isolation -e . || die "could not install tnt_mm"

say "the fused CPU inner-transformer kernels of tnt_mm/ops (compiled once, about 40 s)"
quiet "$PY" -c "from tnt_mm.ops import load_extension; assert load_extension() is not None" \
    || say "warning: the kernel did not build (see $LOG); TNT falls back to scaled_dot_product_attention"

if ! summary="$(check_env)"; then
    die "the environment in $VENV is incomplete (see the failed imports above). Remove it with 'rm -rf .venv' and run 'make install' again; if mmcv.ops fails, delete $WHEEL_DIR to rebuild mmcv."
fi
ops="$("$PY" -W ignore tools/mmcv_build.py verify --variant "$MMCV_VARIANT")" || exit 2
echo "$(stamp_value) $TORCH_MODE $MMCV_VARIANT_KEY" > "$VENV/.tnt_mm_stamp"
say "ok: $summary"
say "ok: $ops"
