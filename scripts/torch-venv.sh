#!/usr/bin/env bash
# Makes a Python virtual environment with PyTorch that runs on CPU, plus any extra packages,
# using only PyPI. The PyPI torch wheel for Linux links against CUDA runtime wheels (several GB);
# it is installed without them, and stub libraries (bench/train-vs-pytorch/make_cuda_stubs.sh)
# stand in for the CUDA libraries so it imports. Re-running with the same DIR reuses what is there.
#
# usage: scripts/torch-venv.sh DIR [PACKAGE…]     then run DIR/python (sets LD_LIBRARY_PATH itself)
# env:   TORCH (default torch==2.15.0)
set -euo pipefail
dir=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
torch_spec=${TORCH:-torch==2.15.0}
# --no-warn-conflicts: pip would list the CUDA wheels torch names and is not given.
# --no-cache-dir: the torch wheel is about a gigabyte; a cached copy would double its disk use.
quiet=(--quiet --disable-pip-version-check --root-user-action=ignore --no-warn-conflicts --no-cache-dir)

[ -x "$dir/bin/python" ] || python3 -m venv "$dir"
pip=("$dir/bin/python" -m pip install "${quiet[@]}")
# cuda-stubs is made last, so its presence says the torch install finished.
if [ ! -d "$dir/cuda-stubs" ]; then
    "${pip[@]}" --no-deps "$torch_spec"
    # torch's own Python dependencies, without the nvidia-* wheels.
    "${pip[@]}" filelock typing-extensions sympy networkx jinja2 fsspec numpy
    lib=$("$dir/bin/python" -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torch').origin), 'lib'))")
    rm -rf "$dir/cuda-stubs.part"
    bash "$root/bench/train-vs-pytorch/make_cuda_stubs.sh" "$lib" "$dir/cuda-stubs.part" >/dev/null
    mv "$dir/cuda-stubs.part" "$dir/cuda-stubs"
fi
[ $# -eq 0 ] || "${pip[@]}" "$@"
cat > "$dir/python" <<PY
#!/usr/bin/env bash
LD_LIBRARY_PATH="$dir/cuda-stubs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$dir/bin/python" "\$@"
PY
chmod +x "$dir/python"
"$dir/python" -c "import torch; assert not torch.cuda.is_available(); print('torch', torch.__version__, 'on CPU in $dir')"
