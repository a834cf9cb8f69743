"""Load generator for bench/serve-load: N concurrent streaming chat clients against an
OpenAI-compatible server; reports aggregate generated tokens/s and time to first token.

Usage: python3 serve_load.py URL CLIENTS REQUESTS_PER_CLIENT MAX_TOKENS  -> one JSON line
Every request is greedy with ignore_eos, so both servers generate exactly MAX_TOKENS tokens.
Standard library only.
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse

TOPICS = ["the sea", "a city at night", "mountains", "a library", "the first snow", "a train journey",
          "an old clock", "a garden", "the desert", "a market", "the moon", "a lighthouse",
          "a forest path", "a thunderstorm", "a quiet kitchen", "a river"]


def one_request(host, port, prompt, max_tokens):
    body = json.dumps({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True, "stream": True,
    })
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {resp.read()[:200]!r}")
    ttft, pieces = None, 0
    for raw in resp:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data: "):
            continue
        data = line[6:]
        if data == "[DONE]":
            break
        event = json.loads(data)
        for choice in event.get("choices", []):
            if choice.get("delta", {}).get("content"):
                pieces += 1
                if ttft is None:
                    ttft = time.perf_counter() - t0
    conn.close()
    return ttft if ttft is not None else time.perf_counter() - t0, time.perf_counter() - t0


def main():
    url, clients, per_client, max_tokens = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    u = urllib.parse.urlparse(url)
    results, errors = [], []
    lock = threading.Lock()

    def client(i):
        for r in range(per_client):
            prompt = f"Write a short poem about {TOPICS[(i + r) % len(TOPICS)]} (client {i}, request {r})."
            try:
                ttft, total = one_request(u.hostname, u.port, prompt, max_tokens)
                with lock:
                    results.append((ttft, total))
            except Exception as e:  # reported, and the run fails
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttfts = sorted(r[0] for r in results)

    def pct(p):
        return ttfts[min(len(ttfts) - 1, int(round(p / 100 * (len(ttfts) - 1))))] if ttfts else float("nan")

    print(json.dumps({
        "clients": clients, "requests": len(results), "errors": errors[:3], "n_errors": len(errors),
        "wall_s": wall, "tokens": len(results) * max_tokens,
        "tokens_per_s": len(results) * max_tokens / wall,
        "ttft_p50_s": pct(50), "ttft_p99_s": pct(99),
    }))


if __name__ == "__main__":
    main()
