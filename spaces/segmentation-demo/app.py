"""Hugging Face Space: medical image segmentation with the best-scored pretraining checkpoint.

Configuration comes from ``space_config.json`` beside this file (written by ``hf-transfer-seg space
deploy``) and the environment (``HTS_MODEL_REPO``, ``HTS_TARGET``, ``HTS_SEG_REPO``, ``HF_ENDPOINT``,
``HF_TOKEN``), which wins. The code is the ``hf_transfer_seg`` package: a copy of its source is
deployed beside this file, so the Space runs the very code that trained and scored the models.
"""

import logging
from pathlib import Path

from hf_transfer_seg.redact import install_log_redaction
from hf_transfer_seg.space.server import build_demo, launch_kwargs

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
install_log_redaction()

demo = build_demo(Path(__file__).resolve().parent)

if __name__ == "__main__":
    demo.launch(**launch_kwargs())
