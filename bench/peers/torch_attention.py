#!/usr/bin/env python3
"""Peer numbers for the CUDA kernel benchmarks (bench/cuda/ops_bench.cpp), measured in the same run:
torch SDPA (FlashAttention-2 and cuDNN backends) at the prefill and decode attention shapes, F.linear
(cuBLAS) at the llama3-8b decode GEMM shapes, and a device-to-device copy as the bandwidth ceiling.

Usage: torch_attention.py [--json FILE] [--quick]
"""
import argparse
import json

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

H, HKV, D = 32, 8, 128


def time_us(fn, reps=20):
    """Median microseconds per call over `reps` event-timed calls after a warm-up."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) * 1e3)
    times.sort()
    return times[len(times) // 2]


def sdpa(q, k, v, causal, backend):
    with sdpa_kernel(backend):
        try:
            return time_us(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True))
        except RuntimeError:  # backend without native GQA: give it expanded K/V (time the call only)
            k2, v2 = k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1)
            return time_us(lambda: F.scaled_dot_product_attention(q, k2, v2, is_causal=causal))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    out = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": []}

    def record(group, case, peer, us, nbytes, flops):
        r = {"group": group, "case": case, "peer": peer, "us": us,
             "gb_per_s": nbytes / us * 1e-3, "tflop_per_s": flops / us * 1e-6}
        out["results"].append(r)
        print(f"{group:10s} {case:34s} {peer:22s} {us:10.2f} us {r['gb_per_s']:8.1f} GB/s "
              f"{r['tflop_per_s']:7.1f} TFLOP/s", flush=True)

    a = torch.empty(1 << 30, dtype=torch.uint8, device=dev)
    b = torch.empty_like(a)
    us = time_us(lambda: b.copy_(a))
    out["copy_gb_per_s"] = 2 * a.numel() / us * 1e-3
    print(f"copy ceiling {out['copy_gb_per_s']:.0f} GB/s")
    del a, b

    for n in ([8192] if args.quick else [8192, 32768]):
        q = torch.randn(1, H, n, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, HKV, n, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(1, HKV, n, D, device=dev, dtype=torch.bfloat16)
        flops = 2.0 * n * n * D * H
        for name, backend in [("torch.sdpa.flash", SDPBackend.FLASH_ATTENTION),
                              ("torch.sdpa.cudnn", SDPBackend.CUDNN_ATTENTION)]:
            try:
                record("attention", f"prefill 1x{n // 1024}K causal h32/8 d128", name, sdpa(q, k, v, True, backend),
                       0, flops)
            except RuntimeError as e:
                print(f"{name} unavailable: {e}")

    for batch, ctx in [(1, 8192), (1, 32768), (1, 131072), (32, 8192), (16, 8192), (64, 4096)]:
        q = torch.randn(batch, H, 1, D, device=dev, dtype=torch.bfloat16)
        k = torch.randn(batch, HKV, ctx, D, device=dev, dtype=torch.bfloat16)
        v = torch.randn(batch, HKV, ctx, D, device=dev, dtype=torch.bfloat16)
        nbytes = 2.0 * k.numel() * 2
        label = f"decode {batch}x{ctx // 1024}K h32/8 d128"
        record("attention", label, "torch.sdpa.flash", sdpa(q, k, v, False, SDPBackend.FLASH_ATTENTION), nbytes, 0)
        del q, k, v

    for name, n, kk in [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336),
                        ("lm_head", 128256, 4096)]:
        ws = [torch.randn(n, kk, device=dev, dtype=torch.bfloat16) for _ in range(max(1, (256 << 20) // (2 * n * kk)))]
        for m in ([1, 8] if args.quick else [1, 8, 32, 128]):
            x = torch.randn(m, kk, device=dev, dtype=torch.bfloat16)
            i = [0]

            def step():
                i[0] = (i[0] + 1) % len(ws)
                F.linear(x, ws[i[0]])

            record("matmul", f"llama3-8b {name} {n}x{kk} M={m}", "torch.F.linear", time_us(step, 50),
                   2.0 * n * kk + 2.0 * m * (n + kk), 2.0 * m * n * kk)
        del ws

    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
