#!/usr/bin/env python3
"""Writes a random-weight checkpoint as transformers saves it (bf16 safetensors
shards with their index, config.json, generation_config.json) beside a real
tokenizer, for end-to-end runs of keel on real shapes where no trained weights
can be carried (the GPU machine: `keel serve` on a Qwen3-8B-shaped model,
scripts/device_run.sh serve). Weights are transformers' own initialisation
(normal, std = initializer_range) under a fixed seed, built on the GPU when
there is one. Needs torch and transformers.

Usage: write_checkpoint.py CONFIG.json TOKENIZER_DIR OUT_DIR [--seed N]
  CONFIG.json    a model's config.json (e.g. shared/models/qwen3-tokenizer/Qwen3-8B/config.json)
  TOKENIZER_DIR  folder with tokenizer.json / tokenizer_config.json (and vocab.json, merges.txt)
"""
import argparse
import json
import os
import shutil
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("tokenizer_dir")
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    t0 = time.time()
    cfg_dict = json.load(open(a.config))
    cfg = AutoConfig.for_model(**{k: v for k, v in cfg_dict.items() if k not in ("architectures", "transformers_version")})
    cfg.architectures = cfg_dict.get("architectures")
    torch.manual_seed(a.seed)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(dev):
        model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())
    print(f"write_checkpoint: {cfg.model_type} with {n / 1e9:.2f}B parameters built on {dev} "
          f"in {time.time() - t0:.1f} s", file=sys.stderr)
    os.makedirs(a.out, exist_ok=True)
    model.save_pretrained(a.out, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
              "tokenizer.model", "chat_template.jinja"):
        src = os.path.join(a.tokenizer_dir, f)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(a.out, f))
    size = sum(os.path.getsize(os.path.join(a.out, f)) for f in os.listdir(a.out))
    print(f"write_checkpoint: {a.out}: {size / 1e9:.2f} GB in {time.time() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
