#!/usr/bin/env python3
"""Second oracle for the default model: Hugging Face transformers loading the same GGUF (it dequantizes
every tensor to float32, so this is the exact math of the quantized weights, with no activation
quantization). Reads the prompts and llama.cpp's token ids from tests/fixtures/smollm2/top1.json and
writes tests/fixtures/smollm2/top1_transformers.json in the same layout (top1, top5_ids, top5_logits).

Needs: pip install torch transformers gguf (see scripts/reference/requirements.txt).
Usage: python3 scripts/reference/make_smollm2_top1_transformers.py [--model PATH]
"""
import argparse
import datetime
import hashlib
import json
import os
import pathlib

import torch
import transformers
from transformers import AutoModelForCausalLM

ROOT = pathlib.Path(__file__).resolve().parents[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = pathlib.Path(os.environ.get("KESTREL_CACHE", pathlib.Path.home() / ".cache/kestrel"))
    ap.add_argument("--model", type=pathlib.Path, default=default / "SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("--inp", type=pathlib.Path, default=ROOT / "tests/fixtures/smollm2/top1.json")
    ap.add_argument("--out", type=pathlib.Path, default=ROOT / "tests/fixtures/smollm2/top1_transformers.json")
    args = ap.parse_args()

    ref = json.loads(args.inp.read_text())
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(args.model.parent), gguf_file=args.model.name,
                                                 torch_dtype=torch.float32)
    model.eval()
    cases = []
    with torch.no_grad():
        for c in ref["cases"]:
            ids = torch.tensor([c["token_ids"]])
            logits = model(ids).logits[0].float()
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
        "model_sha256": hashlib.sha256(args.model.read_bytes()).hexdigest(),
        "oracle": f"transformers {transformers.__version__}, torch {torch.__version__}, GGUF dequantized to float32",
        "date": datetime.date.today().isoformat(),
        "layout": ref.get("layout"),
        "cases": cases,
    }
    args.out.write_text(json.dumps(out) + "\n")
    print(f"wrote {args.out} ({sum(len(c['top1']) for c in cases)} positions)")


if __name__ == "__main__":
    main()
