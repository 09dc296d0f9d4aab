#!/usr/bin/env python3
"""End-to-end test of `keel serve` with the real OpenAI and Ollama clients.

Usage: test_serve_e2e.py KEEL MODEL_DIR VENV_DIR

Makes a venv in VENV_DIR (kept between runs) with the pinned `openai` and
`ollama` packages; when that is impossible (no network, no venv module) the
test is skipped (exit 77, ctest SKIP_RETURN_CODE) with the reason, never
failed. Then starts `keel serve --backend cpu --port 0 --api-key ...` on the
model and checks: completions, chat and streaming through both clients, text
equal to `keel generate` (greedy, and sampled with the same seed), 32
concurrent streaming clients, a client that disconnects mid-stream, the
error answers (400 malformed / bad field / prompt beyond the context, 401,
404, 413) with the server serving after each, and SIGTERM -> exit 0. Then a
second server on the cpu backend with --max-batch 4: 12 streaming clients of
ragged lengths (greedy and seeded samples) join and leave running batches and
each gets `keel generate`'s text on that backend; a conversation's next turn
takes its prompt from the KV cache (usage.prompt_tokens_details).
"""
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time

SKIP = 77
PINS = ["openai==2.8.0", "ollama==0.6.0"]
KEY = "keel-test-key"
# The reference backend: single-threaded, so greedy text is the same on every
# run (the compiled Program on the cpu backend is checked against it elsewhere).
BACKEND = "reference"


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(SKIP)


def ensure_venv(venv):
    """Returns the venv's python, making the venv and installing PINS once."""
    py = os.path.join(venv, "bin", "python")
    marker = os.path.join(venv, ".keel-pins")
    if os.path.exists(py) and os.path.exists(marker) and open(marker).read() == " ".join(PINS):
        return py
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", venv], check=True, capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as e:
        skip(f"cannot create a venv with {sys.executable} -m venv ({e}); install python3-venv")
    try:
        r = subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + PINS,
                           capture_output=True, text=True, timeout=600)
    except (subprocess.SubprocessError, OSError) as e:
        skip(f"pip install {' '.join(PINS)} did not finish ({e}); no network?")
    if r.returncode != 0:
        skip(f"pip install {' '.join(PINS)} failed (no network?): {r.stderr.strip()[-400:]}")
    with open(marker, "w") as f:
        f.write(" ".join(PINS))
    return py


