"""The Gradio Space: segmentation with the U-Net fine-tuned from the best-scored checkpoint revision.

- :mod:`~hf_transfer_seg.space.config`: what to serve (``space_config.json`` < ``HTS_*`` environment < flags);
- :mod:`~hf_transfer_seg.space.selection`: reads the encoder repo's cards, pins every model to a commit sha;
- :mod:`~hf_transfer_seg.space.inputs`: decoding uploads, size cap, downscaling with a notice;
- :mod:`~hf_transfer_seg.space.inference`: whole-image forward, overlays, mask PNGs;
- :mod:`~hf_transfer_seg.space.service` / :mod:`~hf_transfer_seg.space.ui` / :mod:`~hf_transfer_seg.space.server`:
  the app; ``spaces/segmentation-demo/app.py`` calls :func:`~hf_transfer_seg.space.server.build_demo`;
- :mod:`~hf_transfer_seg.space.deploy`: creates or updates the Space repo (``hf-transfer-seg space deploy``).
"""
