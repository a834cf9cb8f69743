#!/usr/bin/env python3
"""TRL reference for `kiln sft` / `kiln dpo`: reads a finished kiln run directory and trains the
same thing with TRL's SFTTrainer or DPOTrainer on CPU, f32, then prints one JSON line with both
frameworks' steps/s and losses.

Same as the kiln run (read from its finetune.json):
  * model: the Hugging Face directory the kiln run started from (`kiln export --format hf` of the
    GGUF), f32, SDPA attention, no gradient checkpointing (kiln keeps every activation);
  * rows and order: the run's data file; kiln's seeded split (no rows held out) and per-epoch
    permutation (SplitMix64 + Lemire, crates/kiln-train/src/finetune/run.rs) are replayed, and
    TRL reads the rows in that order (train_sampling_strategy="sequential"), so every optimizer
    step sees exactly kiln's rows;
  * batch: `batch_rows` conversations (SFT) or `batch_pairs` comparisons (DPO) per optimizer step,
    no gradient accumulation; SFT loss = mean over the step's trained (completion) tokens;
  * tokens: the same chat template; SFT trains the completion (assistant reply + "<|im_end|>\\n"),
    DPO sums the reply log-probs; no row is truncated (make_data.py keeps rows that fit);
  * LoRA: rank, alpha, dropout (0), target projections; A ~ U(±1/sqrt(in)) (PEFT's kaiming default
    gives the same bound; torch's RNG, not kiln's), B = 0;
  * optimizer: AdamW (0.9, 0.999, eps 1e-8), the run's weight decay, global-norm clip, and kiln's
    schedule (linear warm-up `lr·(s+1)/warmup`, cosine to `min_lr_frac·lr`) as a LambdaLR;
  * DPO: sigmoid loss, β; reference log-probs precomputed once before training
    (precompute_ref_log_probs=True), as kiln caches them.

Differences: TRL pads each step's rows into one batch (kiln runs each row unpadded), and TRL
computes its own logging metrics (entropy, token accuracy) on each step — both are TRL's defaults.

Timing: steps 2..N in both (step 1 is warm-up). kiln: the per-step seconds of metrics.jsonl
(tokens / tokens_per_s); TRL: wall clock from the end of one step to the end of the next.
steps/s is 1 / the median step (other jobs on a shared machine slow some steps several-fold);
steps_per_s_mean is steps / their total time.

usage: train_trl.py sft|dpo KILN_RUN_DIR --threads T
"""
import argparse
import json
import math
import os
import re
import sys
import time

import torch

MASK = (1 << 64) - 1
LORA_NAMES = {"q": "q_proj", "k": "k_proj", "v": "v_proj", "o": "o_proj",
              "gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


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


def permutation(n, seed):
    """kiln_train::finetune::permutation (Fisher–Yates)."""
    rng, p = SplitMix64(seed), list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        p[i], p[j] = p[j], p[i]
    return p


def kiln_order(rows, val_rows, seed, n_take):
    """The first `n_take` indices into kiln's training rows in the order its Loader visits them,
    and those training rows (kiln's split: a seeded shuffle, the first `val_rows` held out)."""
    p = permutation(len(rows), seed ^ 0x5911)
    nv = min(val_rows, len(rows) // 2)
    train = [rows[i] for i in p[nv:]]
    order, perm, perm_epoch = [], None, None
    for cursor in range(n_take):
        epoch = cursor // len(train)
        if epoch != perm_epoch:
            perm, perm_epoch = permutation(len(train), seed ^ ((epoch * 0x9E37) & MASK)), epoch
        order.append(perm[cursor % len(train)])
    return order, train


def lr_at(step, cfg):
    """kiln_train::schedule::lr_at with Decay::Cosine."""
    steps, warmup, peak, floor = cfg["steps"], cfg["warmup"], cfg["lr"], cfg["lr"] * cfg["min_lr_frac"]
    if step < warmup:
        return peak * (step + 1) / warmup
    span = max(steps - (warmup + 1), 1)
    p = min((step - warmup) / span, 1.0)
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * p))


