#!/usr/bin/env python3
"""Peer for W4A16 g128 GEMMs: torch's tinygemm kernel (torch._weight_int4pack_mm) against cuBLAS bf16
(torch.matmul) on Llama-3-8B linear shapes, timed with CUDA events like kestrel_cuda_bench.

  python3 bench/peers/torch_int4pack.py [--m 1,16,128,256] [--json OUT.json]

Prints one row per (shape, M): microseconds of each and the int4 kernel's speed-up over bf16."""
import argparse
import json

import torch

SHAPES = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)]
GROUP = 128


def time_us(fn, iters=50):
    for _ in range(5):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) * 1000.0 / iters


def pack(n, k):
    """Random 4-bit codes packed for tinygemm, with bf16 scales and zeros of shape [k/group, n, 2]."""
    codes = torch.randint(0, 16, (n, k), dtype=torch.int32, device="cuda")
    packed_u8 = (codes[:, ::2] << 4 | codes[:, 1::2]).to(torch.uint8)
    try:  # torch >= 2.5: uint8 [n, k/2]
        w = torch.ops.aten._convert_weight_to_int4pack(packed_u8, 8)
    except RuntimeError:  # older: int32 [n, k]
        w = torch.ops.aten._convert_weight_to_int4pack(codes, 8)
    sz = torch.empty(k // GROUP, n, 2, dtype=torch.bfloat16, device="cuda")
    sz[..., 0].uniform_(0.001, 0.01)
    sz[..., 1].uniform_(-0.05, 0.05)
    return w, sz


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--m", default="1,16,128,256")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows = []
    for name, n, k in SHAPES:
        w_bf16 = torch.randn(n, k, dtype=torch.bfloat16, device="cuda") * 0.02
        w4, sz = pack(n, k)
        for m in [int(v) for v in args.m.split(",")]:
            x = torch.randn(m, k, dtype=torch.bfloat16, device="cuda")
            bf16 = time_us(lambda: torch.matmul(x, w_bf16.t()))
            int4 = time_us(lambda: torch._weight_int4pack_mm(x, w4, GROUP, sz))
            rows.append({"shape": name, "n": n, "k": k, "m": m, "bf16_us": bf16, "int4pack_us": int4,
                         "speedup": bf16 / int4})
            print(f"{name:8s} N={n:5d} K={k:5d} M={m:3d}  cublas bf16 {bf16:8.1f} us  "
                  f"int4pack {int4:8.1f} us  {bf16 / int4:5.2f}x")
    for m in sorted({r["m"] for r in rows}):
        b = sum(r["bf16_us"] for r in rows if r["m"] == m)
        q = sum(r["int4pack_us"] for r in rows if r["m"] == m)
        print(f"layer sum M={m:3d}: bf16 {b:8.1f} us  int4pack {q:8.1f} us  {b / q:5.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
