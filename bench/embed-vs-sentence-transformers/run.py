"""kiln embed against sentence-transformers on the same texts, same threads, in one run.

usage: DIR/python bench/embed-vs-sentence-transformers/run.py [--kiln target/release/kiln] [--threads 2] [--rounds 3]
  DIR: a venv from `scripts/torch-venv.sh DIR sentence-transformers`.

The texts are the passages `kiln index` makes of README.md and docs/LOG.md (each fits
MiniLM's 256 tokens). Each round times kiln (process start and model load included, as a user
runs it) and sentence-transformers (model loaded before timing, batch size 32), alternating;
prints texts/s for both, their ratio per round, and the largest cosine gap between the vectors.
"""
import argparse, json, os, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kiln", default=os.path.join(ROOT, "target/release/kiln"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    model_dir = subprocess.run([args.kiln, "pull", "minilm"], check=True, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        docs = os.path.join(tmp, "docs")
        os.makedirs(docs)
        for rel in ["README.md", "docs/LOG.md"]:
            with open(os.path.join(ROOT, rel)) as src, open(os.path.join(docs, os.path.basename(rel)), "w") as dst:
                dst.write(src.read())
        env = dict(os.environ, KILN_HOME=os.path.join(tmp, "home"))
        flags = ["--embedding-model", model_dir]
        subprocess.run([args.kiln, "index", docs] + flags, check=True, stderr=subprocess.DEVNULL, env=env)
        index = next(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(tmp, "home", "index")) for f in fs if f == "index.json")
        texts = [p["text"] for f in json.load(open(index))["files"] for p in f["passages"]]
        lines = os.path.join(tmp, "texts.jsonl")
        with open(lines, "w") as f:
            for t in texts:
                f.write(json.dumps(t) + "\n")
        st = SentenceTransformer(model_dir, device="cpu")
        st.encode(texts[:8])
        print(f"{len(texts)} passages, {args.threads} threads")
        print("| round | kiln texts/s | sentence-transformers texts/s | kiln / ST |")
        print("|--:|--:|--:|--:|")
        ratios = []
        for r in range(args.rounds):
            t = time.perf_counter()
            out = subprocess.run([args.kiln, "-t", str(args.threads), "embed", "--file", lines] + flags, check=True, capture_output=True, text=True, env=env).stdout
            kiln_s = time.perf_counter() - t
            t = time.perf_counter()
            theirs = st.encode(texts, batch_size=32, convert_to_numpy=True)
            st_s = time.perf_counter() - t
            ours = np.array([json.loads(l) for l in out.splitlines()])
            ratios.append(st_s / kiln_s)
            print(f"| {r + 1} | {len(texts) / kiln_s:.1f} | {len(texts) / st_s:.1f} | {ratios[-1]:.2f} |")
        cos = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
        print(f"median ratio {sorted(ratios)[len(ratios) // 2]:.2f}; smallest cosine between the two {cos.min():.6f}")


if __name__ == "__main__":
    main()
