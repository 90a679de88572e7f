"""Position embeddings learnt on one grid, used on another."""
from typing import Tuple

import torch
import torch.nn.functional as F


def resample_pos_embed(pos_embed: torch.Tensor, old_grid: Tuple[int, int],
                       new_grid: Tuple[int, int], num_prefix_tokens: int = 0) -> torch.Tensor:
    """Resample a flattened 2D position embedding to another grid (bicubic).

    Args:
        pos_embed (Tensor): (1, num_prefix_tokens + old_h * old_w, C).
        old_grid (tuple[int, int]): (old_h, old_w) of the embedding.
        new_grid (tuple[int, int]): (new_h, new_w) wanted.
        num_prefix_tokens (int): leading tokens (class token) kept as they are. Defaults to 0.

    Returns:
        Tensor: (1, num_prefix_tokens + new_h * new_w, C).
    """
    # exported graphs always resample (bicubic at the same size is the identity), or the
    # shortcut taken at the traced size would hold for every size
    if not torch.compiler.is_exporting() and tuple(old_grid) == tuple(new_grid):
        return pos_embed
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if grid.shape[1] != old_grid[0] * old_grid[1]:
        raise ValueError(f'position embedding has {grid.shape[1]} grid tokens, which is not '
                         f'{old_grid[0]}x{old_grid[1]}')
    channels = grid.shape[-1]
    # (1, h*w, C) -> (1, C, h, w)
    grid = grid.reshape(1, old_grid[0], old_grid[1], channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid.float(), size=tuple(new_grid), mode='bicubic', align_corners=False)
    # (1, C, h', w') -> (1, h'*w', C)
    grid = grid.permute(0, 2, 3, 1).reshape(1, -1, channels).to(pos_embed.dtype)
    return torch.cat([prefix, grid], dim=1)
