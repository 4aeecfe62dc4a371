"""A local server speaking the Hugging Face Hub HTTP API, backed by bare git repositories.

The genuine ``huggingface_hub`` client (``HfApi``, ``hf_hub_download``, ``snapshot_download``, the
``hf`` CLI), timm and transformers work against it unchanged with ``HF_ENDPOINT`` pointing at it:
for air-gapped use and for the tests.

    from hf_transfer_seg.localhub import local_hub

    with local_hub("hub-root") as endpoint:   # "http://127.0.0.1:PORT"
        ...

From the shell: ``hf-transfer-seg hub serve --root hub-root --port 8765``.
"""

from hf_transfer_seg.localhub.server import local_hub, serve

__all__ = ["local_hub", "serve"]
