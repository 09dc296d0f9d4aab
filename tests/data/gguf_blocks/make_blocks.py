"""Golden dequantizations for keel's GGUF block decoders (src/core/quant.h).

For each block format keel reads, two blocks of seeded random bytes (with the
f16 scale fields set to modest values so every element is finite) are decoded
by gguf-py's reference numpy implementation (gguf.quants.dequantize), which
transformers uses to load GGUF files. Writes blocks.json: per type the block
bytes in hex and the expected floats.
Usage: python3 make_blocks.py OUT.json   (needs numpy, gguf)
"""
import json, sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize

rng = np.random.default_rng(15)
# type: (block elements, block bytes, byte offsets of f16 scale fields)
formats = {
    "Q4_0": (T.Q4_0, 32, 18, [0]),
    "Q4_1": (T.Q4_1, 32, 20, [0, 2]),
    "Q5_0": (T.Q5_0, 32, 22, [0]),
    "Q5_1": (T.Q5_1, 32, 24, [0, 2]),
    "Q8_0": (T.Q8_0, 32, 34, [0]),
    "Q4_K": (T.Q4_K, 256, 144, [0, 2]),
    "Q5_K": (T.Q5_K, 256, 176, [0, 2]),
    "Q6_K": (T.Q6_K, 256, 210, [208]),
}
out = {}
for name, (qt, elems, nbytes, scales) in formats.items():
    blocks = []
    for _ in range(2):
        b = bytearray(rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes())
        for off in scales:
            b[off:off + 2] = np.float16(rng.uniform(-0.05, 0.05)).tobytes()
        blocks.append(bytes(b))
    raw = np.frombuffer(b"".join(blocks), dtype=np.uint8).reshape(1, -1)
    vals = dequantize(raw, qt).reshape(-1).astype(np.float32)
    assert vals.size == 2 * elems and np.all(np.isfinite(vals))
    out[name] = {"elems": 2 * elems, "hex": b"".join(blocks).hex(), "values": [float(v) for v in vals]}
json.dump(out, open(sys.argv[1], "w"), indent=0)
