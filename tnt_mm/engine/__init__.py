from .hooks import SafeCheckpointHook

__all__ = ['SafeCheckpointHook']
