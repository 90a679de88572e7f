"""What every implementation of the inner transformer is given: named weights and settings."""
from typing import NamedTuple, Optional

import torch


class InnerTransformerParams(NamedTuple):
    """The weights and settings of one inner transformer (pre-norm attention and MLP, both
    residual, exact GELU): ``words + attn(LN1(words))``, then ``+ mlp(LN2(.))``.

    The tensors are the block's own parameters (not copies), so gradients reach them whichever
    implementation runs. Shapes for word width c and MLP width h: norms (c,), ``qk_weight``
    (2c, c) = [Wq; Wk], ``v_weight`` (c, c), ``proj_weight`` (c, c), ``fc1_weight`` (h, c),
    ``fc2_weight`` (c, h).
    """
    norm1_weight: torch.Tensor
    norm1_bias: torch.Tensor
    qk_weight: torch.Tensor
    qk_bias: Optional[torch.Tensor]
    v_weight: torch.Tensor
    v_bias: Optional[torch.Tensor]
    proj_weight: torch.Tensor
    proj_bias: torch.Tensor
    norm2_weight: torch.Tensor
    norm2_bias: torch.Tensor
    fc1_weight: torch.Tensor
    fc1_bias: torch.Tensor
    fc2_weight: torch.Tensor
    fc2_bias: torch.Tensor
    num_heads: int
    eps: float = 1e-5  # of both LayerNorms
    attn_drop: float = 0.  # on the attention weights
    drop: float = 0.  # after the attention projection, fc1's activation and fc2
    drop_path: float = 0.  # stochastic depth of each residual branch, per patch

    @property
    def head_dim(self) -> int:
        return self.v_weight.shape[0] // self.num_heads

    @property
    def has_dropout(self) -> bool:
        return bool(self.attn_drop or self.drop or self.drop_path)
