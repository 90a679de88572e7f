from .trans2seg_head import Trans2SegHead

__all__ = ['Trans2SegHead']