class Server:
    """A `keel serve` process on a free port; its stderr is collected."""

    def __init__(self, keel, model, *extra, backend=BACKEND):
        self.proc = subprocess.Popen([keel, "serve", "--model", model, "--backend", backend, "--port", "0",
                                      "--api-key", KEY, *extra], stderr=subprocess.PIPE, text=True)
        self.log = []
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                self.log.append(line)
                if self.port is None and "listening on http://" in line:
                    self.port = int(line.split("listening on http://")[1].split(":")[1].split(" ")[0])
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60) and self.port, "keel serve did not start:\n" + "".join(self.log)
        deadline = time.time() + 60
        while time.time() < deadline:
            status, _ = self.request("GET", "/health")
            if status == 200:
                return
            assert status == 503, f"/health answered {status} while loading"
            time.sleep(0.05)
        raise AssertionError("keel serve did not become ready:\n" + "".join(self.log))

    def wait_idle(self):
        """/health once nothing runs or waits."""
        deadline = time.time() + 30
        while True:
            s, h = self.request("GET", "/health")
            if h["running"] == 0 and h["queued"] == 0:
                return h
            assert time.time() < deadline, h
            time.sleep(0.05)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def request(self, method, path, body=None, key=KEY, raw=None):
        """One request; returns (status, parsed JSON or text)."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = raw if raw is not None else (json.dumps(body) if body is not None else None)
        try:
            c.request(method, path, body=data, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before reading the whole body
        r = c.getresponse()
        text = r.read().decode()
        c.close()
        try:
            return r.status, json.loads(text)
        except json.JSONDecodeError:
            return r.status, text


def keel_generate(keel, model, prompt_ids, max_tokens, temperature=0.0, seed=0, backend=BACKEND, extra=()):
    out = subprocess.run([keel, "generate", "--model", model, "--backend", backend, "--prompt-ids",
                          ",".join(map(str, prompt_ids)), "--max-tokens", str(max_tokens), "--temperature",
                          str(temperature), "--seed", str(seed), "--json", *extra], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def run_clients(n, client, wants, what):
    """Runs client(i) for i < n on threads; each must return wants[i % len(wants)]."""
    got = [None] * n

    def run(i):
        got[i] = client(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    bad = [i for i in range(n) if got[i] != wants[i % len(wants)]]
    assert not bad, f"{what}: clients {bad} got wrong text: {[(got[i], wants[i % len(wants)]) for i in bad[:2]]}"


def check_error(srv, status, body, want_status, want_code=None, path="/v1/completions", **kw):
    assert status == want_status, f"{path}: want {want_status}, got {status}: {body}"
    if path.startswith("/api/"):
        assert isinstance(body, dict) and isinstance(body.get("error"), str), body
    else:
        err = body["error"]
        assert set(err) == {"message", "type", "param", "code"}, err
        assert err["message"], err
        if want_code:
            assert err["code"] == want_code, err
    # The server keeps serving.
    s, h = srv.request("GET", "/health")
    assert s == 200 and h["status"] == "ok", h


def main():
    if len(sys.argv) != 4:
        print(__doc__)
        return 2
    keel, model, venv = sys.argv[1:]
    if os.environ.get("KEEL_SERVE_E2E_VENV") != "1":
        py = ensure_venv(venv)
        env = dict(os.environ, KEEL_SERVE_E2E_VENV="1")
        return subprocess.run([py, __file__, *sys.argv[1:]], env=env).returncode
    import ollama
    import openai

    srv = Server(keel, model)
    try:
        run_checks(srv, keel, model, openai, ollama)
    except BaseException:
        srv.proc.kill()
        print("".join(srv.log), file=sys.stderr)
        raise
    # SIGTERM with a stream in flight: the stream finishes ([DONE]), the server exits 0.
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("POST", "/v1/completions", headers={"Authorization": f"Bearer {KEY}"},
              body=json.dumps({"prompt": [1, 403], "max_tokens": 400, "ignore_eos": True, "stream": True}))
    resp = c.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    srv.proc.send_signal(signal.SIGTERM)
    rest = resp.read().decode()
    assert rest.rstrip().endswith("data: [DONE]") and '"finish_reason":"length"' in rest, rest[-300:]
    rc = srv.proc.wait(timeout=60)
    assert rc == 0, f"keel serve exited {rc} after SIGTERM:\n" + "".join(srv.log)
    time.sleep(0.1)
    assert any("stopped" in line for line in srv.log), "".join(srv.log)
    print("ok: SIGTERM -> the running stream finishes, exit 0")

    # One worker: the cpu backend's sums in one order, so texts compare exactly.
    flags = ["--workers", "1", "--context", "256"]
    srv = Server(keel, model, "--max-batch", "4", *flags, backend="cpu")
    try:
        run_batch_checks(srv, keel, model, openai, flags)
    except BaseException:
        srv.proc.kill()
        print("".join(srv.log), file=sys.stderr)
        raise
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0, "".join(srv.log)
    return 0


def run_batch_checks(srv, keel, model, openai, flags):
    name = os.path.basename(model.rstrip("/"))
    jobs = [([1, 403, 407, 261, 378], 40, 0.0, 0), ([1, 403], 12, 0.9, 7), ([1, 300, 301], 60, 0.0, 0),
            ([1, 261, 378, 432], 25, 0.8, 3)]
    wants = [keel_generate(keel, model, p, n, t, sd, backend="cpu", extra=flags)["text"] for p, n, t, sd in jobs]

    def client(i):
        time.sleep(0.02 * i)  # staggered: later clients join running batches
        p, n, t, sd = jobs[i % 4]
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        st = c.completions.create(model=name, prompt=p, max_tokens=n, temperature=t, seed=sd, stream=True)
        return "".join(ch.choices[0].text for ch in st if ch.choices)

    run_clients(12, client, wants, "continuous batching")
    print("ok: continuous batching (--max-batch 4): 12 staggered streaming clients, greedy and sampled, "
          "each with keel generate's text")
    oa = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    first = keel_generate(keel, model, jobs[0][0], 30, backend="cpu", extra=flags)
    turn = jobs[0][0] + first["output_ids"] + [300, 301, 302]
    oa.completions.create(model=name, prompt=jobs[0][0], max_tokens=30, temperature=0)
    r = oa.completions.create(model=name, prompt=turn, max_tokens=20, temperature=0)
    assert r.choices[0].text == keel_generate(keel, model, turn, 20, backend="cpu", extra=flags)["text"]
    assert r.usage.prompt_tokens_details.cached_tokens >= len(jobs[0][0]) + 28, r.usage
    print(f"ok: the next turn took {r.usage.prompt_tokens_details.cached_tokens} of {len(turn)} prompt positions "
          "from the KV cache")


def run_checks(srv, keel, model, openai, ollama):
    name = os.path.basename(model.rstrip("/"))
    prompt_ids = [1, 403, 407, 261, 378]  # "Once upon a time" with BOS
    want = keel_generate(keel, model, prompt_ids, 40)
    assert want["prompt_ids"] == prompt_ids
    text = want["text"]
    assert len(text) > 40, want

    # --- OpenAI client
    oa = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in oa.models.list().data] == [name]
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0)
    assert r.choices[0].text == text, (r.choices[0].text, text)
    assert r.usage.prompt_tokens == 5 and r.usage.completion_tokens == len(want["output_ids"]), r.usage
    r = oa.completions.create(model=name, prompt="Once upon a time", max_tokens=40, temperature=0)
    assert r.choices[0].text == text and r.choices[0].finish_reason == want_finish(want), r
    pieces = [c.choices[0].text for c in oa.completions.create(model=name, prompt="Once upon a time", max_tokens=40,
                                                                  temperature=0, stream=True) if c.choices]
    assert "".join(pieces) == text and len(pieces) > 5, pieces
    # No chat format in this checkpoint: a chat is its contents (with BOS), as keel chat renders it.
    r = oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "Once upon a time"}],
                                   max_tokens=40, temperature=0)
    assert r.choices[0].message.content == text and r.choices[0].message.role == "assistant", r
    chunks = list(oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "Once upon a time"}],
                                             max_tokens=40, temperature=0, stream=True,
                                             stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == len(want["output_ids"]), chunks[-1]
    # Sampling with a seed gives keel generate's tokens (one sampler, program/sampling.h).
    sampled = keel_generate(keel, model, prompt_ids, 40, temperature=0.9, seed=7)
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0.9, seed=7)
    assert r.choices[0].text == sampled["text"], (r.choices[0].text, sampled["text"])
    # A stop string ends the text before it.
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0, stop=["Lily"])
    assert r.choices[0].text == text[:text.index("Lily")] and r.choices[0].finish_reason == "stop", r
    # Log-probabilities of the sampled tokens: one per token, <= 0, their texts make the text.
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0, logprobs=0)
    lp = r.choices[0].logprobs
    assert r.choices[0].text == text and "".join(lp.tokens) == text, lp
    assert len(lp.token_logprobs) == len(want["output_ids"]) and all(v <= 0 for v in lp.token_logprobs), lp
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset), lp
    chunks = list(oa.chat.completions.create(model=name, messages=[{"role": "user", "content": "Once upon a time"}],
                                             max_tokens=40, temperature=0, stream=True, logprobs=True))
    content = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert [round(t.logprob, 4) for t in content] == [round(v, 4) for v in lp.token_logprobs], content
    assert "".join(t.token for t in content) == text and all(t.top_logprobs == [] for t in content), content
    print("ok: openai client (completions, chat, streaming, seed, stop, logprobs)")
    status, j = srv.request("POST", "/api/generate", {"model": name, "prompt": "Once upon a time", "stream": False,
                                                      "logprobs": True, "options": {"num_predict": 40, "temperature": 0}})
    assert status == 200, j
    assert [round(t["logprob"], 4) for t in j["logprobs"]] == [round(v, 4) for v in lp.token_logprobs], j
    assert "".join(t["token"] for t in j["logprobs"]) == text, j

    # --- Prefix reuse: a request that continues the last one (a chat's next
    # turn) starts from the K/V it left (its prompt but the last token), and
    # its text is a fresh process's.
    longer = prompt_ids + want["output_ids"][:10]
    cont = keel_generate(keel, model, longer, 20)
    oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0)
    r = oa.completions.create(model=name, prompt=longer, max_tokens=20, temperature=0)
    assert r.choices[0].text == cont["text"], (r.choices[0].text, cont["text"])
    assert r.usage.prompt_tokens_details.cached_tokens == len(longer) - 1, r.usage
    print(f"ok: prefix reuse ({r.usage.prompt_tokens_details.cached_tokens} of {len(longer)} prompt tokens cached)")

    # --- Ollama client
    ol = ollama.Client(host=srv.url, headers={"Authorization": f"Bearer {KEY}"})
    assert [m.model for m in ol.list().models] == [name + ":latest"]
    assert ol.show(name).details.family == "llama"
    opts = {"num_predict": 40, "temperature": 0}
    r = ol.generate(model=name, prompt="Once upon a time", options=opts, stream=False)
    assert r.response == text and r.done and r.eval_count == len(want["output_ids"]), r
    assert "".join(p.response for p in ol.generate(model=name, prompt="Once upon a time", options=opts,
                                                stream=True)) == text
    r = ol.chat(model=name, messages=[{"role": "user", "content": "Once upon a time"}], options=opts, stream=False)
    assert r.message.content == text and r.message.role == "assistant", r
    parts = list(ol.chat(model=name, messages=[{"role": "user", "content": "Once upon a time"}], options=opts,
                         stream=True))
    assert "".join(p.message.content for p in parts) == text and parts[-1].done and parts[-1].prompt_eval_count == 5
    print("ok: ollama client (generate, chat, streaming, list, show)")

    # --- 32 concurrent streaming clients, four different prompts.
    prompts = [[1, 403, 407, 261, 378], [1, 403], [1, 300, 301], [1, 261, 378, 432]]
    wants = [keel_generate(keel, model, p, 32)["text"] for p in prompts]

    def client(i):
        c = openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0)
        s = c.completions.create(model=name, prompt=prompts[i % 4], max_tokens=32, temperature=0, stream=True)
        return "".join(ch.choices[0].text for ch in s if ch.choices)

    run_clients(32, client, wants, "32 concurrent clients")
    print("ok: 32 concurrent streaming clients")

    # --- A client that leaves mid-stream: the server serves the next request.
    before = srv.wait_idle()
    c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    c.request("POST", "/v1/completions", body=json.dumps({"prompt": prompt_ids, "max_tokens": 500, "stream": True}),
              headers={"Authorization": f"Bearer {KEY}"})
    resp = c.getresponse()
    assert resp.status == 200 and resp.readline().startswith(b"data: ")
    c.sock.close()  # gone without reading the rest
    c.close()
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0)
    assert r.choices[0].text == text
    h = srv.wait_idle()
    ended = (h["cancelled"] - before["cancelled"]) + (h["completed"] - before["completed"])
    assert ended == 2, (before, h)  # the abandoned stream (cancelled or, if it was faster, completed) and the next
    print(f"ok: a client leaving mid-stream (its request {'cancelled' if h['cancelled'] > before['cancelled'] else 'had already finished'})")

    # --- Errors, each in the API's shape; the server keeps serving after each.
    check_error(srv, *srv.request("POST", "/v1/completions", raw="{not json"), 400, "invalid_json")
    check_error(srv, *srv.request("POST", "/v1/chat/completions", raw="[1, 2]"), 400, "invalid_json")
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x", "max_tokens": "ten"}), 400, "invalid_value")
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x", "n": 2}), 400, "invalid_value")
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x", "logprobs": 1}), 400, "invalid_value")  # top alternatives
    check_error(srv, *srv.request("POST", "/v1/chat/completions", {"messages": []}), 400, "invalid_value")
    long_prompt = [1] + [300] * 600  # the context is 512 tokens
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": long_prompt}), 400, "context_length_exceeded")
    check_error(srv, *srv.request("POST", "/api/generate", {"model": name, "prompt": "Once " * 600, "raw": True}), 400,
                path="/api/generate")
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x", "model": "gpt-4"}), 404, "model_not_found")
    check_error(srv, *srv.request("GET", "/v1/nowhere"), 404, "unknown_route")
    check_error(srv, *srv.request("POST", "/v1/completions", raw='{"prompt": "' + "a" * (9 << 20) + '"}'), 413)
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x"}, key="wrong"), 401, "invalid_api_key")
    check_error(srv, *srv.request("POST", "/v1/completions", {"prompt": "x"}, key=None), 401, "invalid_api_key")
    check_error(srv, *srv.request("GET", "/api/tags", key="wrong"), 401, path="/api/tags")
    try:
        openai.OpenAI(base_url=srv.url + "/v1", api_key="wrong", max_retries=0).models.list()
        raise AssertionError("a wrong key was accepted")
    except openai.AuthenticationError:
        pass
    try:
        oa.completions.create(model=name, prompt=long_prompt, max_tokens=4)
        raise AssertionError("a prompt beyond the context was accepted")
    except openai.BadRequestError as e:
        assert "context" in str(e), e
    r = oa.completions.create(model=name, prompt=prompt_ids, max_tokens=40, temperature=0)
    assert r.choices[0].text == text
    print("ok: errors 400 (malformed, bad field, n, logprobs, context), 401, 404, 413; still serving")


def want_finish(g):
    return "length" if g["stop_reason"] in ("max_tokens", "context") else "stop"


if __name__ == "__main__":
    sys.exit(main())
