"""Transformer in Transformer (TNT) backbone for the OpenMMLab 2.x stack.

Paper: "Transformer in Transformer", Han et al., NeurIPS 2021 (https://arxiv.org/abs/2103.00112).
Official code: https://github.com/huawei-noah/Efficient-AI-Backbones/tree/master/tnt_pytorch.
Key names follow timm's ``tnt.py`` so that its checkpoints map one-to-one; the converter in
``tnt_mm/models/backbones/tnt_convert.py`` handles the other formats.

An image is cut into 16x16 patches ("visual sentences"), each patch into 4x4 = 16 sub-patches
("visual words"). Every block runs an inner transformer over the words of each patch, adds the
flattened words to their sentence, then runs an outer transformer over the sentences. The inner
transformer is one call into :mod:`tnt_mm.ops`, which picks its implementation.

Shapes used in the comments: B images, N = Hp * Wp patches, T = N + 1 sentence tokens (class
token first), m = 16 words per patch, c / d the inner / outer widths.
"""
import math
import re
import weakref
from typing import List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule
from torch.utils.checkpoint import checkpoint
from torchvision.ops import StochasticDepth

from tnt_mm.ops import InnerTransformerParams, inner_transformer, patch_update
from tnt_mm.ops.amp import autocast_dtype
from tnt_mm.registry import MODELS
from ..layers import Attention, LayerNorm, Mlp, init_transformer_weights, resample_pos_embed
from .pyramid import PyramidRescaler
from .tnt_arch import ARCH_ZOO, LAYOUTS, normalize_indices, parse_arch, quarter_points
from .tnt_convert import load_pretrained

OUT_TYPES = ('pyramid', 'featmap', 'cls_token')
INPUT_CHECK_ADVICE = ('Check the images and the data preprocessor (a zero std divides by '
                      'zero)')


class PendingInputCheck(NamedTuple):
    """A finite-input test on its way to the host: a sum of the input that is finite exactly
    when every value is (see :func:`finite_probe`), the event after its copy (None on the
    CPU), and the input's shape for the message."""
    probe: torch.Tensor
    ready: Optional['torch.cuda.Event']
    shape: Tuple[int, ...]


# per model, outside its attributes: copies (EMA), pickles and state dicts never see them
_PENDING_INPUT_CHECKS: 'weakref.WeakKeyDictionary[nn.Module, PendingInputCheck]' = \
    weakref.WeakKeyDictionary()


def defers_input_check(device: torch.device) -> bool:
    """Whether the training-time input test is read one step later: on devices where reading
    it at once would make the host wait for the device (all but the CPU)."""
    return device.type != 'cpu'


def finite_probe(x: torch.Tensor) -> torch.Tensor:
    """One reduction of ``x`` that is finite exactly when every value of ``x`` is: the sum in
    float64, which no sum of float32 values overflows and through which NaN and Inf propagate
    (Inf - Inf is NaN). Devices without float64 get the min and max, in two values."""
    x = x.detach()
    if x.device.type in ('cuda', 'cpu'):
        return x.sum(dtype=torch.float64).reshape(1)
    return torch.stack(torch.aminmax(x.float()))


