"""The peer of gemm_tile.cu: torch.nn.functional.linear (cuBLAS) on the same shapes, bf16.
Prints us and TFLOP/s per shape.   python3 gemm_tile_peer.py"""
import torch

CASES = [("q8b qkv", 6144, 4096, 2000), ("q8b o", 4096, 4096, 2000), ("q8b gate_up", 24576, 4096, 2000),
         ("q8b down", 4096, 12288, 2000), ("q8b gate_up T256", 24576, 4096, 256), ("q8b gate_up T512", 24576, 4096, 512),
         ("l1b gate_up", 16384, 2048, 2000), ("l1b down", 2048, 8192, 2000)]

print(torch.cuda.get_device_name(0))
for name, M, K, T in CASES:
    w = torch.randn(M, K, device="cuda", dtype=torch.bfloat16) * 0.05
    x = torch.randn(T, K, device="cuda", dtype=torch.bfloat16) * 0.05
    for _ in range(3):
        torch.nn.functional.linear(x, w)
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    e0.record()
    for _ in range(20):
        torch.nn.functional.linear(x, w)
    e1.record()
    torch.cuda.synchronize()
    us = e0.elapsed_time(e1) * 1000 / 20
    print(f"peer {name:18s} {M:6d} {K:6d} {T:6d} | {us:9.1f} us {2 * M * K * T / us / 1e6:7.0f} TFLOP/s")
