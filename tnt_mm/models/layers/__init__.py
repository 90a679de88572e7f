"""Generic transformer layers shared by the backbone and the heads (no TNT specifics here)."""
from .attention import Attention
from .mlp import Mlp
from .norm import LayerNorm, LayerNorm2d, layer_norm
from .pos_embed import resample_pos_embed
from .weight_init import init_transformer_weights

__all__ = ['Attention', 'LayerNorm', 'LayerNorm2d', 'Mlp', 'init_transformer_weights', 'layer_norm',
           'resample_pos_embed']
