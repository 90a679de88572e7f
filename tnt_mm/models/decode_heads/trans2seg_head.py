"""Trans2Seg decode head for mmsegmentation.

Paper: "Segmenting Transparent Objects in the Wild with Transformer", Xie et al., IJCAI 2021
(https://arxiv.org/abs/2101.08461). Official code: https://github.com/xieenze/Trans2Seg
(``segmentron/models/trans2seg.py``, ``segmentron/modules/transformer.py``). The TNT paper uses
this head for its ADE20K result (TNT-S: 43.6 mIoU).

The stride-16 features go through a transformer encoder; a decoder whose queries are learnable
class embeddings produces, in every layer, attention logits of each class over the pixels
(class x heads x HW). A small convolutional head turns the last layer's maps into one mask per
class: it concatenates them with the encoder features, applies separable convolutions,
upsamples to stride 4, adds the projected stride-4 features and predicts one channel per class.

What differs from the official code, and why:

- any class count and any input size: the official decoder has an MLP across the HW positions
  of every attention map (tying the head to 512x512 inputs, 6.3M parameters a layer at that
  size) and a fixed 12-class embedding. Here the maps are used as the attention produces them,
  and the position embedding is resampled to the feature grid at every forward;
- the last decoder layer only computes its attention logits: its query and feature updates feed
  nothing (the official code computes and drops them), and unused parameters break DDP;
- no class token in the encoder (its output is never read), and the decoder's residuals add
  the update once (the official ``x + drop_path(x)`` doubles the input instead).

Shapes used in the comments: B images, K classes (queries), C the head width, h heads,
(H, W) the stride-16 grid with L = H * W tokens, (H4, W4) the stride-4 grid.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmcv.cnn import ConvModule, DepthwiseSeparableConvModule
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from torchvision.ops import StochasticDepth

from tnt_mm.registry import MODELS
from ..layers import Attention, LayerNorm, Mlp, init_transformer_weights, resample_pos_embed


class ClassAttention(nn.Module):
    """Cross-attention of class queries over the pixel tokens that returns its logits too.

    The logits are the decoder's product (one map per class and head), so the scores are formed
    explicitly instead of through SDPA.

    Args:
        dim (int): token width.
        num_heads (int): attention heads; must divide ``dim``.
        qkv_bias (bool): bias in the query and key/value Linears. Defaults to False.
        with_output (bool): also attend to the values and project them. Off for the last
            decoder layer, whose only product is the logits. Defaults to True.
        attn_drop (float): dropout on the attention weights. Defaults to 0.
        proj_drop (float): dropout after the output projection. Defaults to 0.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 qkv_bias: bool = False,
                 with_output: bool = True,
                 attn_drop: float = 0.,
                 proj_drop: float = 0.) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.with_output = with_output
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, dim * (2 if with_output else 1), bias=qkv_bias)
        if with_output:
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, query: torch.Tensor,
                feat: torch.Tensor) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """query (B, K, C), feat (B, L, C) -> (output (B, K, C) or None, logits (B, h, K, L))."""
        batch, num_queries, dim = query.shape
        tokens = feat.shape[1]
        head_dim = dim // self.num_heads
        # (B, K, C) -> (B, h, K, C/h)
        q = self.q(query).reshape(batch, num_queries, self.num_heads, head_dim).transpose(1, 2)
        # (B, L, nC) -> (n, B, h, L, C/h), n = 2 (keys and values) or 1 (keys only)
        kv = self.kv(feat).reshape(batch, tokens, -1, self.num_heads,
                                   head_dim).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ kv[0].transpose(-2, -1)  # (B, h, K, L)
        if not self.with_output:
            return None, logits
        out = self.attn_drop(logits.softmax(dim=-1)) @ kv[1]  # (B, h, K, C/h)
        # (B, h, K, C/h) -> (B, K, C)
        out = out.transpose(1, 2).reshape(batch, num_queries, dim)
        return self.proj_drop(self.proj(out)), logits


