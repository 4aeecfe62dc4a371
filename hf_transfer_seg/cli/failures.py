"""What the CLI says when a Hub request fails: :func:`hf_transfer_seg.hub.failures.explain` (it lives in the hub
layer so that stages, e.g. the pretraining publisher, can name the cause of a failed push the same way)."""

from hf_transfer_seg.hub.failures import explain

__all__ = ["explain"]
