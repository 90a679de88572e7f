"""One optimizer parameter group per distinct setting, not per parameter.

mmengine's ``DefaultOptimWrapperConstructor`` gives every parameter its own group whenever
``paramwise_cfg`` is set (every tnt_mm config: no weight decay on norms and position
embeddings). ``torch.optim``'s foreach and fused AdamW batch the tensors of one group into one
multi-tensor launch, so one group per tensor turns an optimizer step into one launch series and
one Python iteration per tensor: TNT-S has 2.4x the parameter tensors of DeiT-S, and a Faster
R-CNN with it several hundred. Merging the groups that agree on every setting gives each
parameter exactly the settings it had, in a handful of groups.
"""
from typing import Any, Dict, List, Optional, Tuple

import torch
from mmengine.logging import MMLogger
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from torch import nn

from tnt_mm.registry import OPTIM_WRAPPER_CONSTRUCTORS


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return a is b  # a tensor setting (a capturable lr) is shared only as the same object
    return a == b


def _merge(groups: List[dict]) -> Tuple[List[dict], List[int]]:
    """The merged groups, and for each the index of the first group merged into it."""
    merged: List[dict] = []
    firsts: List[int] = []
    for index, group in enumerate(groups):
        settings = {key: value for key, value in group.items() if key != 'params'}
        for target in merged:
            if target.keys() - {'params'} == settings.keys() and all(
                    _same(target[key], value) for key, value in settings.items()):
                target['params'].extend(group['params'])
                break
        else:
            merged.append(dict(settings, params=list(group['params'])))
            firsts.append(index)
    return merged, firsts


def merge_param_groups(groups: List[dict]) -> List[dict]:
    """``groups`` with those that have the same settings (every key but ``'params'``) merged,
    in the order each setting first appears, the parameters in their order. Plain dicts; the
    input is not changed. Works on parameters and on a state dict's parameter indices alike."""
    return _merge(groups)[0]


def _merged_like(state_dict: Dict[str, Any], optimizer: torch.optim.Optimizer
                 ) -> Optional[Tuple[List[dict], List[int]]]:
    """The saved groups of an optimizer state dict merged, if that is what makes them fit
    ``optimizer``'s groups (same count and sizes); None when they fit already or not at all."""
    saved = state_dict['param_groups']
    if len(saved) == len(optimizer.param_groups):
        return None
    merged, firsts = _merge(saved)
    if [len(g['params']) for g in merged] != [len(g['params']) for g in optimizer.param_groups]:
        return None
    return merged, firsts


def load_per_parameter_groups(optimizer: torch.optim.Optimizer,
                              state_dict: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """A ``load_state_dict`` pre-hook: a state dict saved with the groups unmerged (a run
    started with mmengine's constructor, or with tnt_mm 0.1.0) is merged as the optimizer's
    groups were. Any other mismatch is left to torch's error."""
    found = _merged_like(state_dict, optimizer)
    return None if found is None else dict(state_dict, param_groups=found[0])


def merge_checkpoint_groups(checkpoint: Dict[str, Any], optimizer: torch.optim.Optimizer) -> bool:
    """Make a training checkpoint saved with one optimizer group per parameter fit
    ``optimizer``'s merged groups, in place, so that mmengine's runner resumes it: the
    optimizer state's groups merged (as :func:`load_per_parameter_groups` does), and the
    parameter schedulers' per-group lists (``base_values``, ``_last_value``, ...) cut to one
    entry per merged group. Without this the schedulers would pair the first saved entries
    with the merged groups: wrong lrs wherever groups differ (layer decay). Returns whether
    anything changed."""
    state = checkpoint.get('optimizer')
    if not isinstance(state, dict) or 'param_groups' not in state:
        return False
    found = _merged_like(state, optimizer)
    if found is None:
        return False
    saved_count = len(state['param_groups'])
    state['param_groups'], firsts = found
    schedulers = checkpoint.get('param_schedulers') or []
    if isinstance(schedulers, dict):  # one list per optimizer wrapper name
        schedulers = [s for listed in schedulers.values() for s in listed]
    # mmengine's OptimWrapper shows its schedulers one more group, its base settings, last,
    # where the optimizer has more than one group
    base = [-1] if len(optimizer.param_groups) > 1 else []
    for scheduler in schedulers:
        for key, value in scheduler.items():
            # a list as long as the saved groups is per group: hundreds, no other list is
            if isinstance(value, list) and len(value) in (saved_count, saved_count + 1):
                tail = base if len(value) > saved_count else []
                scheduler[key] = [value[i] for i in firsts + tail]
    return True


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class MergedGroupsOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    """``DefaultOptimWrapperConstructor`` with the parameters that end up with the same
    settings in one group (:func:`merge_param_groups`)::

        optim_wrapper = dict(
            constructor='tnt_mm.MergedGroupsOptimWrapperConstructor',
            optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
            paramwise_cfg=dict(norm_decay_mult=0.0))

    Every rule of ``paramwise_cfg`` applies as in mmengine; each parameter's lr, weight decay
    and other settings are unchanged, and so is training, step for step: bit for bit, but for
    gradient clipping, whose total norm then sums in another order (float rounding). The
    optimizer also resumes from checkpoints saved with one group per parameter
    (:func:`load_per_parameter_groups`; :func:`merge_checkpoint_groups` for the runner's
    schedulers). Subclasses change the per-parameter groups in
    :meth:`adjust_groups`, before they are merged.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   **kwargs) -> None:
        super().add_params(params, module, prefix, **kwargs)
        if prefix:  # the recursion into a submodule; the top-level call finishes the list
            return
        self.adjust_groups(params, module)
        count = len(params)
        params[:] = merge_param_groups(params)
        MMLogger.get_current_instance().info(
            f'{count} parameter tensors in {len(params)} optimizer groups, one per setting')

    def adjust_groups(self, params: List[dict], module: nn.Module) -> None:
        """Change the groups in place before they are merged: one per trainable parameter, in
        mmengine's order (each module's own parameters, then its children's). Nothing here."""

    def __call__(self, model: nn.Module) -> OptimWrapper:
        wrapper = super().__call__(model)
        wrapper.optimizer.register_load_state_dict_pre_hook(load_per_parameter_groups)
        return wrapper
