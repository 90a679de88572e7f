"""The TNT variants and the settings derived from them: a leaf module that the backbone and the
checkpoint converter both read."""
import math
from typing import Dict, Sequence, Tuple, Union

ARCH_KEYS = ('inner_dim', 'inner_heads', 'outer_dim', 'outer_heads', 'depth')
# paper Table 1
ARCH_ZOO: Dict[str, Dict[str, int]] = {
    **dict.fromkeys(['ti', 'tiny'], dict(
        inner_dim=12, inner_heads=2, outer_dim=192, outer_heads=3, depth=12)),
    **dict.fromkeys(['s', 'small'], dict(
        inner_dim=24, inner_heads=4, outer_dim=384, outer_heads=6, depth=12)),
    **dict.fromkeys(['b', 'base'], dict(
        inner_dim=40, inner_heads=4, outer_dim=640, outer_heads=10, depth=12)),
}
# 'official': the released Huawei / timm TNT; 'legacy': mmpretrain's and timm's
# tnt_s_legacy_patch16_224 (word embedding over the whole image, another words -> sentence)
LAYOUTS = ('official', 'legacy')


def parse_arch(arch: Union[str, dict]) -> Dict[str, int]:
    """A name of :data:`ARCH_ZOO` or a dict with exactly the keys :data:`ARCH_KEYS` ->
    the arch dict."""
    if isinstance(arch, str):
        key = arch.lower()
        if key not in ARCH_ZOO:
            raise ValueError(f'arch={arch!r} is unknown; choose one of {sorted(ARCH_ZOO)} or '
                             f'pass a dict with keys {sorted(ARCH_KEYS)}')
        return dict(ARCH_ZOO[key])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a str or a dict, got {type(arch).__name__}')
    missing = set(ARCH_KEYS) - set(arch)
    extra = set(arch) - set(ARCH_KEYS)
    if missing or extra:
        raise ValueError(f'custom arch {arch} must have exactly the keys {sorted(ARCH_KEYS)}; '
                         f'missing {sorted(missing)}, unexpected {sorted(extra)}')
    for name, value in arch.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f'arch[{name!r}]={value!r} must be a positive int')
    return dict(arch)


def quarter_points(depth: int) -> Tuple[int, ...]:
    """The blocks that end each quarter of the depth, the default pyramid inputs: blocks
    3/6/9/12 of 12 -> indices (2, 5, 8, 11); (1, 2, 4, 5) of 6."""
    if depth < 4:
        raise ValueError(f'a TNT with depth={depth} has no four distinct quarter points for the '
                         f'default out_indices; give out_indices explicitly')
    return tuple(math.ceil(depth * k / 4) - 1 for k in (1, 2, 3, 4))


def normalize_indices(indices: Union[int, Sequence[int]], depth: int,
                      name: str) -> Tuple[int, ...]:
    """Block indices (negative ones from the end) -> non-negative ones, checked."""
    if isinstance(indices, int):
        indices = (indices,)
    indices = tuple(indices)
    if not indices:
        raise ValueError(f'{name} is empty; give at least one block index')
    bad = [i for i in indices if not isinstance(i, int) or not -depth <= i < depth]
    if bad:
        raise ValueError(f'{name}={indices} has {bad} out of range: this TNT has {depth} '
                         f'blocks, so valid indices are {-depth}..{depth - 1}')
    normalized = tuple(i % depth for i in indices)
    if len(set(normalized)) != len(normalized):
        raise ValueError(f'{name}={indices} names the same block twice')
    return normalized
