#!/usr/bin/env python3
"""Second oracle for a GGUF (the default model, Gemma 3 270M): Hugging Face transformers loading the same
file (it dequantizes every tensor to float32, so this is the exact math of the quantized weights, with no
activation quantization). Reads the prompts and llama.cpp's token ids from tests/fixtures/<set>/top1.json
(make_top1.py) and writes tests/fixtures/<set>/top1_transformers.json in the same layout (top1, top5_ids,
top5_logits). Runs on a GPU when there is one (float32 either way).

Needs: pip install torch transformers gguf (see scripts/reference/requirements.txt).
Usage: python3 scripts/reference/make_top1_transformers.py [--set smollm2|gemma3] [--model PATH] [--out PATH]
"""
import argparse
import datetime
import json
import pathlib

import torch
import transformers
from transformers import AutoModelForCausalLM

from reference_paths import CACHE, REPO, sha256


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    models = {"smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf", "gemma3": "gemma-3-270m-q4_k_m.gguf"}
    ap.add_argument("--set", choices=sorted(models), default="smollm2")
    ap.add_argument("--model", type=pathlib.Path)
    ap.add_argument("--inp", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    args.model = args.model or CACHE / models[args.set]
    args.inp = args.inp or REPO / f"tests/fixtures/{args.set}/top1.json"
    args.out = args.out or REPO / f"tests/fixtures/{args.set}/top1_transformers.json"

    ref = json.loads(args.inp.read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(args.model.parent), gguf_file=args.model.name,
                                                 dtype=torch.float32)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    cases = []
    with torch.no_grad():
        for c in ref["cases"]:
            ids = torch.tensor([c["token_ids"]], device=device)
            logits = model(ids).logits[0].float().cpu()
            top5 = torch.topk(logits, 5, dim=-1)
            cases.append({
                "name": c["name"], "text": c["text"], "parse_special": c["parse_special"],
                "token_ids": c["token_ids"],
                "top1": top5.indices[:, 0].tolist(),
                "top5_ids": top5.indices.tolist(),
                "top5_logits": [[round(v, 4) for v in row] for row in top5.values.tolist()],
            })
    out = {
        "model": args.model.name,
        "model_sha256": sha256(args.model),
        "oracle": f"transformers {transformers.__version__}, torch {torch.__version__}, GGUF dequantized to float32",
        "date": datetime.date.today().isoformat(),
        "layout": ref.get("layout"),
        "cases": cases,
    }
    args.out.write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out} ({sum(len(c['top1']) for c in cases)} positions)")


if __name__ == "__main__":
    main()
