#!/usr/bin/env python3
"""The transformers peer for `kestrel bench --device cuda`: the same model directory (a `kestrel synth`
output) through PyTorch/transformers eager (bf16, SDPA attention) on the same GPU in the same run.

Measures batch-1 greedy decode tok/s (generate, 128 new tokens), whole-model prefill time of 8K tokens,
and torch SDPA's FlashAttention-2 backend alone on the 8K causal attention shape (the kernel Kestrel's
prefill attention is held to), plus torch's own copy rate. Writes --json.

The prefill does Kestrel's work, no more: the decoder body over all 8K tokens, then the vocabulary
projection (lm_head) of the last position only, as Kestrel gathers only the logit rows a step needs. A plain
`model(ids).logits` would also project the other 8,191 rows (an extra [8192 x hidden] x [hidden x vocab]
GEMM and a [8192 x vocab] f32 output) and make the peer look slower than it is.
  transformers_peer.py --model DIR [--json OUT] [--prefill 8192] [--gen 128]
"""
import argparse
import json
import time

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import AutoConfig, AutoModelForCausalLM


def cuda_time_ms(fn, iters=3):
    best = float("inf")
    for _ in range(iters):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - t0) * 1e3)
    return best


def prefill_last_logits(model, ids):
    """The prefill Kestrel runs: every layer over `ids` (KV cache included), logits of the last row only."""
    hidden = model.model(input_ids=ids).last_hidden_state
    return model.lm_head(hidden[:, -1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--json")
    ap.add_argument("--prefill", type=int, default=8192)
    ap.add_argument("--gen", type=int, default=128)
    a = ap.parse_args()
    out = {"peer": f"transformers {__import__('transformers').__version__} eager (sdpa), torch {torch.__version__}",
           "device": torch.cuda.get_device_name()}

    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = cuda_time_ms(lambda: y.copy_(x), iters=5)
    out["torch_copy_gbps"] = 2 * x.numel() / (ms * 1e-3) / 1e9
    del x, y

    cfg = AutoConfig.from_pretrained(a.model)
    h, kv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q = torch.randn(1, h, a.prefill, d, dtype=torch.bfloat16, device="cuda")
    k = torch.randn(1, kv, a.prefill, d, dtype=torch.bfloat16, device="cuda")
    v = torch.randn_like(k)
    k, v = k.repeat_interleave(h // kv, 1), v.repeat_interleave(h // kv, 1)
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        out["sdpa_fa2_prefill_attention_ms"] = cuda_time_ms(
            lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), iters=5)
    del q, k, v

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    vocab = cfg.vocab_size
    with torch.no_grad():
        ids = (torch.arange(a.prefill, device="cuda") * 7919 + 13) % vocab
        prefill_last_logits(model, ids[None, :16])
        out[f"prefill{a.prefill}_ms"] = cuda_time_ms(lambda: prefill_last_logits(model, ids[None, :]), iters=3)
        prompt = ids[None, :8]
        gen = dict(max_new_tokens=a.gen, min_new_tokens=a.gen, do_sample=False, pad_token_id=0)
        model.generate(prompt, **dict(gen, max_new_tokens=8, min_new_tokens=8))
        ms = cuda_time_ms(lambda: model.generate(prompt, **gen), iters=2)
        out[f"tg{a.gen}_batch1_tok_s"] = a.gen / (ms * 1e-3)
    print(json.dumps(out, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
