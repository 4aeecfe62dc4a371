"""Create or update the Space repo: the app, its card, its configuration and the project's source.

A Space runs ``app.py`` with the packages of ``requirements.txt``; ``hf_transfer_seg`` is not one of
them, so its source is committed beside ``app.py`` (the same code, not a second implementation).

Configuration travels in ``space_config.json``, committed with the app: the local hub has no Space
variables API, and a file versioned with the app says exactly what each commit of the Space serves on
any Hub. Where the Hub offers Space variables (huggingface.co), the same values are also set as
variables so they show in the Space settings; environment variables win over the file at run time.
No token is ever written: ``HF_TOKEN`` for private repos is a Space *secret* the owner sets.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub import HfApi, SpaceCard
from huggingface_hub.errors import HfHubHTTPError

from hf_transfer_seg import __version__
from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.license import CODE_LICENSE, apply_license, choose_license
from hf_transfer_seg.cards.render import replace_section
from hf_transfer_seg.hub import with_retries
from hf_transfer_seg.redact import redact
from hf_transfer_seg.resources import resource_path
from hf_transfer_seg.space.config import CONFIG_FILE, ENV_VARS, EXAMPLES_MANIFEST, SpaceConfig
from hf_transfer_seg.space.selection import Selection, card_namespace, select

log = logging.getLogger(__name__)

SPACE_NAME = "segmentation-demo"
APP_FILES = ("app.py", "requirements.txt")
EXAMPLE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
PACKAGE = Path(__file__).resolve().parents[1]  # the hf_transfer_seg package whose source is deployed


@dataclass(frozen=True)
class DeployResult:
    space_id: str
    sha: str
    url: str
    files: list[str]
    variables: str  # "set" or why not


def space_dir() -> Path:
    """``spaces/segmentation-demo`` of this installation."""
    return resource_path("spaces") / SPACE_NAME


def _models(config: SpaceConfig, selection: Selection) -> list[str]:
    seen = [config.model_repo] + [m.repo_id for m in selection.seg_models]
    return list(dict.fromkeys(seen))


def pretraining_datasets(selection: Selection) -> list[str]:
    """The pretraining datasets main's checkpoint table records (``top1_dataset``; the top-1 is measured there)."""
    try:
        rows = card_namespace(selection.encoder_repo, selection.main_sha).get(schema.CHECKPOINTS) or []
    except Exception as exc:  # noqa: BLE001 - the deploy goes on; the card then says "not recorded"
        log.warning("could not read the pretraining dataset from %s: %s", selection.encoder_repo, redact(exc))
        return []
    return list(dict.fromkeys(str(r["top1_dataset"]) for r in rows if isinstance(r, dict) and r.get("top1_dataset")))


def deployment_markdown(config: SpaceConfig, selection: Selection, datasets: list[str] | None = None) -> str:
    serving = selection.serving
    lines = [
        "## This deployment",
        "",
        f"- Encoder repo: `{config.model_repo}` (summary card read at commit `{selection.main_sha}` when deployed)",
        f"- Robustness target: `{selection.target or '—'}`; best revision: "
        + (f"`{selection.best_revision}` (`{selection.best_sha or ''}`)" if selection.best_revision else "none scored yet"),
    ]
    if serving:
        lines.append(
            f"- Segmentation model: `{serving.repo_id}` at `{serving.sha[:10]}`, fine-tuned from "
            f"`{serving.encoder_revision}` on `{serving.target}`"
        )
    data = {True: "**synthetic** (a pipeline check, not a medical model)", False: "**real** images", None: "not recorded"}
    lines.append(f"- Pretraining data: {data[selection.synthetic]}")
    named = ", ".join(f"`{d}`" for d in datasets or []) or "not recorded in the checkpoint table"
    lines.append(f"- Pretraining dataset (the leaderboard's top-1 is its validation accuracy there): {named}")
    if serving is not None:
        lines.append(f"- Fine-tuning data: {data[serving.synthetic]}")
    lines.append(
        "- The Space re-reads the cards when it restarts, so it always serves the best revision scored so far, "
        "pinned to commit shas."
    )
    lines.append(f"- Deployed with hf-transfer-seg {__version__}")
    return "\n".join(lines)