class EncoderLayer(nn.Module):
    """Pre-norm transformer layer: self-attention, then MLP, each residual.

    Args:
        dim (int): token width.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden width over ``dim``. Defaults to 3.
        qkv_bias (bool): bias in the attention projections. Defaults to False.
        drop (float): dropout after projections. Defaults to 0.
        attn_drop (float): dropout on attention weights. Defaults to 0.
        drop_path (float): stochastic depth rate. Defaults to 0.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 3.,
                 qkv_bias: bool = False,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim)
        # the shared attention layer (SDPA), same parameter count as one qkv Linear
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.drop_path = StochasticDepth(drop_path, 'row')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class DecoderLayer(nn.Module):
    """Class queries attend to the pixel tokens; both streams are then refined by MLPs.

    Args:
        dim (int): token width.
        num_heads (int): attention heads.
        mlp_ratio (float): MLP hidden width over ``dim``. Defaults to 3.
        qkv_bias (bool): bias in the attention projections. Defaults to False.
        is_last (bool): the last layer computes only its attention logits (its updated query
            and features would feed nothing). Defaults to False.
        drop (float): dropout after projections. Defaults to 0.
        attn_drop (float): dropout on attention weights. Defaults to 0.
        drop_path (float): stochastic depth rate. Defaults to 0.
    """

    def __init__(self,
                 dim: int,
                 num_heads: int,
                 mlp_ratio: float = 3.,
                 qkv_bias: bool = False,
                 is_last: bool = False,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.) -> None:
        super().__init__()
        self.is_last = is_last
        self.norm_query = LayerNorm(dim)
        self.norm_feat = LayerNorm(dim)
        self.attn = ClassAttention(dim, num_heads, qkv_bias, with_output=not is_last,
                                   attn_drop=attn_drop, proj_drop=drop)
        if not is_last:
            self.norm_query_mlp = LayerNorm(dim)
            self.mlp_query = Mlp(dim, int(dim * mlp_ratio), drop=drop)
            self.norm_feat_mlp = LayerNorm(dim)
            self.mlp_feat = Mlp(dim, int(dim * mlp_ratio), drop=drop)
            self.drop_path = StochasticDepth(drop_path, 'row')

    def forward(self, query: torch.Tensor, feat: torch.Tensor
                ) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], torch.Tensor]:
        """query (B, K, C), feat (B, L, C) -> (query, feat, logits (B, h, K, L)); the last
        layer returns None for the query and features."""
        out, logits = self.attn(self.norm_query(query), self.norm_feat(feat))
        if self.is_last:
            return None, None, logits
        query = query + self.drop_path(out)
        query = query + self.drop_path(self.mlp_query(self.norm_query_mlp(query)))
        feat = feat + self.drop_path(self.mlp_feat(self.norm_feat_mlp(feat)))
        return query, feat, logits


def repeat_per_class(x: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * K, C, H, W): the same map for each of the K class masks."""
    return x.unsqueeze(1).expand(-1, num_classes, -1, -1, -1).flatten(0, 1)


