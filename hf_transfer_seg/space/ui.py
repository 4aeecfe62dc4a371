"""The Gradio app: Segment, Leaderboard, Compare and About tabs over a :class:`SegmentationService`.

Every visitor-facing failure is a ``gr.Error`` with a sentence that says what to do; stack traces
stay in the server log. The ``segment`` API endpoint takes one image and returns the overlay, the
mask PNG (same size as the input, pixel value = class index) and the serving revision and sha.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from hf_transfer_seg.errors import HfTransferSegError
from hf_transfer_seg.redact import redact
from hf_transfer_seg.space.inference import blend, class_color, color_map, overlay_value
from hf_transfer_seg.space.selection import LeaderboardRow, Selection
from hf_transfer_seg.space.service import SegmentationService

log = logging.getLogger(__name__)

MAX_FILE_SIZE = "25mb"
CSS = """
.hts-header {padding: 4px 0 0 0}
.hts-notice {border-left: 4px solid #f59e0b; padding: 6px 12px; background: rgba(245, 158, 11, 0.08)}
.hts-mono code {font-size: 0.85em}
"""
LEADERBOARD_HEADERS = ["", "revision", "epoch", "top-1 (pretraining)", "robustness score [95% CI]", "Dice", "commit"]


def _upload_path(payload) -> str | None:
    """The uploaded file's path in Gradio's upload cache, as is (see :func:`uploaded_image`)."""
    if payload is None:
        return None
    if getattr(payload, "path", None):
        return str(payload.path)
    raise gr.Error("send the image as an uploaded file (PNG, JPEG, TIFF, BMP, GIF or WebP)")


def uploaded_image(**kwargs: Any) -> gr.Image:
    """A ``gr.Image`` whose upload reaches our decoder untouched.

    ``gr.Image`` opens every upload with PIL before the event runs, so a non-image file fails with
    PIL's message. Here the component hands over the path of the uploaded file (already checked by
    Gradio to lie in its upload cache); :func:`hf_transfer_seg.space.inputs.read_input_image` then
    decodes it (16-bit, TIFF...) or says clearly why not. (An instance attribute rather than a
    subclass: Gradio writes a ``.pyi`` stub beside the module of every component subclass.)
    """
    image = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"], **kwargs)
    image.preprocess = _upload_path  # type: ignore[method-assign]
    return image


def user_errors(fn: Callable) -> Callable:
    """Turn our errors into ``gr.Error`` messages and anything unexpected into a short sentence."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except HfTransferSegError as exc:
            raise gr.Error(redact(exc), title="Cannot segment this input") from None
        except Exception as exc:  # noqa: BLE001 - the visitor sees a sentence, the log the traceback
            log.exception("unexpected failure in %s", fn.__name__)
            raise gr.Error(
                f"Something went wrong on the server ({type(exc).__name__}); the Space log has the details.",
                title="Unexpected error",
            ) from None

    return wrapper


def _fmt(value: float | None, spec: str = ".3f") -> str:
    return "—" if value is None else format(value, spec)


def _top1(value: float | None) -> str:
    """Validation top-1 as pretraining records it: a percentage (0-100)."""
    return "—" if value is None else f"{value:.1f}%"


def leaderboard_rows(rows: list[LeaderboardRow]) -> list[list[Any]]:
    out = []
    for r in rows:
        score = _fmt(r.score, ".4f")
        if r.score is not None and r.ci_low is not None and r.ci_high is not None:
            score += f" [{r.ci_low:.4f}, {r.ci_high:.4f}]"
        out.append(
            [
                "★ best" if r.is_best else "= tied with best" if r.tied_with_best else "",
                r.revision,
                _fmt(r.epoch, "g"),
                _top1(r.imagenet_top1),
                score,
                _fmt(r.dice),
                (r.sha or "")[:10],
            ]
        )
    return out


