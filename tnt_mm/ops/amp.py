"""Autocast's state, asked safely of any device type."""
from typing import Optional

import torch


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast computes products in on ``device_type`` where it is on; None where it
    is off or the device type has no autocast (``meta``, where asking raises)."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except RuntimeError:
        pass
    return None
