#!/usr/bin/env python3
"""RoPE inverse frequencies and attention factors, re-implemented in pure Python
from Hugging Face transformers' src/transformers/modeling_rope_utils.py
(transformers 5: _compute_linear_scaling_rope_parameters,
_compute_llama3_parameters, _compute_yarn_parameters, with the defaults of
RotaryEmbeddingConfigMixin.standardize_rope_params). It prints the C++ tables
that tests/model/test_rope_scaling.cpp checks keel's model::rope_inv_freq and
the parsed attention factor against; rerun it and paste its output there if a
case is added:

    python3 tests/model/rope_reference.py

transformers computes in float32 torch tensors; this script in float64. The two
differ by a few float32 ulps, which is what the C++ test allows.
"""
import math


def default_inv_freq(base, dim):
    return [1.0 / (base ** (i / dim)) for i in range(0, dim, 2)]


def linear(base, dim, factor):
    return [f / factor for f in default_inv_freq(base, dim)], 1.0


def llama3(base, dim, factor, low_freq_factor, high_freq_factor, old_context_len):
    out = []
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    for f in default_inv_freq(base, dim):
        wavelen = 2 * math.pi / f
        g = f / factor if wavelen > low_freq_wavelen else f
        if not (wavelen < high_freq_wavelen) and not (wavelen > low_freq_wavelen):
            smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
            g = (1 - smooth) * g / factor + smooth * g
        out.append(g)
    return out, 1.0


def yarn(base, dim, factor, original_max, beta_fast=None, beta_slow=None, mscale=None, mscale_all_dim=None,
         attention_factor=None, truncate=True):
    def get_mscale(scale, m=1):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = beta_fast or 32
    beta_slow = beta_slow or 1

    def find_correction_dim(num_rotations):
        return (dim * math.log(original_max / (num_rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = find_correction_dim(beta_fast), find_correction_dim(beta_slow)
    if truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    out = []
    for i, f in enumerate(default_inv_freq(base, dim)):
        ramp = min(max((i - low) / (high - low), 0.0), 1.0)
        extrapolation_factor = 1 - ramp
        out.append((f / factor) * (1 - extrapolation_factor) + f * extrapolation_factor)
    return out, attention_factor


CASES = [
    # name, head_dim, (inv_freq, attention_factor)
    ("yarn_qwen3", 128, yarn(1e6, 128, 4.0, 32768)),
    ("yarn_mscale", 64, yarn(10000.0, 64, 40.0, 4096, beta_fast=16, beta_slow=2, mscale=0.707, mscale_all_dim=1.0,
                              truncate=False)),
    ("yarn_given_factor", 32, yarn(10000.0, 32, 8.0, 2048, attention_factor=1.5)),
    ("llama3_3_2", 64, llama3(500000.0, 64, 32.0, 1.0, 4.0, 8192)),
    ("linear", 16, linear(10000.0, 16, 4.0)),
]

for name, dim, (inv, att) in CASES:
    print(f"// {name}: head_dim {dim}")
    print(f"constexpr double k_{name}_attention = {att!r};")
    vals = ", ".join(f"{v:.12e}" for v in inv)
    print(f"constexpr double k_{name}[] = {{{vals}}};")
