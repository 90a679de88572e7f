"""The ViT / TNT weight initialisation."""
import torch.nn as nn


def init_transformer_weights(module: nn.Module) -> None:
    """The ViT/TNT initialisation of every Linear and LayerNorm under ``module``: truncated
    normal (std 0.02) weights and zero biases for Linears, identity for LayerNorms."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
