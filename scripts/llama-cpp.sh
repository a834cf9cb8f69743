#!/usr/bin/env bash
# Build (or find) the llama.cpp tools that kiln compares itself against:
# llama-bench, llama-perplexity, llama-server, llama-tokenize and llama-simple (greedy
# continuations, for scripts/export-vs-llama-cpp.sh).
#
# Usage:
#   scripts/llama-cpp.sh [CACHE_DIR]
#   LLAMA_CPP_DIR=/path/to/llama.cpp scripts/llama-cpp.sh
#
# CACHE_DIR defaults to ${KILN_HOME:-$HOME/.cache/kiln}/llama.cpp. The source is the llama.cpp
# vendored in the PyPI sdist of llama-cpp-python (a pinned version, reachable through the
# machine's own pip, which works where GitHub does not). LLAMA_CPP_DIR reuses an existing
# llama.cpp checkout (or its bin directory) instead; it is built there if its binaries are missing.
#
# The bin directory is the only thing printed on stdout, so callers can write
#   BIN=$(scripts/llama-cpp.sh)
# Everything else goes to stderr. A second run is instant: nothing is rebuilt when the
# binaries already exist. No llama.cpp code lives in this repository.
set -euo pipefail

readonly LLAMA_CPP_PYTHON_VERSION=0.3.36
# sha256 of llama_cpp_python-0.3.36.tar.gz as served by PyPI; guards against a changed upload.
readonly SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
readonly TARGETS=(llama-bench llama-perplexity llama-server llama-tokenize llama-simple)

log() { echo "llama-cpp.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

# True when every target binary exists in directory $1.
have_binaries() {
    local t
    for t in "${TARGETS[@]}"; do
        [[ -x "$1/$t" ]] || return 1
    done
}

# Download the sdist with pip (no deps; only this package kept from binaries, so that pip
# prepares its metadata with wheels of cmake and ninja rather than building them) into $1.
fetch_sdist() {
    local cache=$1 tarball="$1/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    mkdir -p "$cache"
    if [[ ! -f $tarball ]]; then
        log "downloading llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION} sdist with pip"
        python3 -m pip download --no-deps --no-binary llama-cpp-python -d "$cache" \
            "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" >&2
    fi
    echo "${SDIST_SHA256}  ${tarball}" | sha256sum --check --quiet - >&2 \
        || die "sha256 mismatch for $tarball (delete it and retry)"
    log "unpacking $tarball"
    tar -xzf "$tarball" -C "$cache"
}

# Configure and build the targets in source dir $1 (into $1/build).
build() {
    local src=$1 jobs
    jobs=$(nproc 2>/dev/null || echo 2)
    command -v cmake >/dev/null || die "cmake not found (apt-get install cmake, or pip install cmake)"
    log "building ${TARGETS[*]} in $src/build with $jobs jobs (takes a while on few cores)"
    # CURL off: no network code needed; NATIVE on: fastest code for this CPU, which is what a
    # fair speed comparison wants; tests off: they are many and slow to build; prebuilt UI off:
    # the server's web page would be downloaded from the internet at build time.
    cmake -S "$src" -B "$src/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
        -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_USE_PREBUILT_UI=OFF >&2
    cmake --build "$src/build" --config Release -j "$jobs" --target "${TARGETS[@]}" >&2
}

main() {
    local cache=${1:-${KILN_HOME:-$HOME/.cache/kiln}/llama.cpp} src

    if [[ -n ${LLAMA_CPP_DIR:-} ]]; then
        # An existing bin directory is used as is.
        if have_binaries "$LLAMA_CPP_DIR"; then
            echo "$LLAMA_CPP_DIR"
            return
        fi
        src=$LLAMA_CPP_DIR
        [[ -f $src/CMakeLists.txt ]] || die "LLAMA_CPP_DIR=$src is neither a llama.cpp source dir nor a bin dir"
    else
        src="$cache/llama_cpp_python-${LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp"
        [[ -f $src/CMakeLists.txt ]] || fetch_sdist "$cache"
    fi

    if ! have_binaries "$src/build/bin"; then
        build "$src"
        have_binaries "$src/build/bin" || die "build finished but binaries are missing in $src/build/bin"
    fi
    echo "$src/build/bin"
}

main "$@"
