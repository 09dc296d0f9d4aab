# The prefill peer: transformers' bf16 forward (sdpa attention) of one random
# prompt, random weights of a real model's shape (shared/tools/baseline_torch.py's
# MODELS), median of 5 after 2 warm-ups; with all logits and with the last
# position's only. Run from the folder holding baseline_torch.py (device_run.sh
# does: .device/tools). Usage: prefill_peer.py MODEL PROMPT_LEN
import os, sys, time, torch
sys.path.insert(0, os.getcwd())
from baseline_torch import MODELS
from transformers import AutoConfig, AutoModelForCausalLM
name, P = sys.argv[1], int(sys.argv[2])
c = dict(MODELS[name])
mt = c.pop("model_type")
cfg = AutoConfig.for_model(mt, **c)
with torch.device("cuda"):
    m = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16, attn_implementation="sdpa")
m.eval()
ids = torch.randint(0, c["vocab_size"], (1, P), device="cuda")
def timed(**kw):
    with torch.no_grad():
        for _ in range(2): m(ids, use_cache=True, **kw)
        torch.cuda.synchronize()
        ts = []
        for _ in range(5):
            t = time.perf_counter(); m(ids, use_cache=True, **kw); torch.cuda.synchronize()
            ts.append((time.perf_counter() - t) * 1e3)
    return sorted(ts)[2]
full = timed()
try:
    last = timed(logits_to_keep=1)
except TypeError:
    last = float("nan")
print(f"peer transformers {torch.__version__} bf16 forward {name} prompt {P}: {full:.1f} ms (all logits), {last:.1f} ms (last logits)")
