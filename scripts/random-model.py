#!/usr/bin/env python3
"""Write a llama-, qwen- or gemma-shaped GGUF of a realistic size with random weights (F16),
for speed benchmarks at the sizes users run (issue 23). The tokenizer and the settings that are
not sizes come from a template GGUF (SmolLM2 for llama and qwen, Gemma 3 270M for gemma), so
both kiln and llama.cpp load the file as they load a real model; `kiln quantize` makes the
Q4_0 / Q4_K / Q6_K / Q8_0 copies.

    random-model.py --shape llama-1b --template SmolLM2.gguf --out llama-1b-f16.gguf

Shapes are those of public models (TinyLlama 1.1B, Llama 3.2 3B, Qwen2.5 0.5B/1.5B/3B,
Gemma 3 1B), with the template's vocabulary. Needs the `gguf` package (llama.cpp's writer) and
numpy: bench/vs-llama-cpp runs it in a venv of its own.
"""

import argparse
import sys

import numpy as np
import gguf

# dim, layers, heads, kv heads, head dim, ffn
SHAPES = {
    "llama-0.5b": ("llama", 1024, 24, 16, 4, 64, 4096),
    "llama-1b": ("llama", 2048, 22, 32, 4, 64, 5632),
    "llama-3b": ("llama", 3072, 28, 24, 8, 128, 8192),
    "qwen-0.5b": ("qwen2", 896, 24, 14, 2, 64, 4864),
    "qwen-1b": ("qwen2", 1536, 28, 12, 2, 128, 8960),
    "qwen-3b": ("qwen2", 2048, 36, 16, 2, 128, 11008),
    "gemma-1b": ("gemma3", 1152, 26, 4, 1, 256, 6912),
}

ARCH_KEYS = ("context_length", "embedding_length", "block_count", "feed_forward_length", "attention.", "rope.")


def copy_fields(reader, writer, arch):
    """Everything but the architecture's own keys and the GGUF header."""
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type", "general.name"):
            continue
        prefix = key.split(".", 1)[0]
        if prefix not in ("general", "tokenizer"):
            continue  # the template's arch keys; ours are written below
        vtype = field.types[0]
        value = field.contents()
        if vtype == gguf.GGUFValueType.ARRAY:
            writer.add_key_value(key, value, vtype, sub_type=field.types[-1])
        else:
            writer.add_key_value(key, value, vtype)
    writer.add_string("general.name", f"random {arch}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--template", required=True, help="GGUF whose tokenizer the model takes")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    arch, dim, layers, heads, kv_heads, head_dim, ffn = SHAPES[args.shape]
    reader = gguf.GGUFReader(args.template)
    vocab = len(reader.fields["tokenizer.ggml.tokens"].data)
    writer = gguf.GGUFWriter(args.out, arch)
    copy_fields(reader, writer, arch)
    a = arch
    writer.add_uint32(f"{a}.context_length", 8192)
    writer.add_uint32(f"{a}.embedding_length", dim)
    writer.add_uint32(f"{a}.block_count", layers)
    writer.add_uint32(f"{a}.feed_forward_length", ffn)
    writer.add_uint32(f"{a}.attention.head_count", heads)
    writer.add_uint32(f"{a}.attention.head_count_kv", kv_heads)
    writer.add_float32(f"{a}.attention.layer_norm_rms_epsilon", 1e-6)
    writer.add_float32(f"{a}.rope.freq_base", 1e6 if arch != "llama" else 1e4)
    if arch == "llama":
        writer.add_uint32(f"{a}.rope.dimension_count", head_dim)
    if arch == "gemma3":
        writer.add_uint32(f"{a}.attention.key_length", head_dim)
        writer.add_uint32(f"{a}.attention.value_length", head_dim)
        writer.add_uint32(f"{a}.attention.sliding_window", 512)
    writer.add_uint32("general.file_type", 1)  # F16

    rng = np.random.default_rng(args.seed)

    def weight(*shape):
        # Small enough that activations stay finite through every layer.
        return (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float16)

    def norm(n):
        return np.ones(n, dtype=np.float32)

    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    writer.add_tensor("token_embd.weight", weight(vocab, dim))
    writer.add_tensor("output_norm.weight", norm(dim))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(dim))
        writer.add_tensor(p + "attn_q.weight", weight(q_dim, dim))
        writer.add_tensor(p + "attn_k.weight", weight(kv_dim, dim))
        writer.add_tensor(p + "attn_v.weight", weight(kv_dim, dim))
        writer.add_tensor(p + "attn_output.weight", weight(dim, q_dim))
        if arch == "qwen2":
            for t, n in (("q", q_dim), ("k", kv_dim), ("v", kv_dim)):
                writer.add_tensor(p + f"attn_{t}.bias", (rng.standard_normal(n, dtype=np.float32) * 0.02))
        if arch == "gemma3":
            writer.add_tensor(p + "attn_q_norm.weight", norm(head_dim))
            writer.add_tensor(p + "attn_k_norm.weight", norm(head_dim))
            writer.add_tensor(p + "post_attention_norm.weight", norm(dim))
            writer.add_tensor(p + "post_ffw_norm.weight", norm(dim))
        writer.add_tensor(p + "ffn_norm.weight", norm(dim))
        writer.add_tensor(p + "ffn_gate.weight", weight(ffn, dim))
        writer.add_tensor(p + "ffn_up.weight", weight(ffn, dim))
        writer.add_tensor(p + "ffn_down.weight", weight(dim, ffn))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    params = vocab * dim + layers * (2 * q_dim * dim + 2 * kv_dim * dim + 3 * ffn * dim)
    print(f"{args.out}: {args.shape} ({arch}), {params / 1e9:.2f}B parameters, vocabulary {vocab}", file=sys.stderr)


if __name__ == "__main__":
    main()
