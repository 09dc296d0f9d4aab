"""Makes the SmolLM2-135M-Instruct goldens keel's real-model tests compare with.

Everything comes from Hugging Face transformers reading the same GGUF keel
reads (from_pretrained(..., gguf_file=...), which dequantizes with gguf-py),
in float32 on the CPU:
  tokenize.json     tokenizations of a varied text set (ids, and the decode)
  logits.json       teacher-forced logits of a few prompts at a few positions:
                    the top 10 (id, value), every 97th logit, and the sum and
                    sum of squares of the whole row (keeps the file small)
  greedy.json       greedy continuations with each step's top-1 - top-2 margin
  chat.json         apply_chat_template outputs
  hf_folder/        what transformers 5.x saves for the tokenizer (config,
                    chat_template.jinja) and tokenizer.json with its vocab and
                    merges left out: the test refills them from the GGUF, whose
                    lists this script checks are the same
Usage: python3 make_goldens.py GGUF OUT_DIR   (needs torch, transformers, accelerate, gguf)
"""
import hashlib, json, os, sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

gguf_path, out = sys.argv[1], sys.argv[2]
folder, name = os.path.split(gguf_path)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
model.eval()
meta = {"transformers": transformers.__version__, "torch": torch.__version__,
        "gguf_sha256": hashlib.sha256(open(gguf_path, "rb").read()).hexdigest()}

def dump(fname, obj):
    with open(os.path.join(out, fname), "w") as f:
        json.dump(obj, f, ensure_ascii=False, indent=1)

texts = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces and\ttabs\nnew lines\n\n\nand more   ",
    "Numbers: 1234567890, 3.14159, -42 and 1e-5.",
    "def f(x):\n    return x ** 2  # square\n",
    "naïve café, Zürich, São Paulo, Ελληνικά, русский",
    "日本語のテキストと中文文本",
    "emoji 😀🎉👍🏽 and symbols ∑∫√ ©®™",
    "control bytes \x01\x02\x04\x07 and DEL \x7f end",
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n",
    "It's a dog's life, isn't it? We'll see; they'd know.",
    "URL: https://huggingface.co/HuggingFaceTB/SmolLM2-135M-Instruct?x=1&y=2",
    "",
    " ",
    "a" * 50,
]
toks = []
for t in texts:
    ids = tok.encode(t, add_special_tokens=True)
    toks.append({"text": t, "ids": ids, "decoded": tok.decode(ids)})
dump("tokenize.json", {"meta": meta, "cases": toks})

def chat_prompt(messages):
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

prompts = [
    "Once upon a time, there was a little girl who",
    "The capital of France is",
    chat_prompt([{"role": "user", "content": "What is the capital of France?"}]),
]
stride = 97
logits_cases = []
with torch.no_grad():
    for p in prompts:
        ids = tok.encode(p, add_special_tokens=True)
        logits = model(torch.tensor([ids])).logits[0].double().numpy()
        n = len(ids)
        positions = sorted(set([0, n // 2, n - 1]))
        rows = []
        for pos in positions:
            row = logits[pos]
            top = np.argsort(-row, kind="stable")[:10]
            rows.append({"pos": pos, "top_ids": top.tolist(), "top_values": row[top].tolist(),
                         "strided": row[::stride].tolist(), "sum": float(row.sum()),
                         "sumsq": float((row * row).sum())})
        logits_cases.append({"prompt": p, "ids": ids, "stride": stride, "rows": rows})
dump("logits.json", {"meta": meta, "cases": logits_cases})

greedy = []
with torch.no_grad():
    for p in prompts:
        ids = tok.encode(p, add_special_tokens=True)
        seq, margins = list(ids), []
        for _ in range(24):
            row = model(torch.tensor([seq])).logits[0, -1].double().numpy()
            top = np.argsort(-row, kind="stable")[:2]
            margins.append(float(row[top[0]] - row[top[1]]))
            seq.append(int(top[0]))
        greedy.append({"prompt": p, "ids": ids, "generated": seq[len(ids):], "margins": margins,
                       "text": tok.decode(seq[len(ids):], skip_special_tokens=True)})
dump("greedy.json", {"meta": meta, "cases": greedy})

conversations = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
    [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
]
chats = []
for c in conversations:
    for agp in (True, False):
        chats.append({"messages": c, "add_generation_prompt": agp,
                      "text": tok.apply_chat_template(c, tokenize=False, add_generation_prompt=agp)})
dump("chat.json", {"meta": meta, "cases": chats})

# The tokenizer as transformers 5.x saves it, minus the two big lists.
import gguf
hf = os.path.join(out, "hf_folder")
tmp = os.path.join(out, "_hf_tmp")
tok.save_pretrained(tmp)
reader = gguf.GGUFReader(gguf_path)
g_tokens = reader.fields["tokenizer.ggml.tokens"].contents()
g_merges = reader.fields["tokenizer.ggml.merges"].contents()
tj = json.load(open(os.path.join(tmp, "tokenizer.json")))
vocab = tj["model"]["vocab"]
assert [k for k, _ in sorted(vocab.items(), key=lambda kv: kv[1])] == g_tokens, "vocab differs from the GGUF"
merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
assert merges == g_merges, "merges differ from the GGUF"
tj["model"]["vocab"] = "FROM_GGUF"
tj["model"]["merges"] = "FROM_GGUF"
os.makedirs(hf, exist_ok=True)
for f in os.listdir(tmp):
    if f == "tokenizer.json":
        json.dump(tj, open(os.path.join(hf, "tokenizer.json.skeleton"), "w"), ensure_ascii=False, indent=1)
    else:
        os.replace(os.path.join(tmp, f), os.path.join(hf, f))
for f in os.listdir(tmp):
    os.remove(os.path.join(tmp, f))
os.rmdir(tmp)
json.dump(model.config.to_dict(), open(os.path.join(hf, "config.json"), "w"), indent=1)
if model.generation_config is not None:
    model.generation_config.to_json_file(os.path.join(hf, "generation_config.json"))
print("wrote goldens to", out)
