#!/usr/bin/env python3
"""Reference logits of a synthetic model from transformers on the GPU (the CPU without one), in float32 (the oracle that
Kestrel's bf16 GPU path is held to in tests/model/cuda_model_test.cpp).

Writes OUT (raw little-endian f32 logits [T, vocab]) and OUT.json ({"text", "tokens", "vocab"}); the
token ids come from the model directory's tokenizer.json through transformers, so the test also checks
that Kestrel's tokenizer agrees with it.
  reference_logits.py --model DIR --out FILE [--tokens 40]
"""
import argparse
import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

TEXT = ("The quick brown fox jumps over the lazy dog. Kestrel is an engine for language models, and this "
        "sentence is here so that the prompt has enough words for forty tokens or more: 12345 apples!")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, default=40)
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(TEXT)["input_ids"]
    assert len(ids) >= a.tokens, f"the text gives only {len(ids)} tokens"
    text = tok.decode(ids[: a.tokens], skip_special_tokens=True)
    ids = tok(text)["input_ids"]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).to(device).eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids], device=device)).logits[0].float().cpu().numpy()
    logits.astype("<f4").tofile(a.out)
    with open(a.out + ".json", "w") as f:
        json.dump({"text": text, "tokens": ids, "vocab": int(logits.shape[1])}, f)
    print(f"reference logits: {len(ids)} tokens x {logits.shape[1]} from {a.model} (transformers, float32)")


if __name__ == "__main__":
    main()
