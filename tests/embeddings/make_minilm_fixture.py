"""Records all-MiniLM-L6-v2 embeddings from sentence-transformers, the reference kiln's encoder
is tested against (crates/kiln-assist/tests/embed.rs).

usage: python tests/embeddings/make_minilm_fixture.py MODEL_DIR tests/fixtures/embeddings/minilm_sentence_transformers.json
  MODEL_DIR: the unpacked model (`kiln pull minilm` keeps it in
  ~/.cache/kiln/models/all-minilm-l6-v2/model/); the venv from
  `scripts/torch-venv.sh DIR sentence-transformers` has what it needs.
"""
import json
import sys

import sentence_transformers
from sentence_transformers import SentenceTransformer

TEXTS = [
    "The dentist appointment is on Tuesday at 3 pm.",
    "When do I see the dentist?",
    "A warehouse holds 48,713 crates of 127 bolts each.",
    "Café crème, naïve façade: accents are stripped by the uncased tokenizer.",
    "kiln serves an OpenAI-compatible API; /v1/embeddings returns vectors.",
    "def add(a, b):\n    return a + b",
    "日本語のテキストも扱えます。",
    "",
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate. " * 30,
]


def main():
    model_dir, out = sys.argv[1], sys.argv[2]
    model = SentenceTransformer(model_dir, device="cpu")
    vectors = model.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=False)
    ids = [model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"] for t in TEXTS]
    json.dump(
        {
            "made_by": "python tests/embeddings/make_minilm_fixture.py MODEL_DIR " + out,
            "sentence_transformers": sentence_transformers.__version__,
            "max_seq_length": model.max_seq_length,
            "texts": TEXTS,
            "token_ids": ids,
            "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
        },
        open(out, "w"),
    )
    print(f"wrote {len(TEXTS)} embeddings of width {vectors.shape[1]} to {out}")


if __name__ == "__main__":
    main()