@MODELS.register_module()
class Trans2SegHead(BaseDecodeHead):
    """Trans2Seg: a transformer encoder-decoder head with class queries (mmseg decode head).

    It reads two backbone levels (``input_transform='multiple_select'``): the stride-4 map for
    detail and the stride-16 map for the transformer, in that order, e.g. the TNT pyramid with
    ``out_indices=(2, 11), pyramid_scales=(4.0, 1.0)`` and ``in_index=(0, 1)``. The output has
    one channel per class (``out_channels`` queries) at stride 4. The defaults are the paper's
    "medium" setting.

    Args:
        in_channels (Sequence[int]): channels of the (stride-4, stride-16) inputs.
        channels (int): width of the convolutional head. Defaults to 64.
        embed_dims (int): width of the transformer. Defaults to 256.
        num_layers (int): encoder layers, and as many decoder layers. Defaults to 4.
        num_heads (int): attention heads; must divide ``embed_dims``. Defaults to 8.
        mlp_ratio (float): MLP hidden width over ``embed_dims``. Defaults to 3.
        qkv_bias (bool): bias in the attention projections. Defaults to False.
        pos_grid (Sequence[int]): the grid the position embedding is learnt on; it is resampled
            (bicubic) to the feature grid of every input. Defaults to ``(32, 32)`` (a 512x512
            crop at stride 16).
        transformer_drop_rate (float): dropout inside the transformer. Defaults to 0.
        attn_drop_rate (float): dropout on attention weights. Defaults to 0.
        drop_path_rate (float): stochastic depth, rising linearly over the layers. Defaults
            to 0.
        in_index (Sequence[int]): which backbone outputs are the (stride-4, stride-16) maps.
            Defaults to ``(0, 1)``.
        input_transform (str): must be ``'multiple_select'``. Defaults to
            ``'multiple_select'``.
        norm_cfg (dict): normalisation of the convolutional head. Defaults to
            ``dict(type='BN')``.
        init_cfg (dict, optional): initialisation config. Defaults to None (the head
            initialises itself: truncated normal 0.02 for the transformer, as the original).
        **kwargs: the other :class:`BaseDecodeHead` arguments (``num_classes``, ``loss_decode``,
            ``dropout_ratio``, ``align_corners``, ...).
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 channels: int = 64,
                 embed_dims: int = 256,
                 num_layers: int = 4,
                 num_heads: int = 8,
                 mlp_ratio: float = 3.,
                 qkv_bias: bool = False,
                 pos_grid: Sequence[int] = (32, 32),
                 transformer_drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 in_index: Sequence[int] = (0, 1),
                 input_transform: str = 'multiple_select',
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None,
                 **kwargs) -> None:
        self._check_settings(in_channels, in_index, input_transform, channels, embed_dims,
                             num_layers, num_heads, mlp_ratio, pos_grid)
        super().__init__(list(in_channels), channels, in_index=list(in_index),
                         input_transform=input_transform, norm_cfg=norm_cfg, init_cfg=init_cfg,
                         **kwargs)
        # Each class gets its own mask from one shared predictor (below), so the base class's
        # (channels -> num_classes) classifier is not used; kept, it would get no gradient.
        del self.conv_seg
        low_channels, high_channels = self.in_channels
        self.num_heads = num_heads
        self.pos_grid = (int(pos_grid[0]), int(pos_grid[1]))

        # transformer
        self.input_proj = nn.Linear(high_channels, embed_dims)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_grid[0] * self.pos_grid[1],
                                                  embed_dims))
        self.pos_drop = nn.Dropout(transformer_drop_rate)
        drop_path_rates = torch.linspace(0, drop_path_rate, num_layers).tolist()
        self.encoder = nn.ModuleList([
            EncoderLayer(embed_dims, num_heads, mlp_ratio, qkv_bias, transformer_drop_rate,
                         attn_drop_rate, drop_path_rates[i])
            for i in range(num_layers)])
        self.encoder_norm = LayerNorm(embed_dims)
        # One query per output channel: with out_channels=1 (binary, sigmoid) one mask.
        self.class_embed = nn.Parameter(torch.zeros(1, self.out_channels, embed_dims))
        self.decoder = nn.ModuleList([
            DecoderLayer(embed_dims, num_heads, mlp_ratio, qkv_bias,
                         is_last=i == num_layers - 1, drop=transformer_drop_rate,
                         attn_drop=attn_drop_rate, drop_path=drop_path_rates[i])
            for i in range(num_layers)])

        # convolutional head, run once per class
        conv = dict(kernel_size=3, padding=1, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.fuse = nn.Sequential(
            DepthwiseSeparableConvModule(embed_dims + num_heads, channels, **conv),
            DepthwiseSeparableConvModule(channels, channels, **conv))
        self.low_proj = ConvModule(low_channels, channels, 1, conv_cfg=self.conv_cfg,
                                   norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.refine = DepthwiseSeparableConvModule(channels, channels, **conv)
        self.mask_pred = nn.Conv2d(channels, 1, 1)
        self._init_transformer()

    @staticmethod
    def _check_settings(in_channels, in_index, input_transform, channels, embed_dims,
                        num_layers, num_heads, mlp_ratio, pos_grid) -> None:
        """Refuse settings the head cannot build, naming the value and what would work."""
        if input_transform != 'multiple_select':
            raise ValueError(f"Trans2SegHead reads a stride-4 and a stride-16 map, so "
                             f"input_transform must be 'multiple_select', got "
                             f"{input_transform!r}")
        for name, value in (('in_channels', in_channels), ('in_index', in_index)):
            if not isinstance(value, (list, tuple)) or len(value) != 2:
                raise ValueError(f'Trans2SegHead needs {name} for two inputs (stride 4, '
                                 f'stride 16), got {name}={value!r}; e.g. in_channels=(384, '
                                 f'384), in_index=(0, 1)')
        for name, value in (('channels', channels), ('embed_dims', embed_dims),
                            ('num_layers', num_layers), ('num_heads', num_heads)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f'Trans2SegHead: {name}={value!r} must be a positive int')
        if embed_dims % num_heads:
            raise ValueError(f'Trans2SegHead: embed_dims={embed_dims} is not divisible by '
                             f'num_heads={num_heads}; choose num_heads among the divisors of '
                             f'embed_dims (e.g. 256 with 8 heads)')
        if not mlp_ratio > 0:
            raise ValueError(f'Trans2SegHead: mlp_ratio={mlp_ratio!r} must be positive')
        if len(pos_grid) != 2 or any(int(g) <= 0 for g in pos_grid):
            raise ValueError(f'Trans2SegHead: pos_grid={tuple(pos_grid)!r} must be two positive '
                             f'ints (the stride-16 grid of the training crop, e.g. (32, 32))')

    def _init_transformer(self) -> None:
        """Truncated normal (std 0.02) for Linears and embeddings, LayerNorms to identity, as
        the official code; the conv modules keep mmcv's Kaiming initialisation."""
        for module in [self.input_proj, self.encoder, self.encoder_norm, self.decoder]:
            init_transformer_weights(module)
        nn.init.trunc_normal_(self.pos_embed, std=.02)
        nn.init.trunc_normal_(self.class_embed, std=.02)
        # small initial logits, as mmseg's Normal(std=0.01) for conv_seg
        nn.init.normal_(self.mask_pred.weight, std=0.01)
        nn.init.zeros_(self.mask_pred.bias)

    def forward_transformer(self, feat: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """Stride-16 map (B, C_in, H, W) -> encoder features (B, C, H, W) and every decoder
        layer's attention logits, each (B, K, h, H, W)."""
        batch, _, height, width = feat.shape
        # (B, C_in, H, W) -> (B, L, C_in) -> (B, L, C)
        x = self.input_proj(feat.flatten(2).transpose(1, 2))
        x = x + resample_pos_embed(self.pos_embed, self.pos_grid, (height, width))
        x = self.pos_drop(x)
        for layer in self.encoder:
            x = layer(x)
        x = self.encoder_norm(x)

        class_embed = self.class_embed.expand(batch, -1, -1)
        query, tokens, attn_maps = class_embed, x, []
        for i, layer in enumerate(self.decoder):
            if i > 0:  # every layer sees the class identity again (as the official decoder)
                query = query + class_embed
            query, tokens, logits = layer(query, tokens)
            # (B, h, K, L) -> (B, K, h, H, W)
            attn_maps.append(logits.transpose(1, 2).reshape(batch, -1, self.num_heads,
                                                            height, width))
        # (B, L, C) -> (B, C, H, W)
        x = x.transpose(1, 2).reshape(batch, -1, height, width)
        return x, attn_maps

    def forward(self, inputs: Sequence[torch.Tensor]) -> torch.Tensor:
        """Backbone outputs -> mask logits (B, K, H4, W4) at the stride-4 grid."""
        low, high = self._transform_inputs(inputs)
        feat, attn_maps = self.forward_transformer(high)
        batch, num_classes, _, height, width = attn_maps[-1].shape
        # Every class sees the encoder features beside its own attention maps:
        # (B*K, C, H, W) ++ (B*K, h, H, W) -> (B*K, C + h, H, W)
        x = torch.cat([repeat_per_class(feat, num_classes),
                       attn_maps[-1].flatten(0, 1)], dim=1)
        x = self.fuse(x)
        x = resize(x, size=low.shape[2:], mode='bilinear', align_corners=self.align_corners)
        x = x + repeat_per_class(self.low_proj(low), num_classes)
        x = self.refine(x)
        if self.dropout is not None:
            x = self.dropout(x)
        # (B*K, 1, H4, W4) -> (B, K, H4, W4)
        return self.mask_pred(x).reshape(batch, num_classes, *low.shape[2:])
