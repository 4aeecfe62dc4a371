"""Target sources: one module per data format, each turning a location into labelled or unlabelled samples.

The registry (:mod:`hf_transfer_seg.data.registry`) picks the source from a parsed target spec.
"""