def served_markdown(info: dict[str, Any] | None) -> str:
    """One line under the overlay: which revision and commits produced it."""
    if not info:
        return ""
    best = " (the best-scored revision)" if info.get("served_by_best") else ""
    notices = "".join(f"\n\n⚠️ {n}" for n in info.get("notices") or [])
    return (
        f"Served by encoder revision **{info.get('encoder_revision')}**{best}, commit `{(info.get('encoder_commit') or '')[:10]}`, "
        f"through `{info.get('seg_repo')}` at `{(info.get('seg_commit') or '')[:10]}` · "
        f"{info['mask_size'][0]}×{info['mask_size'][1]} px in {info.get('inference_ms')} ms{notices}"
    )


def legend_html(class_names: list[str]) -> str:
    swatch = '<span style="display:inline-block;width:0.9em;height:0.9em;border-radius:2px;background:#{:02x}{:02x}{:02x};margin:0 0.3em 0 0.8em;vertical-align:middle"></span>{}'
    return "".join(swatch.format(*class_color(i), name) for i, name in enumerate(class_names) if i > 0)


def examples_label(source: dict[str, Any] | None, served_target: str | None) -> str:
    """What the example images are, said plainly: from the served model's own target, or from another one."""
    if not source or not source.get("target"):
        return "Examples (images shipped with this Space; which data they come from is not recorded)"
    target, what = str(source["target"]), str(source.get("what") or f"images of {source['target']}")
    if served_target and target == served_target:
        return f"Examples: {what} (the served model's own target)"
    return (f"Examples: {what}. NOT the served model's target ({served_target or 'unknown'}): they show how the "
            "pipeline runs, not how well this model segments its own kind of image")


def preview_value(service: SegmentationService, path: str | None):
    """A PNG preview of an upload the browser cannot show (TIFF, 16-bit, float): the image as the model sees it."""
    if not path:
        return gr.update(value=None, visible=False)
    suffix = Path(str(path)).suffix.lower()
    try:
        image = service.read(path)
    except HfTransferSegError:
        return gr.update(value=None, visible=False)  # segmenting it says why, in one sentence
    if suffix not in (".tif", ".tiff") and image.raw is None:
        return gr.update(value=None, visible=False)  # the browser shows it itself
    return gr.update(value=image.display_rgb(), visible=True, label=f"Preview of the upload ({image.description})")


def header_markdown(sel: Selection) -> str:
    lines = ["# Medical image segmentation with the best-scored pretraining checkpoint"]
    best = (
        f"best revision **{sel.best_revision}** (`{(sel.best_sha or '')[:10]}`, score {_fmt(sel.best_score, '.4f')}; "
        "lower is better)"
        if sel.best_revision
        else "no revision scored yet"
    )
    lines.append(
        f"Encoder repo **`{sel.encoder_repo}`** · robustness target `{sel.target or '—'}` · {best} · "
        f"summary read at `{sel.main_sha[:10]}`"
    )
    if sel.serving:
        m = sel.serving
        dice = f", validation Dice {m.dice:.3f}" if m.dice is not None else ""
        if m.dice is not None and m.trivial is not None:
            name, floor = m.trivial
            dice += (f" (predicting {name} everywhere scores {floor:.3f} on the same images"
                     + ("; this model does not beat it" if m.dice <= floor else "") + ")")
        lines.append(
            f"Serving **`{m.repo_id}`** at `{m.sha[:10]}`, fine-tuned from **{m.encoder_revision or '?'}** "
            f"on `{m.target or '?'}`{dice}."
        )
    if sel.synthetic is not None:
        lines.append(
            "Pretraining data: **synthetic** (a pipeline check, not a medical model)."
            if sel.synthetic
            else "Pretraining data: **real** images."
        )
    lines.append("_A research demo of checkpoint selection, not a medical device: never use it for diagnosis._")
    return "\n\n".join(lines)