def stage(config: SpaceConfig, selection: Selection, folder: Path) -> list[str]:
    """Write the Space's files into ``folder``; return their paths relative to it."""
    source = space_dir()
    for name in APP_FILES:
        shutil.copy2(source / name, folder / name)
    examples = sorted(p for p in (source / "examples").glob("*") if p.suffix.lower() in EXAMPLE_SUFFIXES)
    (folder / "examples").mkdir()
    for p in examples:
        shutil.copy2(p, folder / "examples" / p.name)
    if (source / "examples" / EXAMPLES_MANIFEST).is_file():  # what the examples are (the Space labels them by it)
        shutil.copy2(source / "examples" / EXAMPLES_MANIFEST, folder / "examples" / EXAMPLES_MANIFEST)

    card = SpaceCard.load(source / "README.md")
    card.data.models = _models(config, selection)
    import gradio

    card.data.sdk_version = gradio.__version__
    card.text = replace_section(card.text, "deployment", deployment_markdown(config, selection, pretraining_datasets(selection)))
    card = apply_license(card, choose_license(default=CODE_LICENSE))
    card.save(folder / "README.md")

    (folder / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2) + "\n")

    shutil.copytree(
        PACKAGE,
        folder / "hf_transfer_seg",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".*", "_resources"),
    )
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _set_variables(api: HfApi, space_id: str, config: SpaceConfig) -> str:
    """Mirror the configuration into Space variables where the Hub supports them; say what happened."""
    values = {ENV_VARS[k]: str(v) for k, v in config.to_json().items()}
    try:
        current = api.get_space_variables(space_id)
        for key in set(current) & set(ENV_VARS.values()) - set(values):
            api.delete_space_variable(space_id, key)  # e.g. a seg repo from an earlier deploy
        for key, value in values.items():
            api.add_space_variable(space_id, key, value)
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if status in (404, 405, 501):
            return f"not supported by this Hub (HTTP {status}); {CONFIG_FILE} carries the configuration"
        raise
    return "set"


def deploy(
    space_id: str,
    config: SpaceConfig,
    *,
    private: bool = False,
    set_variables: bool = True,
    api: HfApi | None = None,
) -> DeployResult:
    """Create ``space_id`` (repo type space, Gradio SDK) if needed and commit the app for ``config``.

    The encoder repo's cards are read first, exactly as the Space will read them, so a deploy that
    would give a broken Space (unknown repo or target) fails here with the reason.
    """
    api = api or HfApi()
    selection = select(config, api=api)
    for notice in selection.notices:
        log.warning("%s", notice)
    url = with_retries(
        lambda: api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True),
        what=f"create Space {space_id}",
    )
    with tempfile.TemporaryDirectory(prefix="hts-space-deploy-") as tmp:
        folder = Path(tmp)
        files = stage(config, selection, folder)
        best = selection.best_revision or "unscored"
        info = with_retries(
            lambda: api.upload_folder(
                repo_id=space_id,
                folder_path=folder,
                repo_type="space",
                commit_message=f"Deploy segmentation demo for {config.model_repo} (best {best}, hf-transfer-seg {__version__})",
                delete_patterns=["hf_transfer_seg/**", "examples/**"],  # files removed since the last deploy go too
            ),
            what=f"upload the app to Space {space_id}",
        )
    variables = "skipped"
    if set_variables:
        try:
            variables = _set_variables(api, space_id, config)
        except HfHubHTTPError as exc:
            variables = f"failed ({redact(exc)}); {CONFIG_FILE} carries the configuration"
            log.warning("could not set Space variables of %s: %s", space_id, variables)
    sha = getattr(info, "oid", None) or with_retries(
        lambda: api.repo_info(space_id, repo_type="space").sha, what=f"read Space {space_id}"
    )
    return DeployResult(space_id=space_id, sha=str(sha), url=str(url), files=files, variables=variables)