def is_fake(tensor: torch.Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake as fake
    return fake(tensor)


class SqueezeExcite(nn.Module):
    """The SE module of the TNT supplement: the mean over all tokens goes through
    LN -> Linear -> ReLU -> Linear -> Tanh and scales every token dimension-wise."""

    def __init__(self, dim: int, hidden_ratio: float = 0.25) -> None:
        super().__init__()
        hidden_dim = int(dim * hidden_ratio)
        self.norm = LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean(dim=1, keepdim=True)  # (B, T, d) -> (B, 1, d)
        gate = torch.tanh(self.fc2(F.relu(self.fc1(self.norm(gate)))))
        return x * gate


class TNTBlock(nn.Module):
    """One TNT block: inner transformer on the words, words -> sentence, outer transformer.

    Args:
        inner_dim (int): word width c.
        outer_dim (int): sentence width d.
        num_words (int): words per patch m.
        inner_heads (int): heads of the inner attention.
        outer_heads (int): heads of the outer attention.
        mlp_ratio (float): hidden width of both MLPs over their input width. Defaults to 4.
        qkv_bias (bool): bias in the ``qk`` and ``v`` Linears. Defaults to False.
        drop (float): dropout after attention and MLP projections. Defaults to 0.
        attn_drop (float): dropout on the attention weights. Defaults to 0.
        drop_path (float): stochastic depth rate of this block. Defaults to 0.
        has_inner (bool): whether the block has the inner transformer and the words -> sentence
            projection (paper Table 5 keeps them in some blocks only). Defaults to True.
        legacy (bool): words -> sentence as in the legacy network (LN(c) per word, Linear with
            bias, no LN after) instead of the official LN(mc) -> Linear without bias -> LN(d).
            Defaults to False.
        with_se (bool): add the SE module on the outer MLP output. Defaults to False.
    """

    def __init__(self,
                 inner_dim: int,
                 outer_dim: int,
                 num_words: int,
                 inner_heads: int,
                 outer_heads: int,
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 drop: float = 0.,
                 attn_drop: float = 0.,
                 drop_path: float = 0.,
                 has_inner: bool = True,
                 legacy: bool = False,
                 with_se: bool = False) -> None:
        super().__init__()
        self.has_inner = has_inner
        self.legacy = legacy
        self.drop_path_rate = drop_path
        if has_inner:
            # The inner modules hold the weights (their names are the checkpoint keys); the
            # computation is tnt_mm.ops.inner_transformer's.
            self.norm_in = LayerNorm(inner_dim)
            self.attn_in = Attention(inner_dim, inner_heads, qkv_bias, attn_drop, drop)
            self.norm_mlp_in = LayerNorm(inner_dim)
            self.mlp_in = Mlp(inner_dim, int(inner_dim * mlp_ratio), drop)
            if legacy:
                self.norm1_proj = LayerNorm(inner_dim)
                self.proj = nn.Linear(num_words * inner_dim, outer_dim, bias=True)
            else:
                self.norm1_proj = LayerNorm(num_words * inner_dim)
                self.proj = nn.Linear(num_words * inner_dim, outer_dim, bias=False)
                self.norm2_proj = LayerNorm(outer_dim)
        self.norm_out = LayerNorm(outer_dim)
        self.attn_out = Attention(outer_dim, outer_heads, qkv_bias, attn_drop, drop)
        self.norm_mlp = LayerNorm(outer_dim)
        self.mlp = Mlp(outer_dim, int(outer_dim * mlp_ratio), drop)
        self.se = SqueezeExcite(outer_dim) if with_se else None
        self.drop_path = StochasticDepth(drop_path, mode='row') if drop_path > 0 else nn.Identity()

    def inner_params(self) -> InnerTransformerParams:
        """The inner transformer's weights and settings, as :mod:`tnt_mm.ops` takes them."""
        if not torch.compiler.is_compiling():
            try:
                return self._inner_params_from_registries()
            except KeyError:  # a module replaced by one that keeps a weight elsewhere
                pass
        attn, mlp = self.attn_in, self.mlp_in
        return InnerTransformerParams(
            norm1_weight=self.norm_in.weight, norm1_bias=self.norm_in.bias,
            qk_weight=attn.qk.weight, qk_bias=attn.qk.bias,
            v_weight=attn.v.weight, v_bias=attn.v.bias,
            proj_weight=attn.proj.weight, proj_bias=attn.proj.bias,
            norm2_weight=self.norm_mlp_in.weight, norm2_bias=self.norm_mlp_in.bias,
            fc1_weight=mlp.fc1.weight, fc1_bias=mlp.fc1.bias,
            fc2_weight=mlp.fc2.weight, fc2_bias=mlp.fc2.bias,
            num_heads=attn.num_heads, eps=self.norm_in.eps, attn_drop=attn.attn_drop_rate,
            drop=attn.proj_drop.p, drop_path=self.drop_path_rate)

    def _inner_params_from_registries(self) -> InnerTransformerParams:
        """:meth:`inner_params` read from the modules' ``_modules`` and ``_parameters`` dicts:
        each ``nn.Module.__getattr__`` costs about a microsecond, and the plain version makes
        28 of them in every block of every step (34 us against 2 us on a CPU)."""
        modules = self._modules
        norm1, attn = modules['norm_in'], modules['attn_in']
        norm2, mlp = modules['norm_mlp_in'], modules['mlp_in']
        attn_modules, mlp_modules = attn._modules, mlp._modules
        qk, v = attn_modules['qk']._parameters, attn_modules['v']._parameters
        proj = attn_modules['proj']._parameters
        fc1, fc2 = mlp_modules['fc1']._parameters, mlp_modules['fc2']._parameters
        n1, n2 = norm1._parameters, norm2._parameters
        return InnerTransformerParams(
            n1['weight'], n1['bias'], qk['weight'], qk['bias'], v['weight'], v['bias'],
            proj['weight'], proj['bias'], n2['weight'], n2['bias'], fc1['weight'],
            fc1['bias'], fc2['weight'], fc2['bias'], attn.num_heads, norm1.eps,
            attn.attn_drop_rate, attn_modules['proj_drop'].p, self.drop_path_rate)

    def words_to_sentences(self, words: torch.Tensor, sentences: torch.Tensor,
                           normed: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The sentences (B, 1 + N, d) with the (B*N, m, c) words added to their patch tokens
        (the class token gets none). The official layout starts from ``normed``, the words'
        first norm (B*N, m*c), which the inner transformer computes with them
        (``patch_norm``), and ends with a norm that :func:`tnt_mm.ops.patch_update` applies
        with the sum."""
        batch = sentences.shape[0]
        if self.legacy:
            update = self.proj(self.norm1_proj(words).reshape(batch, -1, self.proj.in_features))
            return sentences + F.pad(update, (0, 0, 1, 0))  # as patch_update adds, see there
        projected = self.proj(normed.reshape(batch, -1, self.proj.in_features))
        return patch_update(sentences, projected, self.norm2_proj)

    def forward(self, words: torch.Tensor, sentences: torch.Tensor,
                recompute_inner: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        """Args:
            words (Tensor): (B*N, m, c).
            sentences (Tensor): (B, 1 + N, d), class token first.
            recompute_inner (bool): keep only the block's input words for the backward pass and
                recompute the inner transformer there. Its activations (m = 16 words per patch)
                are about as large as the outer transformer's while it costs a tenth of the
                FLOPs, so this trades a few percent of training time for much memory.
        """
        if self.has_inner:
            normed = None
            if self.legacy:
                words = inner_transformer(words, self.inner_params(), self.training,
                                          recompute=recompute_inner)
            else:  # the words' norm may be computed with them (the Triton kernels)
                words, normed = inner_transformer(words, self.inner_params(), self.training,
                                                  recompute=recompute_inner,
                                                  patch_norm=self.norm1_proj)
            sentences = self.words_to_sentences(words, sentences, normed)
        sentences = sentences + self.drop_path(self.attn_out(self.norm_out(sentences)))
        mlp_out = self.mlp(self.norm_mlp(sentences))
        if self.se is not None:
            mlp_out = mlp_out + self.se(mlp_out)
        sentences = sentences + self.drop_path(mlp_out)
        return words, sentences


class PixelEmbed(nn.Module):
    """Image -> visual words: (B, C, Hp*p, Wp*p) -> (B*N, m, c).

    ``official`` layout: cut the image into p x p patches, then run the 7x7 stride-``word_stride``
    conv on every patch separately (zero padding at each patch border). ``legacy`` layout: run the
    conv on the whole image, then cut its output into patches.
    """

    def __init__(self,
                 in_channels: int,
                 inner_dim: int,
                 patch_size: int = 16,
                 word_stride: int = 4,
                 legacy: bool = False) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.legacy = legacy
        self.word_grid = math.ceil(patch_size / word_stride)
        self.proj = nn.Conv2d(in_channels, inner_dim, kernel_size=7, stride=word_stride, padding=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        p, s = self.patch_size, self.word_grid
        hp, wp = height // p, width // p
        if self.legacy:
            x = self.proj(x)  # (B, c, Hp*s, Wp*s)
            dim = x.shape[1]
            # (B, c, Hp, s, Wp, s) -> (B, Hp, Wp, s, s, c) -> (B*N, s*s, c)
            x = x.reshape(batch, dim, hp, s, wp, s).permute(0, 2, 4, 3, 5, 1)
            return x.reshape(batch * hp * wp, s * s, dim)
        # (B, C, Hp, p, Wp, p) -> (B, Hp, Wp, p, p, C): the patches, copied once, channels
        # last and in the conv's autocast dtype (a cast and a copy in one kernel); the conv
        # then writes its output channels last, which is the words' (B*N, s*s, c) layout
        x = x.reshape(batch, channels, hp, p, wp, p).permute(0, 2, 4, 3, 5, 1)
        patches = torch.empty((batch * hp * wp, p, p, channels), dtype=self._input_dtype(x),
                              device=x.device)
        patches.view(x.shape).copy_(x)
        x = self.proj(patches.permute(0, 3, 1, 2))  # (B*N, c, s, s), channels last
        return x.permute(0, 2, 3, 1).reshape(x.shape[0], s * s, x.shape[1])  # (B*N, s*s, c)

    @staticmethod
    def _input_dtype(x: torch.Tensor) -> torch.dtype:
        """The dtype the conv computes in: autocast's where it is on, else the input's."""
        amp = autocast_dtype(x.device.type)
        return amp if amp is not None and x.is_floating_point() else x.dtype


@MODELS.register_module()
class TNT(BaseModule):
    """Transformer in Transformer backbone for classification, detection and segmentation.

    Any input size works: the image is zero-padded on the bottom and right to the next multiple
    of the patch size (16), so no pixel is dropped and the patch grid is
    ``(ceil(H / 16), ceil(W / 16))``. The sentence position embedding, learnt on the
    ``pretrain_img_size`` grid, is resampled (bicubic) to that grid; the word position embedding
    covers the 4x4 words of one patch, which do not change with the input size (a checkpoint
    with another word grid is resampled when it is loaded).

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'`` (or ``'ti'``, ``'s'``, ``'b'``),
            or a dict with the keys of :data:`~.tnt_arch.ARCH_KEYS`. Defaults to ``'small'``.
        layout (str): ``'official'`` (the released Huawei/timm TNT) or ``'legacy'`` (the network
            of mmpretrain's and timm's ``tnt_s_legacy_patch16_224``). Defaults to ``'official'``.
        in_channels (int): input image channels. Defaults to 3.
        pretrain_img_size (int | tuple): the size the sentence position embedding is learnt at.
            Defaults to 224.
        patch_size (int): sentence patch size. Defaults to 16.
        word_stride (int): stride of the word-embedding conv, the word size. Defaults to 4.
        out_indices (Sequence[int], optional): blocks whose outputs are returned, negative
            indices allowed. Defaults to the four quarter points of the depth for ``'pyramid'``
            and ``'featmap'`` (``(2, 5, 8, 11)``, blocks 3/6/9/12 of 12), and ``(-1,)`` for
            ``'cls_token'``.
        out_type (str): what ``forward`` returns, a tuple with one entry per ``out_indices``:

            - ``'pyramid'``: the block features rescaled to strides 4, 8, 16 and 32
              (:class:`PyramidRescaler`), NCHW, the input of an FPN.
            - ``'featmap'``: the raw block outputs without the class token, stride 16, NCHW.
            - ``'cls_token'``: the class token, (B, d); the final norm is applied to the last
              block's output as in the classifier.

            Defaults to ``'pyramid'``.
        pyramid_scales (Sequence[float]): rescaling factor of each returned block for
            ``'pyramid'``. Defaults to ``(4.0, 2.0, 1.0, 0.5)``.
        pyramid_channels (int, optional): channels of the pyramid levels. Defaults to the outer
            width d.
        pyramid_norm (str, optional): ``'LN'`` (ViTDet's channel LayerNorm in every level) or
            ``None``; see :class:`PyramidRescaler`. Defaults to ``'LN'``.
        mlp_ratio (float): hidden width of the MLPs over their input width. Defaults to 4.
        qkv_bias (bool): bias in the attention ``qk`` and ``v`` Linears. Defaults to False.
        drop_rate (float): dropout after projections and on the embeddings. Defaults to 0.
        attn_drop_rate (float): dropout on attention weights. Defaults to 0.
        drop_path_rate (float): stochastic depth rate, rising linearly to this value over the
            blocks. Defaults to 0.
        with_se (bool): the SE variant of the supplement (TNT-S+SE). Defaults to False.
        inner_block_indices (Sequence[int], optional): blocks that keep the inner transformer
            (paper Table 5); the others are plain ViT blocks. Defaults to all blocks.
        with_cp (bool): gradient checkpointing of every block, to save memory. Defaults to False.
        recompute_inner (bool): in training, recompute the inner transformer in the backward
            pass instead of storing its activations (see :meth:`TNTBlock.forward`); the outputs
            and gradients are unchanged. Defaults to True.
        low_precision_words (bool): under autocast, keep the words in autocast's dtype between
            blocks instead of float32 (the word position embedding would promote them): half
            their memory traffic. The Triton kernels compute in float32 and round each block's
            output words; the sentences stay float32. Defaults to False.
        frozen_stages (int): what is kept frozen, as in mmdet / mmpretrain backbones: ``-1``
            nothing; ``0`` the embeddings (word embedding, word -> sentence projection, class
            token, position embeddings); ``k`` the embeddings and the first ``k`` blocks. Frozen
            parameters get no gradient, and frozen modules stay in eval mode (no dropout or
            stochastic depth) through ``train()``. Defaults to -1.
        init_cfg (dict | list[dict], optional): initialisation; ``dict(type='Pretrained',
            checkpoint=PATH)`` loads a converted checkpoint strictly (see
            :meth:`load_pretrained`). Defaults to None.
    """
    arch_zoo = ARCH_ZOO
    num_prefix_tokens = 1

    def __init__(self,
                 arch: Union[str, dict] = 'small',
                 layout: str = 'official',
                 in_channels: int = 3,
                 pretrain_img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 16,
                 word_stride: int = 4,
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 out_type: str = 'pyramid',
                 pyramid_scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 pyramid_channels: Optional[int] = None,
                 pyramid_norm: Optional[str] = 'LN',
                 mlp_ratio: float = 4.,
                 qkv_bias: bool = False,
                 drop_rate: float = 0.,
                 attn_drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 with_se: bool = False,
                 inner_block_indices: Optional[Sequence[int]] = None,
                 with_cp: bool = False,
                 recompute_inner: bool = True,
                 low_precision_words: bool = False,
                 frozen_stages: int = -1,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.arch_settings = parse_arch(arch)
        if layout not in LAYOUTS:
            raise ValueError(f'layout={layout!r} is not supported; choose one of {LAYOUTS}')
        if out_type not in OUT_TYPES:
            raise ValueError(f'out_type={out_type!r} is not supported; choose one of {OUT_TYPES}')
        self.layout = layout
        self.out_type = out_type
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.with_se = with_se
        self.with_cp = with_cp
        self.recompute_inner = recompute_inner
        self.low_precision_words = low_precision_words
        depth = self.num_layers = self.arch_settings['depth']
        inner_dim = self.arch_settings['inner_dim']
        self.embed_dims = outer_dim = self.arch_settings['outer_dim']

        if out_indices is None:
            out_indices = (-1,) if out_type == 'cls_token' else quarter_points(depth)
        self.out_indices = normalize_indices(out_indices, depth, 'out_indices')
        inner_blocks = set(range(depth)) if inner_block_indices is None else set(
            normalize_indices(inner_block_indices, depth, 'inner_block_indices'))

        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        self.pos_grid = (pretrain_img_size[0] // patch_size, pretrain_img_size[1] // patch_size)

        self.pixel_embed = PixelEmbed(in_channels, inner_dim, patch_size, word_stride,
                                      legacy=layout == 'legacy')
        num_words = self.num_words = self.pixel_embed.word_grid ** 2
        self.norm1_proj = LayerNorm(num_words * inner_dim)
        self.proj = nn.Linear(num_words * inner_dim, outer_dim)
        self.norm2_proj = LayerNorm(outer_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, outer_dim))
        self.patch_pos = nn.Parameter(
            torch.zeros(1, self.num_prefix_tokens + self.pos_grid[0] * self.pos_grid[1], outer_dim))
        self.pixel_pos = nn.Parameter(torch.zeros(1, num_words, inner_dim))
        self.pos_drop = nn.Dropout(drop_rate)

        # Blocks after the last returned one would get no gradient (and break DDP): build only
        # those that are used. A classifier returns the last block, so it builds all of them.
        num_built = max(self.out_indices) + 1
        drop_path_rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList([
            TNTBlock(inner_dim, outer_dim, num_words,
                     inner_heads=self.arch_settings['inner_heads'],
                     outer_heads=self.arch_settings['outer_heads'],
                     mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop=drop_rate,
                     attn_drop=attn_drop_rate, drop_path=drop_path_rates[i],
                     has_inner=i in inner_blocks, legacy=layout == 'legacy', with_se=with_se)
            for i in range(num_built)
        ])

        # What turns block outputs into the returned features (see _format_output).
        self.norm = LayerNorm(outer_dim) if out_type == 'cls_token' else None
        self.pyramid = None
        if out_type == 'pyramid':
            if len(pyramid_scales) != len(self.out_indices):
                raise ValueError(
                    f'out_type="pyramid" rescales each returned block by one factor, but '
                    f'pyramid_scales={tuple(pyramid_scales)} has {len(pyramid_scales)} entries '
                    f'for out_indices={self.out_indices}')
            self.pyramid = PyramidRescaler(outer_dim, pyramid_channels or outer_dim,
                                           pyramid_scales, pyramid_norm)
        self._init_trunk()
        if not -1 <= frozen_stages <= len(self.blocks):
            raise ValueError(
                f'frozen_stages={frozen_stages} is out of range: -1 (nothing), 0 (the '
                f'embeddings) or 1..{len(self.blocks)} (the embeddings and that many of the '
                f'{len(self.blocks)} blocks built)')
        self.frozen_stages = frozen_stages
        self._freeze_stages()

    def _init_trunk(self) -> None:
        """The official initialisation: truncated normal (std 0.02) for Linears and embeddings,
        LayerNorms to identity."""
        init_transformer_weights(self)
        for param in (self.cls_token, self.patch_pos, self.pixel_pos):
            nn.init.trunc_normal_(param, std=.02)

    # ------------------------------------------------------------------ fine-tuning
    EMBEDDINGS = ('pixel_embed', 'norm1_proj', 'proj', 'norm2_proj', 'cls_token', 'patch_pos',
                  'pixel_pos')

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.pixel_embed, self.norm1_proj, self.proj, self.norm2_proj, self.pos_drop,
                  *self.blocks[:self.frozen_stages]]
        for module in frozen:
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        for param in (self.cls_token, self.patch_pos, self.pixel_pos):
            param.requires_grad = False

    def train(self, mode: bool = True) -> 'TNT':
        super().train(mode)
        self._freeze_stages()  # frozen modules stay in eval mode
        return self

    def get_layer_depth(self, param_name: str, prefix: str = '') -> Tuple[int, int]:
        """The layer of a parameter for layer-wise learning-rate decay, in mmpretrain's
        convention (its ``LearningRateDecayOptimWrapperConstructor`` calls this): the
        embeddings are layer 0, block ``i`` layer ``i + 1``, everything after the blocks (and
        every parameter outside ``prefix``: neck, heads) the top layer, ``depth + 1``.

        Args:
            param_name (str): the parameter's name in the model.
            prefix (str): the backbone's prefix in the model, e.g. ``'backbone.'``.

        Returns:
            tuple[int, int]: the layer and the number of layers, ``depth + 2``.
        """
        num_layers = self.num_layers + 2
        if not param_name.startswith(prefix):
            return num_layers - 1, num_layers
        name = param_name[len(prefix):]
        if name.split('.')[0] in self.EMBEDDINGS:
            return 0, num_layers
        if name.startswith('blocks.'):
            return int(name.split('.')[1]) + 1, num_layers
        return num_layers - 1, num_layers

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        """Initialise, or load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` strictly.

        mmengine's own ``Pretrained`` initialiser loads with ``strict=False`` and only warns; a
        backbone that silently keeps random weights is worse than an error, so it is done here.
        """
        if isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained':
            load_pretrained(self, self.init_cfg['checkpoint'],
                            prefix=self.init_cfg.get('prefix'),
                            map_location=self.init_cfg.get('map_location', 'cpu'))
            self._is_init = True
            return
        super().init_weights()

    def is_unbuilt_key(self, key: str) -> bool:
        """Whether ``key`` of a complete TNT's state dict belongs to a part this configuration
        does not build: a block after the last returned one, or the final norm of the
        classifier without ``out_type='cls_token'``."""
        block = re.match(r'^blocks\.(\d+)\.', key)
        if block is not None:
            return int(block.group(1)) >= len(self.blocks)
        return self.norm is None and key.startswith('norm.')

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f'TNT expects a batch of images (B, C, H, W), got a tensor of '
                             f'shape {tuple(x.shape)}')
        if x.shape[1] != self.in_channels:
            raise ValueError(f'TNT was built for {self.in_channels}-channel images '
                             f'(in_channels={self.in_channels}) but got {x.shape[1]} channels '
                             f'(input shape {tuple(x.shape)})')
        # In training only, where bad inputs would be trained on; not while tracing, compiling
        # or capturing a CUDA graph, where the test would break the graph.
        if (not self.training or torch.jit.is_tracing() or torch.compiler.is_compiling()
                or x.is_meta):  # a meta tensor has no values
            return
        # (asked only of a live CUDA context: fake CUDA tensors have none)
        if x.is_cuda and torch.cuda.is_initialized() and torch.cuda.is_current_stream_capturing():
            return
        if defers_input_check(x.device):
            self._check_finite_later(x)
            return
        # NaN and Inf survive a sum: one cheap reduction, the values counted only when it is
        # not finite
        if not torch.isfinite(x.sum()):
            num_nan, num_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
            if num_nan or num_inf:  # else only the sum of huge finite values overflowed
                raise ValueError(
                    f'TNT got {num_nan} NaN and {num_inf} infinite values in its input of '
                    f'shape {tuple(x.shape)}; the network would turn them into NaN features and '
                    f'losses. {INPUT_CHECK_ADVICE}')

    def _check_finite_later(self, x: torch.Tensor) -> None:
        """The finite-input test without stopping the GPU: its result (:func:`finite_probe`,
        one reduction) is copied to the host behind the step's work and read at the next
        training step, once it has arrived. A bad input is then reported one step late."""
        pending = _PENDING_INPUT_CHECKS.get(self)
        if pending is not None and (pending.ready is None or pending.ready.query()):
            del _PENDING_INPUT_CHECKS[self]
            if not is_fake(pending.probe):  # a fake tensor (step_profile.py) has no value
                if not all(map(math.isfinite, pending.probe.tolist())):
                    raise ValueError(
                        f'TNT got NaN or infinite values in its input of shape '
                        f'{pending.shape} at the previous training step (on a GPU the test is '
                        f'read one step later, so as not to wait for it); the network turns '
                        f'them into NaN features and losses. {INPUT_CHECK_ADVICE}')
        probe = finite_probe(x)
        host = torch.empty(probe.shape, dtype=probe.dtype, pin_memory=x.is_cuda)
        host.copy_(probe, non_blocking=True)
        ready = None
        if x.is_cuda:
            ready = torch.cuda.Event()
            ready.record()
        _PENDING_INPUT_CHECKS[self] = PendingInputCheck(host, ready, tuple(x.shape))

    def embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, Tuple[int, int]]:
        """Image -> (words (B*N, m, c), sentences (B, T, d), patch grid (Hp, Wp))."""
        self._check_input(x)
        batch, _, height, width = x.shape
        p = self.patch_size
        # ceil by floor division, not -height % p: torch.compile's dynamic shapes cannot turn a
        # Python modulo of sizes into a tensor expression (TensorReferenceAnalysis.python_mod)
        grid = ((height + p - 1) // p, (width + p - 1) // p)
        pad_h, pad_w = grid[0] * p - height, grid[1] * p - width
        # torch.export would fix the branch taken at the traced size; exported graphs always pad
        if torch.compiler.is_exporting() or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))  # zeros on the bottom and right

        words = self.pixel_embed(x)  # in autocast's dtype under autocast
        pixel_pos = self.pixel_pos
        if self.low_precision_words and words.dtype != pixel_pos.dtype:
            pixel_pos = pixel_pos.to(words.dtype)
        words = words + pixel_pos
        sentences = self.norm2_proj(self.proj(self.norm1_proj(
            words.reshape(batch, grid[0] * grid[1], -1))))  # (B*N, m, c) -> (B, N, d)
        sentences = torch.cat([self.cls_token.expand(batch, -1, -1), sentences], dim=1)
        pos = resample_pos_embed(self.patch_pos, self.pos_grid, grid, self.num_prefix_tokens)
        sentences = self.pos_drop(sentences + pos)
        return words, sentences, grid

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        words, sentences, grid = self.embed(x)
        saving = self.training and torch.is_grad_enabled()
        taken = {}
        for i, block in enumerate(self.blocks):
            if saving and self.with_cp:
                words, sentences = checkpoint(block, words, sentences, use_reentrant=False)
            else:
                words, sentences = block(words, sentences,
                                         recompute_inner=saving and self.recompute_inner)
            if i in self.out_indices:
                taken[i] = sentences
        return self._format_output([taken[i] for i in self.out_indices], grid)

    def _format_output(self, block_outputs: List[torch.Tensor],
                       grid: Tuple[int, int]) -> Tuple[torch.Tensor, ...]:
        """The sentences (B, T, d) after each block of ``out_indices``, in that order -> what
        :meth:`forward` returns for ``out_type``."""
        if self.out_type == 'cls_token':
            # the classifier's final norm belongs to the deepest block's output only
            last = len(self.blocks) - 1
            return tuple((self.norm(x) if i == last else x)[:, 0]
                         for i, x in zip(self.out_indices, block_outputs))
        # (B, 1 + Hp*Wp, d) -> (B, d, Hp, Wp)
        feats = [x[:, self.num_prefix_tokens:].reshape(x.shape[0], *grid, -1)
                 .permute(0, 3, 1, 2).contiguous() for x in block_outputs]
        if self.out_type == 'pyramid':
            feats = self.pyramid(feats)
        return tuple(feats)
