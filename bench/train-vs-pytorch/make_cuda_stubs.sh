#!/usr/bin/env bash
# The PyPI torch wheel for Linux links against CUDA libraries (cudart, cublas, cudnn, …: several
# GB of separate wheels). For CPU-only use on a machine without them, build stub libraries that
# satisfy the dynamic linker: every CUDA entry point the torch libraries import, returning an
# error code. torch then imports, runs on CPU, and reports torch.cuda.is_available() == False.
#
# usage: make_cuda_stubs.sh TORCH_LIB_DIR OUT_DIR   then   LD_LIBRARY_PATH=OUT_DIR python …
set -euo pipefail
lib=$1
out=$2
mkdir -p "$out"
tmp=$(mktemp -d)
for f in "$lib"/*.so; do nm -D --undefined-only "$f" | awk '{print $2}'; done | sort -u > "$tmp/undef"
for f in "$lib"/*.so; do nm -D --defined-only "$f" | awk '{print $3}'; done | sed 's/@.*//' | sort -u > "$tmp/def"
sed 's/@.*//' "$tmp/undef" | sort -u | comm -23 - "$tmp/def" \
    | grep -E '^(__cuda|cu|nccl|nvshmem|cudnn|nvrtc|CUpti|cufile|cusparse)' \
    | awk '{print "int " $1 "(void) { return 100; }"}' > "$tmp/stub.c"
for so in $(for f in "$lib"/*.so; do ldd "$f" | awk '/not found/ {print $1}'; done | sort -u); do
    # Versioned imports (symbol@libcudart.so.13) need a version node of that name.
    if grep -q "@$so\$" "$tmp/undef"; then
        printf '%s { global: *; };\n' "$so" > "$tmp/$so.map"
        gcc -shared -fPIC -o "$out/$so" "$tmp/stub.c" -Wl,-soname,"$so" -Wl,--version-script,"$tmp/$so.map"
    else
        gcc -shared -fPIC -o "$out/$so" "$tmp/stub.c" -Wl,-soname,"$so"
    fi
done
rm -rf "$tmp"
ls "$out"
