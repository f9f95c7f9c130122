"""Vision Transformers with timm's ``VisionTransformer`` architecture and parameter names.

The model is timm's default ViT (class token, learned absolute position embeddings, pre-norm
blocks with LayerNorm eps 1e-6, exact GELU, no layer scale, token pooling, final ``norm``, then
``head``), so a timm checkpoint of the same config loads strictly and gives the same logits.
Parameter names: ``cls_token``, ``pos_embed``, ``patch_embed.proj``, ``blocks.{i}.norm1``,
``.attn.qkv``, ``.attn.proj``, ``.norm2``, ``.mlp.fc1``, ``.mlp.fc2``, ``norm``, ``head``.

``img_size`` (default 64, the paper's) fixes the position-embedding grid; an input of another
size (any multiple of the patch size) gets the grid resampled bicubically, as timm does for
``dynamic_img_size``. So a checkpoint trained at 224 loads with ``img_size=224`` and scores 64x64
images.

Taps, one per block (the block's output, before the final ``norm``):
  * ``taps="cls"`` (default, the paper's choice): the class token, ``[N, C, 1, 1]``. A vector as a
    1x1 map lets every distance apply unchanged: ``spatial`` on a 1x1 map is the squared
    distance of the unit-normalised vectors, ``meanpool`` the same divided by C, ``style`` that
    of their outer products;
  * ``taps="patch"``: the patch tokens as a map ``[N, C, H/p, W/p]`` (row-major, as the patches).
"""

from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import TapTrunk, head_device

TAP_KINDS = ("cls", "patch")


class Attention(nn.Module):
    """Multi-head self-attention (timm names ``qkv``, ``proj``): ``[N, T, C]`` -> ``[N, T, C]``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, t, c = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(n, t, c))


class Mlp(nn.Module):
    """``fc1`` -> GELU -> ``fc2``: ``[N, T, C]`` -> ``[N, T, C]``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``; ``[N, T, C]``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution (timm name ``proj``): ``[N, 3, H, W]`` -> ``[N, C, H/p, W/p]``."""

    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class VisionTransformer(TapTrunk):
    """timm's ViT with per-block taps.

    patch_size: side of the square patches (must divide the input sides). embed_dim: width C.
    depth: number of blocks (= number of taps). num_heads: attention heads (divides embed_dim).
    mlp_ratio: MLP hidden width / C. img_size: side the position embeddings are laid out for.
    taps: ``"cls"`` or ``"patch"`` (module docstring). num_classes: size of ``head``.
    head: False builds ``head`` on the meta device (see registry.load_trunk).
    Random init as timm's: truncated-normal (std .02) linears and position embeddings, zero
    biases, a near-zero class token, PyTorch-default patch convolution.
    """

    HEAD = "head"

    def __init__(
        self,
        patch_size: int = 8,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        img_size: int = 64,
        taps: str = "cls",
        num_classes: int = 1000,
        head: bool = True,
    ):
        super().__init__()
        if taps not in TAP_KINDS:
            raise ValueError(f"ViT taps={taps!r} is not one of {TAP_KINDS}")
        if depth < 1:
            raise ValueError(f"ViT depth must be at least 1 (one tap per block), got {depth}")
        if embed_dim % num_heads:
            raise ValueError(f"ViT embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        if img_size % patch_size:
            raise ValueError(f"ViT img_size {img_size} is not a multiple of patch_size {patch_size}")
        self.patch_size = patch_size
        self.grid = img_size // patch_size
        self.patch_taps = taps == "patch"
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, embed_dim))
        self.blocks = nn.Sequential(*[Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth)])
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        _init_linears(self.blocks)
        with head_device(head):
            self.head = nn.Linear(embed_dim, num_classes)
        _init_linears(self.head)
        self._finish([embed_dim] * depth, head, input_multiple=patch_size)

    def _tokens(self, x: Tensor) -> Tuple[Tensor, int, int]:
        """Images ``[N, 3, H, W]`` -> tokens ``[N, 1 + h*w, C]`` (class token first, positions added), h, w."""
        p = self.input_multiple
        if x.shape[-2] % p != 0 or x.shape[-1] % p != 0:
            raise ValueError(
                "ViT input {}x{} is not a multiple of the patch size {}: resize or crop the images".format(
                    x.shape[-2], x.shape[-1], p
                )
            )
        x = self.patch_embed(x)
        h, w = x.shape[-2], x.shape[-1]
        x = x.flatten(2).transpose(1, 2)
        pos = self.pos_embed
        # Resampled at every size, the native grid included: there it is the identity bit for bit
        # (bicubic weights 1, 0, 0 at integer offsets), and one code path lets torch.export trace a
        # program for every image size instead of specialising to the size it was traced at.
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2).float()
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        pos = torch.cat([pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, h * w, -1).to(pos.dtype)], dim=1)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + pos, h, w

    @torch.jit.export
    def forward_taps(self, x: Tensor) -> List[Tensor]:
        """x: ``[N, 3, H, W]`` preprocessed images -> one tap per block: ``[N, C, 1, 1]`` (cls) or ``[N, C, H/p, W/p]``."""
        x, h, w = self._tokens(x)
        taps: List[Tensor] = []
        for block in self.blocks:
            x = block(x)
            if self.patch_taps:
                taps.append(x[:, 1:].transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w))
            else:
                # A copy always (not .contiguous(), which copies only when batch > 1): one code path for
                # every batch size, so torch.export need not specialise batch 1.
                taps.append(x[:, 0, :, None, None].clone(memory_format=torch.contiguous_format))
        return taps

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[N, 3, H, W]`` preprocessed images -> logits ``[N, num_classes]`` (class token -> norm -> head)."""
        self._require_head()
        x, _, _ = self._tokens(x)
        return self.head(self.norm(self.blocks(x))[:, 0])

    def tap_shapes(self, height: int, width: int) -> List[Tuple[int, int, int]]:
        """``(C, H, W)`` of every tap; a side below the patch size has no patch (0)."""
        h, w = height // self.patch_size, width // self.patch_size
        if not self.patch_taps:
            h = w = 1 if min(h, w) >= 1 else 0
        return [(self.tap_channels[0], h, w)] * len(self.tap_channels)


def _init_linears(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
