#!/usr/bin/env python3
"""Writes tests/fixtures/<set>/top1.json: llama.cpp's tokenization and per-position top-1/top-5 of a GGUF.

For fixed prompts (chat-formatted for the default model, prose, code, numbers, French, German, Chinese, ...;
for Gemma 3 also a passage longer than its 512-token sliding window) it records the token ids llama.cpp
gives, and at EVERY position the argmax next-token id plus the top-5 ids and logits, so a mismatch in
Kestrel can be told apart from a near-tie. llama.cpp runs through the llama_cpp ctypes package of the
llama-cpp-python sdist on the libllama.so of build_llama_cpp.sh (run that first).
Usage: python3 scripts/reference/make_top1.py [--set smollm2|gemma3] [--model GGUF] [--out PATH]
  smollm2 (default): the default model, tests/fixtures/smollm2/top1.json
  gemma3: Gemma 3 270M Q4_K_M (docs/models.md says where it comes from), tests/fixtures/gemma3/top1.json
"""
import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

import numpy as np

from reference_paths import BUILD, CACHE, REPO, sha256

VERSION = os.environ.get("LLAMA_CPP_PYTHON_VERSION", "0.3.36")
SDIST = CACHE / f"src/llama_cpp_python-{VERSION}"
GGML_TYPE_F32 = 0
TOP_K = 5
SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


def chatml(user: str) -> str:
    # SmolLM2-Instruct's chat template, rendered for one system and one user turn plus the generation prompt.
    return (f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            "<|im_start|>assistant\n")


CHAT_PROMPTS = [
    ("chat_capital", chatml("What is the capital of France?"), True),
    ("chat_explain", chatml("Explain in two sentences why the sky is blue."), True),
]
TEXT_PROMPTS = [
    ("prose", "Once upon a time, in a small village at the edge of a great forest, there lived an old "
              "woodcutter and his three daughters. Every morning he", False),
    ("code_python", "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    if n < 2:\n"
                    "        return n\n    return", False),
    ("code_cpp", "#include <vector>\n\nint sum(const std::vector<int>& v) {\n    int total = 0;\n"
                 "    for (int x : v) {\n        total +=", False),
    ("numbers", "1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233. The year 2024 had 366 days; 3.14159 is pi "
                "and 1,000,000 is a million.", False),
    ("french", "La tour Eiffel, construite pour l'Exposition universelle de 1889, est aujourd'hui le "
               "monument le plus visité de", False),
    ("german", "Die Straße führt über die Brücke zum Bahnhof, wo der Zug nach München um 8:15 Uhr abfährt.",
     False),
    ("chinese", "北京是中华人民共和国的首都，也是全国的政治和文化中心。", False),
    ("mixed_whitespace", "Title:\tREADME\n\n  - item one\n  - item two  \n\n\n```json\n{\"key\": [1, 2, 3]}\n```\n"
                         "Émoji: 🙂 done.", False),
]


def long_passage() -> str:
    # About 900 tokens of Hamlet: past Gemma 3's 512-token window, so its sliding layers mask keys.
    text = (REPO / "tests/fixtures/text/hamlet_act1_2.txt").read_text()
    return text[2000:5600]


SETS = {
    "smollm2": {"model": "SmolLM2-135M-Instruct.Q4_1.gguf", "n_ctx": 512,
                "prompts": lambda: CHAT_PROMPTS + TEXT_PROMPTS},
    "gemma3": {"model": "gemma-3-270m-q4_k_m.gguf", "n_ctx": 2048,
               "prompts": lambda: TEXT_PROMPTS + [("long_hamlet", long_passage(), False)]},
}



def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", choices=sorted(SETS), default="smollm2")
    ap.add_argument("--model", type=pathlib.Path)
    ap.add_argument("--out", type=pathlib.Path)
    args = ap.parse_args()
    the_set = SETS[args.set]
    args.model = args.model or CACHE / the_set["model"]
    args.out = args.out or REPO / f"tests/fixtures/{args.set}/top1.json"
    if not (BUILD / "bin/libllama.so").exists():
        raise SystemExit("libllama.so missing: run scripts/reference/build_llama_cpp.sh first")
    if not args.model.exists():
        raise SystemExit(f"{args.model} missing: run scripts/setup.sh first")
    os.environ["LLAMA_CPP_LIB_PATH"] = str(BUILD / "bin")
    sys.path.insert(0, str(SDIST))
    import llama_cpp

    n_ctx = the_set["n_ctx"]
    # A float32 KV cache keeps llama.cpp's own rounding (f16 cache by default) out of the reference.
    llm = llama_cpp.Llama(model_path=str(args.model), n_ctx=n_ctx, n_batch=n_ctx, n_threads=2, logits_all=True,
                          type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
    version = subprocess.run([str(BUILD / "bin/llama-perplexity"), "--version"], capture_output=True,
                             text=True).stderr.strip().splitlines()[0]
    cases = []
    for name, text, parse_special in the_set["prompts"]():
        ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=parse_special)
        assert len(ids) < n_ctx
        llm.reset()
        llm.eval(ids)
        logits = np.array(llm.scores[: len(ids)], dtype=np.float32)
        order = np.argsort(-logits, axis=1, kind="stable")[:, :TOP_K]
        top_logits = np.take_along_axis(logits, order, axis=1)
        cases.append({
            "name": name,
            "text": text,
            "parse_special": parse_special,
            "token_ids": ids,
            "top1": order[:, 0].tolist(),
            "top5_ids": order.tolist(),
            "top5_logits": np.round(top_logits, 4).tolist(),
        })
        margin = float((top_logits[:, 0] - top_logits[:, 1]).min())
        print(f"{name}: {len(ids)} tokens, min top1-top2 margin {margin:.4f}")
    llm.close()
    result = {
        "model": args.model.name,
        "model_sha256": sha256(args.model),
        "llama_cpp": version,
        "llama_cpp_python": VERSION,
        "date": datetime.date.today().isoformat(),
        "settings": {
            "tokenize": "llama_tokenize(text, add_special=true, parse_special=<case.parse_special>)",
            "eval": "one batch with all tokens from position 0, logits for every position",
            "kv_cache": "f32", "threads": 2, "n_ctx": n_ctx, "backend": "CPU",
        },
        "layout": "top1[i] / top5_ids[i] / top5_logits[i] are the next-token prediction after token_ids[0..i]; "
                  "top5 sorted by logit, descending",
        "cases": cases,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
