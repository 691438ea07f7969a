"""all-MiniLM-L6-v2's token features in plain PyTorch (BertModel's post-LN forward, read straight from
model.safetensors), so the training needs neither network nor transformers: the same directory Kestrel's
encoder loads ($KESTREL_CACHE/models/all-MiniLM-L6-v2, scripts/fetch_test_vocabs.sh). Tokenized with the
`tokenizers` library from the directory's tokenizer.json, unpadded and truncated to max_tokens as
`kestrel classify` does (EncoderInputOptions: pad off, max_length)."""
from __future__ import annotations

import json
import math
import pathlib

import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer


class MiniLM(torch.nn.Module):
    def __init__(self, model_dir: pathlib.Path):
        super().__init__()
        cfg = json.loads((model_dir / "config.json").read_text())
        self.heads, self.eps, self.layers = cfg["num_attention_heads"], cfg["layer_norm_eps"], cfg["num_hidden_layers"]
        self.w = {k: v.float() for k, v in load_file(str(model_dir / "model.safetensors")).items()}

    def _ln(self, x, name):
        return torch.nn.functional.layer_norm(x, x.shape[-1:], self.w[name + ".weight"], self.w[name + ".bias"], self.eps)

    def _dense(self, x, name):
        return torch.nn.functional.linear(x, self.w[name + ".weight"], self.w[name + ".bias"])

    @torch.no_grad()
    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: [B, L] (right-padded); returns the last layer's hidden states [B, L, hidden]."""
        w = self.w
        B, L = ids.shape
        x = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:L]
             + w["embeddings.token_type_embeddings.weight"][0])
        x = self._ln(x, "embeddings.LayerNorm")
        bias = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            def heads(t):
                return t.view(B, L, self.heads, -1).transpose(1, 2)
            q, k, v = (heads(self._dense(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]) + bias, dim=-1)
            a = (att @ v).transpose(1, 2).reshape(B, L, -1)
            x = self._ln(self._dense(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            h = torch.nn.functional.gelu(self._dense(x, p + "intermediate.dense"))
            x = self._ln(self._dense(h, p + "output.dense") + x, p + "output.LayerNorm")
        return x


class TokenFeatures:
    """Texts -> per-token MiniLM features (a list of f32 [len, hidden] tensors)."""

    def __init__(self, model_dir: pathlib.Path, max_tokens: int, device: str = "cpu"):
        self.tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tok.no_padding()
        self.tok.enable_truncation(max_tokens)
        self.model = MiniLM(model_dir)
        self.model.w = {k: v.to(device) for k, v in self.model.w.items()}
        self.device = device

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts)]

    def __call__(self, texts: list[str], batch: int = 64) -> list[torch.Tensor]:
        ids = self.token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # similar lengths batch with little padding
        out: list[torch.Tensor] = [None] * len(ids)  # type: ignore[list-item]
        for s in range(0, len(order), batch):
            idx = order[s:s + batch]
            L = max(len(ids[i]) for i in idx)
            t = torch.zeros(len(idx), L, dtype=torch.long)
            m = torch.zeros(len(idx), L, dtype=torch.long)
            for r, i in enumerate(idx):
                t[r, :len(ids[i])] = torch.tensor(ids[i])
                m[r, :len(ids[i])] = 1
            h = self.model(t.to(self.device), m.to(self.device)).cpu()
            for r, i in enumerate(idx):
                out[i] = h[r, :len(ids[i])].clone()
        return out
