#!/usr/bin/env python3
"""PyTorch reference for `kiln train`: the same llama architecture, configuration, batches and
optimizer, on CPU, reading a kiln run directory (train_config.json + token shards).

Same as kiln (crates/kiln-train):
  * model: RMSNorm, half-split RoPE (Hugging Face order), GQA, SwiGLU, tied embeddings unless
    the config says otherwise; init N(0, 0.02), o_proj/down_proj scaled by 1/sqrt(2*layers),
    norms at 1 (values differ: torch's RNG, not kiln's);
  * data: the run's shards; batch offsets drawn with kiln's SplitMix64 + Lemire sampling from the
    same seed, so every step sees exactly kiln's batches; validation on the same fixed windows;
  * optimizer: AdamW (weight decay on matrices only), warm-up + cosine/linear decay, global-norm
    clipping, gradient accumulation to the same tokens per step.

Usage: train_torch.py RUN_DIR --steps N [--threads T]
Prints tokens/s (optimizer steps only, step 1 excluded as warm-up, as bench.sh computes kiln's)
and the losses.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK = (1 << 64) - 1


class SplitMix64:
    """kiln_train::rng::Rng."""

    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def read_shard(path):
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"KILNTOK1", path
    width, _vocab, n = struct.unpack("<IIQ", data[8:24])
    dtype = torch.int16 if width == 2 else torch.int32
    t = torch.frombuffer(bytearray(data[32:32 + n * width]), dtype=dtype).to(torch.int64)
    return t & 0xFFFF if width == 2 else t


def load_split(run, split):
    m = json.load(open(os.path.join(run, "shards", "manifest.json")))
    parts = [read_shard(os.path.join(run, "shards", f"{split}_{i:06}.bin")) for i in range(m["pieces"])]
    return torch.cat(parts)


def rope_tables(t, d, theta):
    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32) / d))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        s = c["shape"]
        dim, h, kv = s["dim"], s["n_heads"], s["n_kv_heads"]
        self.h, self.kv, self.d = h, kv, dim // h
        self.input_layernorm = RMSNorm(dim, 1e-5)
        self.q_proj = nn.Linear(dim, h * self.d, bias=False)
        self.k_proj = nn.Linear(dim, kv * self.d, bias=False)
        self.v_proj = nn.Linear(dim, kv * self.d, bias=False)
        self.o_proj = nn.Linear(h * self.d, dim, bias=False)
        self.post_attention_layernorm = RMSNorm(dim, 1e-5)
        self.gate_proj = nn.Linear(dim, s["ffn_dim"], bias=False)
        self.up_proj = nn.Linear(dim, s["ffn_dim"], bias=False)
        self.down_proj = nn.Linear(s["ffn_dim"], dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        n = self.input_layernorm(x)
        q = self.q_proj(n).view(b, t, self.h, self.d).transpose(1, 2)
        k = self.k_proj(n).view(b, t, self.kv, self.d).transpose(1, 2)
        v = self.v_proj(n).view(b, t, self.kv, self.d).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=self.h != self.kv)
        x = x + self.o_proj(y.transpose(1, 2).reshape(b, t, -1))
        n = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(n)) * self.up_proj(n))


class Llama(nn.Module):
    def __init__(self, c):
        super().__init__()
        s = c["shape"]
        self.embed = nn.Embedding(c["vocab_size"], s["dim"])
        self.layers = nn.ModuleList(Block(c) for _ in range(s["n_layers"]))
        self.norm = RMSNorm(s["dim"], 1e-5)
        self.lm_head = None if s["tied"] else nn.Linear(s["dim"], c["vocab_size"], bias=False)
        cos, sin = rope_tables(s["context"], s["dim"] // s["n_heads"], s["rope_theta"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        resid = 1.0 / math.sqrt(2 * s["n_layers"])
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 * resid if name.endswith(("o_proj.weight", "down_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, x, y):
        t = x.shape[1]
        h = self.embed(x)
        for layer in self.layers:
            h = layer(h, self.cos[:t], self.sin[:t])
        h = self.norm(h)
        w = self.embed.weight if self.lm_head is None else self.lm_head.weight
        logits = h @ w.t()
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))


def lr_at(step, c):
    steps, warmup, peak = c["steps"], c["warmup"], c["lr"]
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(steps - (warmup + 1), 1)
    p = min((step - warmup) / span, 1.0)
    floor = peak * c["min_lr_frac"]
    if c["decay"] == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * p))
    if c["decay"] == "linear":
        return peak - (peak - floor) * p
    return peak


def windows(tokens, offsets, t):
    idx = torch.tensor(offsets).unsqueeze(1) + torch.arange(t + 1).unsqueeze(0)
    w = tokens[idx]
    return w[:, :-1].contiguous(), w[:, 1:].contiguous()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1337)
    c = json.load(open(os.path.join(a.run, "train_config.json")))
    c["steps"] = a.steps
    t, mb = c["shape"]["context"], c["micro_batch"]
    accum = max(c["batch_tokens"] // (mb * t), 1)
    train, val = load_split(a.run, "train"), load_split(a.run, "val")
    if len(val) <= t + 1:
        val = train
    model = Llama(c)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": c["weight_decay"]}, {"params": other, "weight_decay": 0.0}],
        lr=c["lr"], betas=(c["beta1"], c["beta2"]), eps=c["eps"], foreach=True,
    )
    rng = SplitMix64(c["seed"] ^ 0x5EED)
    span = len(train) - t
    step_times, losses = [], []
    for step in range(a.steps):
        t0 = time.perf_counter()
        lr = lr_at(step, c)
        for g in opt.param_groups:
            g["lr"] = lr
        total = 0.0
        for _ in range(accum):
            x, y = windows(train, [rng.below(span) for _ in range(mb)], t)
            loss = model(x, y)
            (loss / accum).backward()
            total += loss.item()
        if c["grad_clip"] > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), c["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_times.append(time.perf_counter() - t0)
        losses.append(total / accum)
    n = c["eval_batches"] * mb
    vspan = len(val) - t
    offsets = [k * vspan // n for k in range(n)]
    with torch.no_grad():
        vl = sum(model(*windows(val, offsets[i:i + mb], t)).item() for i in range(0, n, mb)) / c["eval_batches"]
    tokens = accum * mb * t
    timed = step_times[1:] or step_times
    tps = tokens * len(timed) / sum(timed)
    last = losses[-10:]
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}", "threads": a.threads, "steps": a.steps,
        "tokens_per_s": round(tps, 1), "final_loss_mean10": sum(last) / len(last), "val_loss": vl,
        "params": sum(p.numel() for p in model.parameters()),
    }))


if __name__ == "__main__":
    sys.exit(main())