def build_blocks(
    service: SegmentationService, *, examples: list[Path], title: str = "Segmentation with the best-scored checkpoint",
    examples_source: dict[str, Any] | None = None,
) -> gr.Blocks:
    sel = service.selection
    serving = sel.serving
    class_names: list[str] = []
    if serving is not None:
        class_names = service.segmenter(serving).class_names

    @user_errors
    def segment(image_path):
        image = service.read(image_path)
        result = service.segment(image)
        for notice in result.info["notices"]:
            gr.Warning(notice)
        overlay = overlay_value(image.display_rgb(), result.mask, result.class_names)
        return overlay, str(result.mask_path), result.info

    @user_errors
    def compare(image_path, other_label):
        if len(service.models) < 2:
            raise gr.Error("Only one segmentation model is known, so there is nothing to compare it with.")
        image = service.read(image_path)
        other = service.model_by_label(other_label) if other_label else sel.others()[0]
        best = service.segment(image)
        alt = service.segment(image, other)
        for notice in image.notices:
            gr.Warning(notice)
        rgb = image.display_rgb()
        agree = float((best.mask == alt.mask).mean())
        text = (
            f"Left: **{best.model.label}**. Right: **{other.label}**. "
            f"The two masks agree on {agree:.1%} of the pixels. {legend_html(best.class_names)}"
        )
        return blend(rgb, best.mask), blend(rgb, alt.mask), text

    # uploads and outputs older than an hour are deleted from Gradio's cache every 30 minutes
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(1800, 3600)) as demo:
        gr.Markdown(header_markdown(sel), elem_classes=["hts-header"])
        if sel.notices:
            gr.Markdown("\n\n".join(f"⚠️ {redact(n)}" for n in sel.notices), elem_classes=["hts-notice"])
        with gr.Tabs():
            with gr.Tab("Segment", id="segment"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=1):
                        image_in = uploaded_image(
                            label="Image (PNG, JPEG, TIFF, BMP, GIF, WebP; 8- or 16-bit, grey or colour)",
                            height=380,
                            elem_id="input-image",
                        )
                        preview_out = gr.Image(label="Preview of the upload", visible=False, interactive=False, height=240,
                                               format="png", elem_id="input-preview")
                        run = gr.Button("Segment", variant="primary", elem_id="segment-button", interactive=serving is not None)
                        if examples:
                            gr.Examples(
                                examples=[[str(p)] for p in examples],
                                inputs=[image_in],
                                label=examples_label(examples_source, serving.target if serving is not None else None),
                                examples_per_page=8,
                            )
                    with gr.Column(scale=1):
                        overlay_out = gr.AnnotatedImage(
                            label="Segmentation (hover the legend to highlight a class)",
                            color_map=color_map(class_names),
                            show_legend=True,
                            height=380,
                            format="png",
                            elem_id="overlay",
                        )
                        served_out = gr.Markdown(elem_id="served-line")
                        mask_out = gr.File(label="Mask PNG (same size as the image; pixel value = class index)", elem_id="mask-file")
                        with gr.Accordion("Serving revision, commit shas and details (JSON)", open=False):
                            info_out = gr.JSON(label="Served by", open=True, elem_id="served-by")
                run.click(
                    segment,
                    inputs=[image_in],
                    outputs=[overlay_out, mask_out, info_out],
                    api_name="segment",
                    concurrency_limit=1,
                    concurrency_id="model",  # one forward at a time on a CPU Space
                )
                info_out.change(served_markdown, inputs=[info_out], outputs=[served_out], api_visibility="private", queue=False)
                image_in.change(functools.partial(preview_value, service), inputs=[image_in], outputs=[preview_out],
                                api_name="preview", concurrency_limit=1, concurrency_id="model")

            with gr.Tab("Leaderboard", id="leaderboard"):
                gr.Markdown(
                    "Every checkpoint revision of the encoder repo. The **robustness score** is label-free "
                    "(contrastive agreement of features under colour jitter, on the target's images): **lower is better**, "
                    "and the revision with the lowest score is served. Dice is the validation Dice of a U-Net "
                    "fine-tuned from that revision, where one was trained."
                    + (f" Score configuration: `{sel.score_config}`." if sel.score_config else "")
                )
                gr.Dataframe(
                    value=leaderboard_rows(sel.rows),
                    headers=LEADERBOARD_HEADERS,
                    interactive=False,
                    wrap=True,
                    elem_id="leaderboard",
                )
                if sel.plot_path is not None:
                    gr.Image(
                        value=str(sel.plot_path),
                        label="Robustness score vs epoch",
                        alt_text=f"Robustness score on {sel.target} against pretraining epoch, best revision starred",
                        interactive=False,
                        height=420,
                        elem_id="score-plot",
                    )
                else:
                    gr.Markdown("_No score-vs-epoch plot in the repo yet._")
                if sel.ranking is not None:
                    from hf_transfer_seg.space.ranking import HEADERS

                    gr.Markdown(
                        f"### Encoders ranked on `{sel.ranking.target}` (results repo `{sel.ranking.repo_id}` @ "
                        f"{sel.ranking.sha[:10]}): the same score, same images and views for every model; RankMe (higher is "
                        "better) and alpha-ReQ gap (lower is better) are label-free alternatives."
                    )
                    gr.Dataframe(value=sel.ranking.rows, headers=HEADERS, interactive=False, wrap=True, elem_id="model-ranking")
                    if sel.ranking.plot_path is not None:
                        gr.Image(value=str(sel.ranking.plot_path), label="Encoders by robustness score", interactive=False, elem_id="ranking-plot")

            with gr.Tab("Compare", id="compare"):
                others = sel.others()
                if not others or serving is None:
                    gr.Markdown(
                        "Fewer than two segmentation models are known for this encoder repo, so there is nothing to compare "
                        "yet. Fine-tune another revision (for example the worst-scored one) with `hf-transfer-seg finetune "
                        "--push-to ...`; its card records the model, and the Space lists it here after a restart."
                    )
                else:
                    gr.Markdown("The same image segmented by the served model (left) and by another revision's model (right).")
                    with gr.Row():
                        cmp_in = uploaded_image(label="Image", height=300)
                        with gr.Column():
                            choice = gr.Dropdown(choices=[m.label for m in others], value=others[0].label, label="Compare with")
                            cmp_run = gr.Button("Compare", variant="primary")
                            if examples:
                                gr.Examples(examples=[[str(p)] for p in examples], inputs=[cmp_in], label="Examples")
                    cmp_text = gr.Markdown(label="Comparison")
                    with gr.Row():
                        left = gr.Image(label=f"served: {serving.encoder_revision}", interactive=False, height=360, format="png")
                        right = gr.Image(label="other revision (chosen above)", interactive=False, height=360, format="png")
                    cmp_run.click(compare, inputs=[cmp_in, choice], outputs=[left, right, cmp_text], api_name="compare", concurrency_limit=1, concurrency_id="model")

            with gr.Tab("About", id="about"):
                gr.Markdown(about_markdown(sel))
    return demo


