"""The multimodal sentiment classifier (docs/classifier.md) in PyTorch, in three variants:

  text:  MiniLM token features [L, 384] -> BiLSTM (1 layer) -> mean over tokens -> MLP -> classes
  image: image [3, 32, 32] -> CNN (conv3x3-BN-ReLU-maxpool2, twice) -> [C2, 8, 8]
         -> conv3x3-BN-ReLU -> CBAM -> global average pool -> linear -> classes
  fused: the image CNN's map with the text feature tiled over its 8x8 grid and concatenated as channels
         ([C2 + 2 * lstm_hidden, 8, 8]), then the image head (conv3x3-BN-ReLU -> CBAM -> pool -> linear)

CBAM (Woo et al., 2018) is channel attention then spatial attention: sigmoid(MLP(avgpool) + MLP(maxpool))
scales the channels; sigmoid(conv7x7([mean over channels, max over channels])) scales the pixels.
Tensor names are the state_dict's (export.py writes them); Kestrel runs the fused variant and folds each
BatchNorm into its conv at load.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn


@dataclasses.dataclass
class Config:
    variant: str = "fused"  # text | image | fused
    text_dim: int = 384
    lstm_hidden: int = 32
    image_size: int = 32
    image_channels: tuple[int, int] = (16, 32)
    fuse_channels: int = 64
    cbam_reduction: int = 4
    spatial_kernel: int = 7
    n_classes: int = 3
    max_tokens: int = 128
    bn_eps: float = 1e-5


class TextBranch(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.lstm = nn.LSTM(c.text_dim, c.lstm_hidden, num_layers=1, batch_first=True, bidirectional=True)

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """feats [B, L, text_dim] right-padded; lengths [B] -> the mean of the BiLSTM's outputs over each
        text's tokens, [B, 2 * lstm_hidden] (forward direction first)."""
        packed = nn.utils.rnn.pack_padded_sequence(feats, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=feats.shape[1])
        return out.sum(1) / lengths[:, None].to(out.dtype)


def conv_bn(cin: int, cout: int, eps: float) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout, eps=eps), nn.ReLU())


class ImageBranch(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        c1, c2 = c.image_channels
        self.block1 = conv_bn(3, c1, c.bn_eps)
        self.block2 = conv_bn(c1, c2, c.bn_eps)
        self.pool = nn.MaxPool2d(2)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.pool(self.block2(self.pool(self.block1(img))))


class CBAM(nn.Module):
    def __init__(self, channels: int, reduction: int, kernel: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(channels, channels // reduction), nn.ReLU(),
                                 nn.Linear(channels // reduction, channels))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ca = torch.sigmoid(self.mlp(x.mean((2, 3))) + self.mlp(x.amax((2, 3))))
        x = x * ca[:, :, None, None]
        sa = torch.sigmoid(self.spatial(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return x * sa


class Classifier(nn.Module):
    def __init__(self, c: Config):
        super().__init__()
        self.c = c
        if c.variant in ("text", "fused"):
            self.text = TextBranch(c)
        if c.variant in ("image", "fused"):
            self.image = ImageBranch(c)
            cin = c.image_channels[1] + (2 * c.lstm_hidden if c.variant == "fused" else 0)
            self.fuse = conv_bn(cin, c.fuse_channels, c.bn_eps)
            self.cbam = CBAM(c.fuse_channels, c.cbam_reduction, c.spatial_kernel)
            self.dropout = nn.Dropout(0.2)
            self.head = nn.Linear(c.fuse_channels, c.n_classes)
        else:
            self.head = nn.Sequential(nn.Linear(2 * c.lstm_hidden, 64), nn.ReLU(), nn.Dropout(0.2),
                                      nn.Linear(64, c.n_classes))

    def forward(self, feats: torch.Tensor | None, lengths: torch.Tensor | None,
                img: torch.Tensor | None) -> torch.Tensor:
        """img: f32 [B, 3, H, W] with values in [0, 1] (uint8 / 255). Returns logits [B, n_classes]."""
        if self.c.variant == "text":
            return self.head(self.text(feats, lengths))
        m = self.image(img)
        if self.c.variant == "fused":
            t = self.text(feats, lengths)
            m = torch.cat([m, t[:, :, None, None].expand(-1, -1, m.shape[2], m.shape[3])], 1)
        m = self.cbam(self.fuse(m))
        return self.head(self.dropout(m.mean((2, 3))))
