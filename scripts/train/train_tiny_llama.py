#!/usr/bin/env python3
"""Trains a small full-precision Llama-architecture model from public-domain prose, on the GPU machine.

No full-precision decoder LLM can be had offline (../shared/research/offline-data.md: the default model is
Q4_1 and Gemma 3 is Q4_K_M, both already on a quantization grid, which would flatter any weight quantizer
measured on them). Issue 12's accuracy table (RTN vs GPTQ vs AWQ at 4/3/2 bits) therefore needs a real model
with weights that never saw a grid: this script trains one, seeded, in a few minutes on an H100.

Corpus: the text file given (`make_corpus.py` writes it: five Austen novels without Emma and Wikipedia
leads, 9.3 M characters), a byte-level BPE of 8192 entries trained on it; Emma stays out of the training text
so that perplexity on it (the KV-cache tables' text) measures a held-out novel.
Model: Llama (HF LlamaConfig) 8 layers, hidden 384, 6 heads of 64 with 2 KV heads, SwiGLU 1024, untied
embeddings, RoPE 10000, context 1024: ~19M parameters, written as bf16 safetensors in shards of < 15 MB (the
device tool brings back files of at most 16 MiB) with config.json, generation_config.json and tokenizer.json.

  CORPUS=corpus.txt.xz TRAIN_S=300 OUT=dir python3 scripts/train/train_tiny_llama.py
"""
import lzma
import math
import os
import pathlib
import time

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SEED = 0
VOCAB = 8192
T, B = 512, 64


def held_out_ppl(model, val):
    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        for i in range(0, len(val) - T - 1, T):
            x = val[i:i + T + 1][None]
            logits = model(input_ids=x[:, :-1]).logits.float()
            nll += torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum").item()
            count += T
    model.train()
    return math.exp(nll / max(count, 1))


def main():
    t0 = time.time()
    out = pathlib.Path(os.environ.get("OUT", "tiny-llama"))
    out.mkdir(parents=True, exist_ok=True)
    text = lzma.open(os.environ.get("CORPUS", "corpus.txt.xz"), "rt", encoding="utf-8").read()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text[i:i + 100000] for i in range(0, len(text), 100000)],
                            trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<|endoftext|>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    ids = torch.tensor(tok.encode(text).ids, dtype=torch.long)
    split = int(len(ids) * 0.99)
    train, val = ids[:split].cuda(), ids[split:].cuda()
    print(f"tokens {len(ids)}, tokenizer {time.time() - t0:.0f} s", flush=True)

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=384, intermediate_size=1024, num_hidden_layers=8,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=1024,
                      rope_theta=10000.0, rms_norm_eps=1e-5, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_id=0)
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(cfg).cuda()
    model.config._attn_implementation = "sdpa"
    print(f"params {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1.5e-3, betas=(0.9, 0.95), weight_decay=0.1)
    budget = float(os.environ.get("TRAIN_S", "300"))
    gen = torch.Generator(device="cuda").manual_seed(SEED)
    step, t1 = 0, time.time()
    best = (float("inf"), 0, None)
    while time.time() - t1 < budget:
        frac = (time.time() - t1) / budget
        lr = 1.5e-3 * min(1.0, step / 200) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
        for g in opt.param_groups:
            g["lr"] = lr
        ix = torch.randint(0, len(train) - T - 1, (B,), device="cuda", generator=gen)
        x = torch.stack([train[i:i + T] for i in ix])
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(input_ids=x, labels=x).loss  # HF shifts the labels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 100 == 0:
            # The corpus is small for the model (~2.3 M tokens): it overfits within a few epochs, so the
            # weights kept are those of the best held-out loss, not the last ones.
            ppl = held_out_ppl(model, val)
            if ppl < best[0]:
                best = (ppl, step, {k: v.detach().clone() for k, v in model.state_dict().items()})
            print(f"step {step} loss {loss.item():.3f} held-out PPL {ppl:.2f} {time.time() - t1:.0f} s", flush=True)

    model.load_state_dict(best[2])
    print(f"steps {step}, kept step {best[1]}: held-out PPL {best[0]:.2f}", flush=True)
    model = model.to(torch.bfloat16)
    model.save_pretrained(out, safe_serialization=True, max_shard_size="14MB")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    fast.save_pretrained(out)
    for extra in ("tokenizer_config.json", "special_tokens_map.json"):
        (out / extra).unlink(missing_ok=True)  # tokenizer.json carries everything a loader needs
    print(sorted(p.name for p in out.iterdir()))


if __name__ == "__main__":
    main()