def about_markdown(sel: Selection) -> str:
    return f"""
### How this Space chooses its model
1. Pretraining pushed every scheduled checkpoint of the encoder as its own revision (`epoch-NNNN` branches) of
   `{sel.encoder_repo}`.
2. Each revision was scored with a **label-free robustness score** on unlabelled target images (Hidy et al.,
   arXiv 2410.18677): features of two colour-jittered views of each image should be closer to each other than
   to another image's. Lower is better; the best revision is recorded in the repo's `main` card.
3. A U-Net was fine-tuned from revisions' encoders; the one fine-tuned from the best revision is served here.

The Space reads `main`'s card once at start (commit `{sel.main_sha[:10]}`) and loads every model **by commit
sha**, so what it serves cannot change under it. Weights are loaded from safetensors only. A revision branch
also gets card-only commits (the score, the Dice); the Space names each revision by one commit, the one the
leaderboard and the score name, after checking that the commit fine-tuning downloaded holds the same
`model.safetensors` (`served_by["encoder_weights"]`; `served_by["commits_note"]` says when they differ in sha).

### API
```python
from gradio_client import Client, handle_file
client = Client("THIS_SPACE_URL")
overlay, mask_png, served_by = client.predict(handle_file("image.png"), api_name="/segment")
```
`mask_png` has the size of the input (after downscaling of very large images, which `served_by["notices"]`
reports); each pixel holds a class index, listed in `served_by["mask_values"]`.
"""
