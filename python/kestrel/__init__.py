"""Kestrel's Python API: load a model, generate (batched), stream, chat, tokenize.

    import kestrel
    llm = kestrel.LLM()                                   # the default model (scripts/setup.sh fetches it)
    outs = llm.generate(["The capital of France is", "1, 2, 3,"], kestrel.SamplingParams(temperature=0, max_tokens=8))
    print(outs[0].text)
    for piece in llm.stream("Once upon a time", kestrel.SamplingParams(max_tokens=32)):
        print(piece, end="", flush=True)
    print(llm.chat([{"role": "user", "content": "Hi!"}]).text)

SamplingParams fields left as None take the model's defaults (its generation_config.json, else
llama.cpp's), the same policy as `kestrel run`, `chat` and `serve`. The bindings run on the CPU;
`LLM(kv_type="int8")` picks the KV-cache format as `--kv-type` does (docs/kv_cache.md).
"""
from ._kestrel import LLM, Completion, KestrelError, SamplingParams, Stream

__all__ = ["LLM", "Completion", "KestrelError", "SamplingParams", "Stream"]
