"""Build and launch the Space: configuration -> selection -> service -> Gradio app.

``spaces/segmentation-demo/app.py`` is three lines around :func:`build_demo`; ``hf-transfer-seg
space run`` and the tests call the same function, so the Space runs exactly this code.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from hf_transfer_seg.errors import HfTransferSegError
from hf_transfer_seg.redact import redact
from hf_transfer_seg.space.config import EXAMPLES_MANIFEST, SpaceConfig
from hf_transfer_seg.space.inference import Segmenter
from hf_transfer_seg.space.selection import select
from hf_transfer_seg.space.service import SegmentationService
from hf_transfer_seg.space.ui import CSS, MAX_FILE_SIZE, build_blocks

log = logging.getLogger(__name__)

EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def load_segmenter(repo_id: str, sha: str) -> Segmenter:
    """The fine-tuned model of ``repo_id`` at commit ``sha`` (fine-tuning's loader: safetensors only)."""
    from hf_transfer_seg.models.segmentation import load_segmentation_model

    model = load_segmentation_model(repo_id, revision=sha)
    names = [str(n) for n in model.config.get("class_names") or []]
    if len(names) != model.num_classes:
        names = ["background"] + [f"class {i}" for i in range(1, model.num_classes)]
    return Segmenter(model=model, class_names=names, resize_longest=model.config.get("resize_longest"),
                     intensity=model.config.get("intensity"))


def example_files(app_dir: str | Path | None) -> list[Path]:
    folder = Path(app_dir) / "examples" if app_dir else None
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in EXAMPLE_SUFFIXES)


def example_source(app_dir: str | Path | None) -> dict[str, Any] | None:
    """What the example images are (``examples/examples.json``: target key and a description), None when unrecorded."""
    import json

    path = Path(app_dir) / "examples" / EXAMPLES_MANIFEST if app_dir else None
    if path is None or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        log.warning("cannot read %s (%s); the examples are labelled as of unknown source", path.name, exc)
        return None
    return data if isinstance(data, dict) else None


def build_service(config: SpaceConfig, *, loader=load_segmenter) -> SegmentationService:
    import hf_transfer_seg

    # (the folder holding the package: log redaction would mask the package name itself)
    where = Path(hf_transfer_seg.__file__).resolve().parent.parent
    log.info("project code version %s loaded from folder %s", hf_transfer_seg.__version__, where)
    selection = select(config)
    for notice in selection.notices:
        log.warning("%s", notice)
    service = SegmentationService(config, selection, loader)
    service.warm_up()
    serving = selection.serving
    if serving is not None:
        log.info(
            "serving %s@%s fine-tuned from %s@%s (best: %s)",
            serving.repo_id, serving.sha[:10], selection.encoder_repo, serving.encoder_revision, selection.best_revision,
        )  # fmt: skip
    return service


def error_blocks(message: str) -> gr.Blocks:
    """What the Space shows when it cannot start: the reason and the fix, no traceback."""
    with gr.Blocks(title="hf-transfer-seg: not configured") as demo:
        gr.Markdown(
            "# The segmentation demo could not start\n\n"
            f"{message}\n\n"
            "Configure it with the environment variables `HTS_MODEL_REPO` (encoder repo), `HTS_TARGET` (robustness "
            "target), optionally `HTS_SEG_REPO`, and `HF_ENDPOINT` / `HF_TOKEN` for another Hub or private repos; "
            "or deploy it with `hf-transfer-seg space deploy`, which writes them into `space_config.json`."
        )
    return demo


def create_demo(config: SpaceConfig, app_dir: str | Path | None = None, *, loader=load_segmenter) -> gr.Blocks:
    """The app for ``config``; raises :class:`HfTransferSegError` when it cannot be served."""
    service = build_service(config, loader=loader)
    demo = build_blocks(service, examples=example_files(app_dir), examples_source=example_source(app_dir))
    demo.hts_service = service  # type: ignore[attr-defined]  # for tests and the benchmark
    return demo


def build_demo(app_dir: str | Path | None = None, *, loader=load_segmenter, **overrides: Any) -> gr.Blocks:
    """The Space's app: configuration from ``app_dir/space_config.json``, the environment and ``overrides``.

    A Space that cannot start still comes up, with a page that says why and how to fix it.
    """
    try:
        return create_demo(SpaceConfig.load(app_dir, **overrides), app_dir, loader=loader)
    except HfTransferSegError as exc:
        log.error("cannot start the demo: %s", redact(exc))
        return error_blocks(redact(exc))


def launch_kwargs(**overrides: Any) -> dict[str, Any]:
    """``demo.launch`` arguments: nothing served beyond the app's own files and Gradio's temp outputs."""
    kwargs: dict[str, Any] = dict(
        allowed_paths=[],
        max_file_size=MAX_FILE_SIZE,
        show_error=False,  # unexpected exceptions reach visitors as one sentence (ui.user_errors), not a trace
        footer_links=["api"],
        theme=gr.themes.Soft(primary_hue="teal", secondary_hue="slate"),
        css=CSS,
    )
    kwargs.update(overrides)
    return kwargs
