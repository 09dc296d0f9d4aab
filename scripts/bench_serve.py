#!/usr/bin/env python3
"""Load generator for `keel serve` (or any OpenAI-compatible server).

C client threads each send streaming /v1/completions requests back to back
until N requests are done. Every prompt is P random token ids (fixed seed),
every reply exactly O tokens (ignore_eos, a vLLM extension keel serve
honours). Reports time to first token (TTFT), inter-token latency (ITL: the
gaps between streamed chunks; a chunk carries the text of one token, or of a
few when a character spans tokens) at p50/p99, and aggregate output tokens/s
over the whole run (from the servers' usage counts). With --shared-prefix N
every prompt begins with the same N tokens (a system prompt): the report adds
the first request's TTFT against the later ones' and the prompt tokens the
server took from its prefix cache (usage.prompt_tokens_details.cached_tokens).
Standard library only.

Example:
  build/host/keel serve --model ../shared/models/stories260K --backend cpu --port 8080 &
  scripts/bench_serve.py --concurrency 8 --prompt-len 64 --output-len 128
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse


def percentile(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def one_request(url, body, headers, timeout):
    """Streams one completion; returns (ttft_s, [gap_s...], tokens, total_s, cached_tokens)."""
    u = urllib.parse.urlparse(url)
    c = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    t0 = time.perf_counter()
    c.request("POST", "/v1/completions", body=json.dumps(body), headers=headers)
    r = c.getresponse()
    if r.status != 200:
        raise RuntimeError(f"HTTP {r.status}: {r.read().decode()[:300]}")
    first = None
    last = None
    gaps = []
    tokens = 0
    cached = 0
    for raw in r:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
            cached = (chunk["usage"].get("prompt_tokens_details") or {}).get("cached_tokens", 0)
        if chunk.get("choices") and chunk["choices"][0].get("text"):
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                gaps.append(now - last)
            last = now
    total = time.perf_counter() - t0
    c.close()
    return (first - t0 if first else float("nan")), gaps, tokens, total, cached


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default="http://127.0.0.1:8080", help="server base URL (default %(default)s)")
    ap.add_argument("--concurrency", "-c", type=int, default=4, help="client threads (default %(default)s)")
    ap.add_argument("--requests", "-n", type=int, default=0, help="requests in all (default: 4 x concurrency)")
    ap.add_argument("--prompt-len", type=int, default=32, help="prompt tokens (default %(default)s)")
    ap.add_argument("--shared-prefix", type=int, default=0,
                    help="tokens every prompt begins with (a shared system prompt; default none)")
    ap.add_argument("--output-len", type=int, default=64, help="generated tokens per request (default %(default)s)")
    ap.add_argument("--id-range", default="100,500", help="prompt ids are drawn from [lo, hi) (default %(default)s)")
    ap.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default greedy)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the prompts and of sampling (default %(default)s)")
    ap.add_argument("--model", default="", help="model name to send (default: none, the server's own)")
    ap.add_argument("--api-key", default="", help="sent as Authorization: Bearer KEY")
    ap.add_argument("--timeout", type=float, default=600, help="per-request timeout in seconds")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    a = ap.parse_args()
    n = a.requests or 4 * a.concurrency
    lo, hi = map(int, a.id_range.split(","))
    rng = random.Random(a.seed)
    shared = [rng.randrange(lo, hi) for _ in range(a.shared_prefix)]
    prompts = [shared + [rng.randrange(lo, hi) for _ in range(a.prompt_len)] for _ in range(n)]
    headers = {"Content-Type": "application/json"}
    if a.api_key:
        headers["Authorization"] = f"Bearer {a.api_key}"

    results, errors = [], []
    lock = threading.Lock()
    next_i = [0]

    def worker():
        while True:
            with lock:
                i = next_i[0]
                if i >= n:
                    return
                next_i[0] += 1
            body = {"prompt": prompts[i], "max_tokens": a.output_len, "temperature": a.temperature,
                    "seed": a.seed + i, "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
            if a.model:
                body["model"] = a.model
            try:
                res = one_request(a.url, body, headers, a.timeout)
                with lock:
                    results.append((i,) + res)
            except Exception as e:  # reported, and the exit status says so
                with lock:
                    errors.append(str(e))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0

    results.sort()
    first_ttft = results[0][1] * 1e3 if results and results[0][0] == 0 else float("nan")
    results = [r[1:] for r in results]
    ttft = [r[0] * 1e3 for r in results]
    itl = [g * 1e3 for r in results for g in r[1]]
    tokens = sum(r[2] for r in results)
    cached = [r[4] for r in results]
    out = {
        "url": a.url, "concurrency": a.concurrency, "requests": n, "completed": len(results), "errors": len(errors),
        "prompt_len": a.prompt_len + a.shared_prefix, "shared_prefix": a.shared_prefix, "output_len": a.output_len,
        "temperature": a.temperature, "seed": a.seed,
        "wall_s": round(wall, 3), "output_tokens": tokens, "tokens_per_s": round(tokens / wall, 1) if wall else 0,
        "ttft_ms_p50": round(percentile(ttft, 50), 2), "ttft_ms_p99": round(percentile(ttft, 99), 2),
        "itl_ms_p50": round(percentile(itl, 50), 3), "itl_ms_p99": round(percentile(itl, 99), 3),
        "first_ttft_ms": round(first_ttft, 2), "later_ttft_ms_p50": round(percentile(ttft[1:], 50), 2),
        "cached_tokens_p50": percentile(cached, 50),
    }
    if a.json:
        print(json.dumps(out))
    else:
        print(f"{a.url}: {len(results)}/{n} requests, concurrency {a.concurrency}, prompt {a.prompt_len} / output "
              f"{a.output_len} tokens, temperature {a.temperature}, seed {a.seed}")
        print(f"  aggregate   {out['tokens_per_s']:.1f} output tokens/s ({tokens} tokens in {wall:.2f} s)")
        print(f"  TTFT        p50 {out['ttft_ms_p50']:.2f} ms   p99 {out['ttft_ms_p99']:.2f} ms")
        print(f"  inter-token p50 {out['itl_ms_p50']:.3f} ms   p99 {out['itl_ms_p99']:.3f} ms")
        if a.shared_prefix:
            print(f"  shared prefix of {a.shared_prefix}: first request's TTFT {out['first_ttft_ms']:.2f} ms, the "
                  f"others' p50 {out['later_ttft_ms_p50']:.2f} ms; cached prompt tokens p50 {out['cached_tokens_p50']}")
    for e in errors[:5]:
        print(f"error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
