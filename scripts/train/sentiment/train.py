#!/usr/bin/env python3
"""Trains the sentiment classifier's three variants (model.py) on make_data.py's set and exports the fused
one for Kestrel (docs/classifier.md).

  python3 scripts/train/sentiment/train.py --data DATA_DIR --out OUT_DIR [--device cuda]
      [--train-limit N --val-limit N --epochs E --image-epochs E]   (limits: a seeded subset, for CPU runs)

The fused model starts from the text and image models' branches (text.*, image.*): trained from scratch on
a few thousand pairs, its text branch memorises the training texts before its image branch finds the
faces' mouths.

Writes to OUT_DIR:
  model/config.json, model/model.safetensors   the fused classifier (`kestrel classify --model OUT_DIR/model`)
  metrics.json       accuracy and macro-F1 on the test split of text-only, image-only and fused models
                     (all trained on the pair label), and of a text-only model trained on the human text
                     label, scored on each real human-rated set's test tenth
  golden/            reference inputs and logits for tests/model/classifier_golden_test.cpp:
                     golden.json (texts, token ids, logits, shapes), golden_features.f32 (the texts'
                     MiniLM token features, stacked), image_<i>.ppm
MiniLM's token features are computed once (minilm.py) and cached in OUT_DIR/features.pt.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

import numpy as np
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import minilm  # noqa: E402
import synth_images  # noqa: E402
from model import Classifier, Config  # noqa: E402

CLASSES = ["negative", "neutral", "positive"]
SEED = 20


def macro_f1(y: np.ndarray, p: np.ndarray, n: int = 3) -> float:
    f1 = []
    for c in range(n):
        tp, fp, fn = np.sum((p == c) & (y == c)), np.sum((p == c) & (y != c)), np.sum((p != c) & (y == c))
        f1.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return float(np.mean(f1))


def scores(y: np.ndarray, p: np.ndarray) -> dict:
    return {"n": int(len(y)), "accuracy": round(float(np.mean(y == p)), 4), "macro_f1": round(macro_f1(y, p), 4)}


class Data:
    def __init__(self, rows: list[dict], feats: list[torch.Tensor], images: np.ndarray):
        self.rows, self.feats = rows, feats
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # NCHW uint8

    def batch(self, idx: list[int], device: str):
        f = [self.feats[i].float() for i in idx]
        lengths = torch.tensor([len(x) for x in f])
        feats = torch.nn.utils.rnn.pad_sequence(f, batch_first=True).to(device)
        img = (self.images[idx].float() / 255.0).to(device)
        return feats, lengths.to(device), img


def predict(model: Classifier, data: Data, idx: list[int], device: str) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(idx), 256):
            out.append(model(*data.batch(idx[s:s + 256], device)).argmax(1).cpu())
    return torch.cat(out).numpy()


def train_variant(cfg: Config, data: Data, train: list[int], val: list[int], target: str, args, epochs: int,
                  init: list[Classifier] = ()) -> Classifier:
    torch.manual_seed(SEED)
    model = Classifier(cfg).to(args.device)
    for m in init:  # branches trained alone (text.*, image.*): the fused head then learns to combine them
        branch = {k: v for k, v in m.state_dict().items() if k.startswith(("text.", "image."))}
        model.load_state_dict(branch, strict=False)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    y = torch.tensor([r[target] for r in data.rows])
    y_val = y[val].numpy()
    rng = np.random.default_rng(SEED)
    best, best_state = -1.0, None
    for epoch in range(epochs):
        model.train()
        t0, total = time.time(), 0.0
        order = rng.permutation(train)
        for s in range(0, len(order), args.batch):
            idx = order[s:s + args.batch].tolist()
            loss = torch.nn.functional.cross_entropy(model(*data.batch(idx, args.device)), y[idx].to(args.device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        acc = float(np.mean(predict(model, data, val, args.device) == y_val))
        print(f"  {cfg.variant}/{target} epoch {epoch}: loss {total / len(order):.4f} val acc {acc:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)
        if acc > best:
            best, best_state = acc, {k: v.detach().clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    model.eval()
    return model


def export(model: Classifier, out: pathlib.Path, encoder: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("num_batches_tracked")}
    save_file(tensors, str(out / "model.safetensors"))
    cfg = dataclasses.asdict(model.c)
    cfg["image_channels"] = list(cfg["image_channels"])
    cfg.update({"architecture": "kestrel_sentiment_cbam", "classes": CLASSES, "encoder": encoder,
                "image_scale": 1.0 / 255.0})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def write_golden(model: Classifier, data: Data, test: list[int], feats: minilm.TokenFeatures, out: pathlib.Path,
                 device: str) -> None:
    """Two test pairs of each pair label (the first in file order), with their images as PPM."""
    out.mkdir(parents=True, exist_ok=True)
    picked = []
    for c in range(3):
        picked += [i for i in test if data.rows[i]["label"] == c][:2]
    texts = [data.rows[i]["text"] for i in picked]
    ids = feats.token_ids(texts)
    f, lengths, img = data.batch(picked, device)
    with torch.no_grad():
        logits = model.cpu()(f.cpu(), lengths.cpu(), img.cpu())
    stacked = torch.cat([data.feats[i].float() for i in picked]).numpy().astype(np.float32)
    stacked.tofile(out / "golden_features.f32")
    for k, i in enumerate(picked):
        synth_images.write_ppm(out / f"image_{k}.ppm", data.images[i].permute(1, 2, 0).numpy())
    (out / "golden.json").write_text(json.dumps({
        "texts": texts, "token_ids": ids, "images": [f"image_{k}.ppm" for k in range(len(picked))],
        "labels": [data.rows[i]["label"] for i in picked], "hidden": int(stacked.shape[1]),
        "logits": [[float(v) for v in row] for row in logits.numpy()], "torch": torch.__version__,
    }, indent=1, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=pathlib.Path, required=True)
    ap.add_argument("--out", type=pathlib.Path, required=True)
    cache = pathlib.Path(os.environ.get("KESTREL_CACHE", pathlib.Path.home() / ".cache" / "kestrel"))
    ap.add_argument("--encoder", type=pathlib.Path, default=cache / "models" / "all-MiniLM-L6-v2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--train-limit", type=int)
    ap.add_argument("--val-limit", type=int)
    ap.add_argument("--epochs", type=int, default=10, help="for the text and fused models")
    ap.add_argument("--image-epochs", type=int, default=20,
                    help="for the image model, which takes longer to find the mouth's shape")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = [json.loads(line) for line in open(args.data / "texts.jsonl", encoding="utf-8")]
    images = np.load(args.data / "images.npy")
    split = {s: [i for i, r in enumerate(rows) if r["split"] == s] for s in ("train", "val", "test")}
    rng = np.random.default_rng(SEED)
    for s, limit in (("train", args.train_limit), ("val", args.val_limit)):
        if limit and limit < len(split[s]):
            split[s] = sorted(rng.choice(split[s], limit, replace=False).tolist())
    used = sorted(set(split["train"]) | set(split["val"]) | set(split["test"]))

    cfg = Config()
    tf = minilm.TokenFeatures(args.encoder, cfg.max_tokens, args.device)
    cache_file = args.out / "features.pt"
    cached = torch.load(cache_file) if cache_file.exists() else {}
    missing = [i for i in used if i not in cached]
    if missing:
        t0 = time.time()
        print(f"train: MiniLM features of {len(missing)} texts", flush=True)
        for s in range(0, len(missing), 1024):
            part = missing[s:s + 1024]
            for i, f in zip(part, tf([rows[i]["text"] for i in part])):
                cached[i] = f.half()
            print(f"  {s + len(part)}/{len(missing)} ({time.time() - t0:.0f}s)", flush=True)
        torch.save(cached, cache_file)
    feats = [cached.get(i) for i in range(len(rows))]
    data = Data(rows, feats, images)

    metrics = {"device": args.device, "torch": torch.__version__, "epochs": args.epochs,
               "image_epochs": args.image_epochs,
               "n_train": len(split["train"]), "n_val": len(split["val"]), "n_test": len(split["test"]),
               "pair_label": {}, "text_sentiment_by_set": {}}
    y_test = np.array([rows[i]["label"] for i in split["test"]])
    models = {}
    for variant in ("text", "image", "fused"):
        epochs = args.image_epochs if variant == "image" else args.epochs
        init = [models["text"], models["image"]] if variant == "fused" else []
        models[variant] = train_variant(Config(variant=variant), data, split["train"], split["val"], "label", args,
                                        epochs, init)
        metrics["pair_label"][variant] = scores(y_test, predict(models[variant], data, split["test"], args.device))
        print(f"train: {variant} on the pair label: {metrics['pair_label'][variant]}", flush=True)

    sentiment = train_variant(Config(variant="text"), data, split["train"], split["val"], "text_label", args,
                              args.epochs)
    for name in dict.fromkeys(r["set"] for r in rows):
        idx = [i for i in split["test"] if rows[i]["set"] == name]
        y = np.array([rows[i]["text_label"] for i in idx])
        metrics["text_sentiment_by_set"][name] = scores(y, predict(sentiment, data, idx, args.device))
    y = np.array([rows[i]["text_label"] for i in split["test"]])
    metrics["text_sentiment_by_set"]["all"] = scores(y, predict(sentiment, data, split["test"], args.device))
    print(f"train: text sentiment on the human labels: {metrics['text_sentiment_by_set']}", flush=True)

    export(models["fused"], args.out / "model", args.encoder.name)
    write_golden(models["fused"], data, split["test"], tf, args.out / "golden", args.device)
    (args.out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