def kiln_numbers(run, step_tokens):
    """kiln's steps/s (steps 2..N) and losses from metrics.jsonl; per-step seconds are the step's
    tokens (forward positions, as kiln counts them) over its tokens_per_s."""
    rows = [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl"))]
    secs = [t / r["tokens_per_s"] for t, r in zip(step_tokens, rows)]
    timed = secs[1:] or secs
    out = {"steps": len(rows), "steps_per_s": 1 / median(timed), "steps_per_s_mean": len(timed) / sum(timed),
           "step_s": secs,
           "losses": [r["loss"] for r in rows]}
    log = os.path.join(run, "kiln.log")
    if os.path.exists(log):
        # The progress lines print each step's seconds (one decimal): a check on the token counts.
        text = open(log).read()
        shown = [float(m.group(1)) for m in re.finditer(r"^\[[\d.]+\] step \d+/\d+ \|.*? \| ([\d.]+)s", text, re.M)]
        bad = [(a, b) for a, b in zip(secs, shown) if abs(a - b) > 0.051 + 0.01 * b]
        if len(shown) != len(secs) or bad:
            sys.exit(f"kiln's step seconds {shown} disagree with tokens / tokens_per_s {secs}: the tokenization differs")
        ref = re.search(r"^\[([\d.]+)\] reference log-probabilities.*\n\[([\d.]+)\]", text, re.M)
        if ref:
            out["reference_pass_s"] = float(ref.group(2)) - float(ref.group(1))
        m = re.search(r"\((\d+) trained tokens\)", text)
        if m:
            out["trained_tokens_all_rows"] = int(m.group(1))
    return out


def median(xs):
    xs = sorted(xs)
    return (xs[(len(xs) - 1) // 2] + xs[len(xs) // 2]) / 2


class StepTimer:
    """End times of the optimizer steps, and the logged metrics."""

    def __init__(self):
        self.ends, self.logs = [], []


def main():
    # transformers prints its log lines to stdout (PrinterCallback); stdout is for the JSON line.
    out = sys.stdout
    sys.stdout = sys.stderr
    out.write(json.dumps(run()) + "\n")


def run():
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["sft", "dpo"])
    ap.add_argument("run")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    cfg = json.load(open(os.path.join(a.run, "finetune.json")))
    assert cfg["task"] == a.task, cfg["task"]
    model_dir = cfg["base"]
    rows = [json.loads(l) for l in open(cfg["data"][0])]
    batch = cfg["batch_rows"] if a.task == "sft" else cfg["batch_pairs"]
    assert batch, "the kiln SFT run must use --batch-rows (a fixed number of conversations per step)"
    steps = cfg["steps"]
    order, train = kiln_order(rows, cfg["val_rows"], cfg["seed"], steps * batch)
    ordered = [train[i] for i in order]

    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = lambda msgs: tok.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    # Forward positions per step as kiln counts them (sequence length - 1 per sequence), for its
    # per-step seconds; and the trained tokens of every training row (kiln prints its total).
    if a.task == "sft":
        seq = [len(ids(r["prompt"] + r["completion"])) - 1 for r in ordered]
        gen = lambda r: len(tok.apply_chat_template(r["prompt"], tokenize=True, add_generation_prompt=True,
                                                    return_dict=True)["input_ids"])
        trained = sum(len(ids(r["prompt"] + r["completion"])) - gen(r) for r in rows)
    else:
        seq = [len(ids(r["prompt"] + r["chosen"])) + len(ids(r["prompt"] + r["rejected"])) - 2 for r in ordered]
        trained = None
    step_tokens = [sum(seq[i * batch:(i + 1) * batch]) for i in range(steps)]
    kiln = kiln_numbers(a.run, step_tokens)
    if trained is not None and kiln.get("trained_tokens_all_rows") != trained:
        sys.exit(f"kiln trains {kiln.get('trained_tokens_all_rows')} tokens of these rows, the TRL rendering {trained}")

    torch.manual_seed(cfg["seed"])
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    lora = cfg.get("lora")
    if lora:
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(
            r=lora["rank"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias="none",
            target_modules=[LORA_NAMES[t] for t in lora["targets"]], task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_at(s, cfg) / cfg["lr"])

    timer = StepTimer()

    ref_s = []

    def timed(f):
        def g(*args, **kw):
            t = time.perf_counter()
            r = f(*args, **kw)
            ref_s.append(time.perf_counter() - t)
            return r
        return g

    class Timing(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            timer.ends.append(time.perf_counter())

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                timer.logs.append(dict(logs))

    common = dict(
        output_dir=os.path.join(a.run, "trl"), max_steps=steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=1, learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"],
        max_grad_norm=cfg["grad_clip"] if cfg["grad_clip"] > 0 else 0.0, use_cpu=True, bf16=False, fp16=False,
        gradient_checkpointing=False, logging_steps=1, save_strategy="no", report_to="none",
        train_sampling_strategy="sequential", dataloader_num_workers=0, seed=cfg["seed"],
        max_length=cfg["max_len"], disable_tqdm=True, dataset_num_proc=None,
    )
    ref_check = None
    t_setup = time.perf_counter()
    if a.task == "sft":
        from trl import SFTConfig, SFTTrainer
        assert not cfg["pack"]
        args = SFTConfig(**common, packing=False, completion_only_loss=True, shuffle_dataset=False)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(ordered),
                             processing_class=tok, optimizers=(opt, sched), callbacks=[Timing()])
        # What TRL trains on: as many target tokens as kiln's rendering of the same rows.
        labels = trainer.train_dataset["labels"]
        trl_trained = sum(sum(1 for x in lab[1:] if x != -100) for lab in labels)
        mine = sum(len(ids(r["prompt"] + r["completion"])) - gen(r) for r in ordered)
        if trl_trained != mine:
            sys.exit(f"TRL trains {trl_trained} tokens of the ordered rows, kiln's masks give {mine}")
    else:
        from trl import DPOConfig, DPOTrainer
        DPOTrainer._precompute_ref_logps = timed(DPOTrainer._precompute_ref_logps)
        args = DPOConfig(**common, beta=cfg["beta"], loss_type=["sigmoid"], precompute_ref_log_probs=True,
                         precompute_ref_batch_size=batch)
        trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(ordered),
                             processing_class=tok, optimizers=(opt, sched), callbacks=[Timing()])
        # The same sequences under the same weights: kiln's cached reference log-probs (f32 sums
        # in its training-row order) against TRL's precomputed ones.
        cache = json.load(open(os.path.join(a.run, "reference_logps.json")))["train"]
        ds = trainer.train_dataset
        diff = max(max(abs(cache[i][0] - c), abs(cache[i][1] - r))
                   for i, c, r in zip(order, ds["ref_chosen_logps"], ds["ref_rejected_logps"]))
        scale = max(abs(x) for pair in cache for x in pair)
        if diff > 1e-3 * scale:
            sys.exit(f"reference log-probs differ by {diff} (largest {scale}): not the same sequences")
        ref_check = {"max_abs_diff": diff, "largest": scale}
    setup_s = time.perf_counter() - t_setup
    trainer.train()
    ends = timer.ends
    trl_step_s = [ends[0] - t_setup - setup_s] + [b - a_ for a_, b in zip(ends, ends[1:])]
    trl_losses = [l["loss"] for l in timer.logs]
    import peft
    import transformers
    import trl
    out = {
        "task": a.task + ("-lora" if lora else "-full"), "steps": steps, "batch": batch, "max_len": cfg["max_len"],
        "threads": a.threads, "rows": len(rows),
        "kiln": kiln,
        "trl": {"steps": len(ends), "steps_per_s": 1 / median(trl_step_s[1:]),
                "steps_per_s_mean": (len(ends) - 1) / (ends[-1] - ends[0]), "step_s": trl_step_s,
                "losses": trl_losses, "setup_s": setup_s, "logs": timer.logs,
                **({"reference_pass_s": sum(ref_s)} if ref_s else {})},
        "ratio": kiln["steps_per_s"] / (1 / median(trl_step_s[1:])),
        "ratio_mean": kiln["steps_per_s_mean"] / ((len(ends) - 1) / (ends[-1] - ends[0])),
        **({"reference_logps_check": ref_check} if ref_check else {}),
        "tokens_per_step": step_tokens,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__, "peft": peft.__version__},
    }
    return out


if __name__ == "__main__":
    main()
