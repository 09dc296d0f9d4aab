#!/usr/bin/env python3
"""Issue 13's YaRN check: keel's logits at positions past 40000 against
transformers', on a transformers-written Qwen3 checkpoint with
rope_scaling YaRN (factor 4 over 32768 original positions, as Qwen3's model
cards give for 131072-token contexts). The model is tiny (random bf16 weights,
2 layers, head_dim 128 as Qwen3's) so that a 40064-token teacher-forced pass
is quick on both sides; what is checked is the position encoding far past the
original context, where a wrong YaRN (frequencies, ramp, attention factor)
moves the logits by far more than bf16 rounding does.

transformers: the checkpoint reloaded in float32 on the GPU (or the CPU:
--ref-device cpu), one forward of the whole sequence (sdpa). keel: `keel score --backend B --ids @FILE` (every
position's logits) for each backend named. Reported per backend: the relative
L2 error of the logits over positions [0, 64) and [40000, 40064), the worst
row, and how often the argmax agrees. Needs torch, transformers and numpy.

Usage: yarn_check.py KEEL OUT_DIR [--backends cuda,cpu] [--positions 40064] [--seed 0] [--ref-device cuda|cpu]
"""
import argparse
import json
import os
import struct
import subprocess
import sys
import time

import numpy as np


def read_logits(path):
    """The F32 tensor `logits` of a safetensors file keel score wrote."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        head = json.loads(f.read(n))
        t = head["logits"]
        assert t["dtype"] == "F32", t
        a, b = t["data_offsets"]
        f.seek(8 + n + a)
        return np.frombuffer(f.read(b - a), dtype=np.float32).reshape(t["shape"])


def compare(got, ref, rows):
    g, r = got[rows].astype(np.float64), ref[rows].astype(np.float64)
    rel = np.sqrt(((g - r) ** 2).sum() / (r ** 2).sum())
    per_row = np.sqrt(((g - r) ** 2).sum(1) / (r ** 2).sum(1))
    agree = float((g.argmax(1) == r.argmax(1)).mean())
    return rel, float(per_row.max()), agree


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("keel")
    ap.add_argument("out")
    ap.add_argument("--backends", default="cuda")
    ap.add_argument("--positions", type=int, default=40064)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ref-device", default="cuda", choices=["cuda", "cpu"],
                    help="where transformers' reference forward runs (cpu: slow, no GPU needed)")
    a = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    os.makedirs(a.out, exist_ok=True)
    ckpt = os.path.join(a.out, "yarn-qwen3")
    dims = dict(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=128, max_position_embeddings=131072, rms_norm_eps=1e-6,
                tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}

    def rope_of(c):
        r = getattr(c, "rope_parameters", None) or getattr(c, "rope_scaling", None) or {}
        return r.get("rope_type", r.get("type"))

    # transformers 4 takes rope_scaling (and rope_theta); 5 takes rope_parameters
    # (rope_theta inside) and may still map the former.
    cfg = AutoConfig.for_model("qwen3", rope_theta=1000000.0, rope_scaling=dict(yarn), **dims)
    if rope_of(cfg) != "yarn":
        cfg = AutoConfig.for_model("qwen3", rope_parameters=dict(yarn, rope_theta=1000000.0), **dims)
    if rope_of(cfg) != "yarn":
        rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None)
        print(f"yarn_check: this transformers did not take the YaRN rope_scaling: {rope}")
        return 1
    torch.manual_seed(a.seed)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    with torch.no_grad():  # weights of a scale that makes attention position-sensitive
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.08)
    model.save_pretrained(ckpt)
    saved = json.load(open(os.path.join(ckpt, "config.json")))
    print(f"yarn_check: wrote {ckpt} (transformers {__import__('transformers').__version__}); its rope: "
          f"{saved.get('rope_scaling') or saved.get('rope_parameters')}")

    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(3, 512, (a.positions,), generator=g)
    ids[0] = 1
    ids_file = os.path.join(a.out, "yarn-ids.txt")
    with open(ids_file, "w") as f:
        f.write(",".join(str(int(i)) for i in ids))

    t0 = time.time()
    dev = a.ref_device
    ref_model = AutoModelForCausalLM.from_pretrained(ckpt, torch_dtype=torch.float32, attn_implementation="sdpa").to(dev)
    with torch.no_grad():
        # The fused fp32 sdpa kernel (no 40K x 40K score matrix); the math one if it refuses.
        if dev == "cuda":
            torch.backends.cuda.enable_math_sdp(False)
        try:
            ref = ref_model(ids[None].to(dev)).logits[0].float().cpu().numpy()
        except RuntimeError as e:
            if dev != "cuda":
                raise
            print(f"yarn_check: fused sdpa refused ({str(e)[:120]}); the math kernel instead")
            torch.backends.cuda.enable_math_sdp(True)
            ref = ref_model(ids[None].to(dev)).logits[0].float().cpu().numpy()
    print(f"yarn_check: transformers fp32 forward of {a.positions} positions on {dev} in {time.time() - t0:.1f} s")
    del ref_model
    if dev == "cuda":
        torch.cuda.empty_cache()

    early = slice(0, 64)
    late = slice(40000, min(40064, a.positions))
    ok = True
    for be in a.backends.split(","):
        out = os.path.join(a.out, f"yarn-logits-{be}.safetensors")
        t0 = time.time()
        r = subprocess.run([a.keel, "score", "--model", ckpt, "--backend", be, "--context", str(a.positions),
                            "--ids", "@" + ids_file, "--out", out], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            print(f"yarn_check: keel score --backend {be} failed (rc {r.returncode}): {r.stderr.strip()[-400:]}")
            ok = False
            continue
        got = read_logits(out)
        e_rel, e_worst, e_agree = compare(got, ref, early)
        l_rel, l_worst, l_agree = compare(got, ref, late)
        print(f"yarn_check: keel {be} ({time.time() - t0:.1f} s) vs transformers fp32: positions 0-63 relative L2 "
              f"{e_rel:.2e} (worst row {e_worst:.2e}, argmax agrees {e_agree:.0%}); positions {late.start}-{late.stop - 1} "
              f"{l_rel:.2e} (worst row {l_worst:.2e}, argmax agrees {l_agree:.0%})")
        os.remove(out)
        ok &= l_rel < 2e-2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
