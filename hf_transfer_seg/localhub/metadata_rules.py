"""The Hub's README.md metadata rules that matter for what hf-transfer-seg pushes, as a pure function.

:func:`check_metadata` returns a list of problems (empty: accepted). The rules follow the Hub's
documented model-card / dataset-card / Space configuration reference:

- ``license``: one of the Hub's license identifiers (``other`` needs ``license_name``);
- ``model-index``: a list of ``{name, results: [{task: {type}, dataset: {type, name}, metrics: [{type, value}]}]}``;
  ``dataset.type`` is a dataset id (``name`` or ``owner/name``), never a path or a ``kind:`` key;
- ``library_name``, ``pipeline_tag``, ``base_model``, ``tags``, ``datasets``: their value types;
- Space configuration: ``sdk`` in gradio/streamlit/docker/static, colours from the Hub's palette,
  ``short_description`` at most 60 characters, ``python_version`` a string, ``app_port`` an integer,
  ``pinned`` a boolean, ``models``/``datasets`` lists of repo ids;
- every number anywhere in the metadata: finite and at most :data:`MAX_NUMBER` in magnitude (``.nan``,
  ``.inf`` and a 5,000-digit integer would be stored, then read back as ``null`` or break JSON readers);
- a model card's metadata must also be readable by huggingface_hub's own ``ModelCardData`` (strict, as
  ``ModelCard.load`` reads it): the client's parser of ``model-index`` is the authority on what it can read.

Why the rules are ours and not only the client's: huggingface_hub validates card metadata by asking the
server (``RepoCard.validate`` posts to ``/api/validate-yaml``, the endpoint this module answers), and its
card data classes check little locally: ``ModelCardData`` needs ``model-index``'s required keys but
accepts a ``dataset.type`` that is a path, a ``value`` of None, a non-boolean ``verified``, any
``license`` string; ``DatasetCardData`` and ``SpaceCardData`` check nothing. The Hub server checks those
(it answers 400 "Invalid metadata"), so the rules below do, and the client's parser runs after them.
"""

from __future__ import annotations

import math
import re
from typing import Any

from hf_transfer_seg.cards.license import HUB_LICENSES as LICENSES  # one list: what the client refuses at start
SPACE_SDKS = ("gradio", "streamlit", "docker", "static")
SPACE_COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SHORT_DESCRIPTION_MAX = 60
MAX_NUMBER = 1.7976931348623157e308  # the largest double: what a JSON reader (the Hub's JavaScript) can hold
_REPO_ID = re.compile(r"^(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*$")


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_str(v) for v in value)


def is_repo_id(value: Any) -> bool:
    return isinstance(value, str) and bool(_REPO_ID.match(value)) and ".." not in value and not value.endswith((".", "-"))


def check_license(meta: dict) -> list[str]:
    problems = []
    value = meta.get("license")
    if value is None:
        return problems
    values = value if isinstance(value, list) else [value]
    for v in values:
        if not isinstance(v, str) or v.lower() not in LICENSES:
            problems.append(f"license: {v!r} is not a Hub license identifier (e.g. apache-2.0, mit, cc-by-4.0, other)")
    if "other" in values and not _is_str(meta.get("license_name")):
        problems.append("license: 'other' needs a license_name (and a license_link)")
    return problems


def check_model_index(value: Any) -> list[str]:
    if not isinstance(value, list) or not value:
        return ["model-index: must be a non-empty list of models"]
    problems = []
    for i, model in enumerate(value):
        where = f"model-index[{i}]"
        if not isinstance(model, dict):
            problems.append(f"{where}: must be a mapping")
            continue
        if not _is_str(model.get("name")):
            problems.append(f"{where}.name: required (a string)")
        results = model.get("results")
        if not isinstance(results, list):
            problems.append(f"{where}.results: required (a list)")
            continue
        for j, result in enumerate(results):
            at = f"{where}.results[{j}]"
            if not isinstance(result, dict):
                problems.append(f"{at}: must be a mapping")
                continue
            task = result.get("task")
            if not isinstance(task, dict) or not _is_str(task.get("type")):
                problems.append(f"{at}.task.type: required (a string such as image-segmentation)")
            dataset = result.get("dataset")
            if not isinstance(dataset, dict):
                problems.append(f"{at}.dataset: required (a mapping with type and name)")
            else:
                if not _is_str(dataset.get("name")):
                    problems.append(f"{at}.dataset.name: required (a string)")
                kind = dataset.get("type")
                if not _is_str(kind):
                    problems.append(f"{at}.dataset.type: required (a dataset id)")
                elif not is_repo_id(kind):
                    problems.append(
                        f"{at}.dataset.type: {kind!r} is not a dataset id (name or owner/name from hf.co/datasets); "
                        "paths, splits and 'kind:' keys belong in dataset.name / dataset.split"
                    )
                for key in ("split", "config", "revision"):
                    if key in dataset and dataset[key] is not None and not isinstance(dataset[key], str):
                        problems.append(f"{at}.dataset.{key}: must be a string")
            metrics = result.get("metrics")
            if not isinstance(metrics, list) or not metrics:
                problems.append(f"{at}.metrics: required (a non-empty list)")
                continue
            for k, metric in enumerate(metrics):
                mat = f"{at}.metrics[{k}]"
                if not isinstance(metric, dict):
                    problems.append(f"{mat}: must be a mapping")
                    continue
                if not _is_str(metric.get("type")):
                    problems.append(f"{mat}.type: required (a string)")
                if "value" not in metric or metric["value"] is None:
                    problems.append(f"{mat}.value: required")
                if "verified" in metric and not isinstance(metric["verified"], bool):
                    problems.append(f"{mat}.verified: must be a boolean")
    return problems


def check_space(meta: dict) -> list[str]:
    problems = []
    sdk = meta.get("sdk")
    if sdk is not None and sdk not in SPACE_SDKS:
        problems.append(f"sdk: {sdk!r} is not one of {', '.join(SPACE_SDKS)}")
    for key in ("colorFrom", "colorTo"):
        if key in meta and meta[key] not in SPACE_COLORS:
            problems.append(f"{key}: {meta[key]!r} is not one of {', '.join(SPACE_COLORS)}")
    for key in ("title", "emoji", "sdk_version", "python_version", "app_file", "short_description", "suggested_hardware"):
        if key in meta and not isinstance(meta[key], str):
            problems.append(f"{key}: must be a string (quote it in YAML), got {type(meta[key]).__name__} {meta[key]!r}")
    short = meta.get("short_description")
    if isinstance(short, str) and len(short) > SHORT_DESCRIPTION_MAX:
        problems.append(f"short_description: {len(short)} characters; the Hub allows at most {SHORT_DESCRIPTION_MAX}")
    if "app_port" in meta and (not isinstance(meta["app_port"], int) or isinstance(meta["app_port"], bool)):
        problems.append("app_port: must be an integer")
    for key in ("pinned", "fullWidth", "disable_embedding"):
        if key in meta and not isinstance(meta[key], bool):
            problems.append(f"{key}: must be true or false")
    for key in ("models", "datasets"):
        if key in meta and not (isinstance(meta[key], list) and all(is_repo_id(v) for v in meta[key])):
            problems.append(f"{key}: must be a list of repo ids")
    return problems


def check_numbers(meta: Any, limit: int = 20) -> list[str]:
    """Non-finite or out-of-range numbers anywhere in ``meta`` (at most ``limit`` reported), with their path."""
    problems: list[str] = []
    stack: list[tuple[Any, str]] = [(meta, "")]
    while stack and len(problems) < limit:
        value, where = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, f"{where}.{k}" if where else str(k)) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(value))
        elif isinstance(value, float) and not math.isfinite(value):
            what = "NaN" if math.isnan(value) else "infinite"
            problems.append(f"{where}: {what}; numbers must be finite and at most {MAX_NUMBER:.4g} in magnitude "
                            "(write null or leave the key out when there is no value)")
        elif isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_NUMBER:
            # bit_length, not str(): str() of an int over 4,300 digits raises ValueError
            problems.append(f"{where}: integer of about {int(value.bit_length() * math.log10(2)) + 1} digits; "
                            "numbers must be at most "
                            f"{MAX_NUMBER:.4g} in magnitude")
    return problems


def check_client_readable(meta: dict) -> list[str]:
    """Problems huggingface_hub's strict ``ModelCardData`` (as ``ModelCard.load`` builds it) finds in ``meta``."""
    from huggingface_hub import ModelCardData

    try:
        ModelCardData(**{str(k): v for k, v in meta.items()}, ignore_metadata_errors=False)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return [f"huggingface_hub cannot read this model card's metadata: {' '.join(str(exc).split())[:300]}"]
    return []


def check_metadata(meta: dict | None, repo_type: str = "model") -> list[str]:
    """Problems the Hub would refuse in a README.md's YAML front matter (``meta``); empty when accepted."""
    if not meta:
        return []
    if not isinstance(meta, dict):
        return ["the YAML front matter must be a mapping"]
    problems = check_license(meta)
    for key in ("library_name", "pipeline_tag"):
        if key in meta and meta[key] is not None and not _is_str(meta[key]):
            problems.append(f"{key}: must be a string")
    if "tags" in meta and meta["tags"] is not None and not _str_list(meta["tags"]):
        problems.append("tags: must be a list of strings")
    if repo_type != "space" and "datasets" in meta and meta["datasets"] is not None:
        values = meta["datasets"] if isinstance(meta["datasets"], list) else [meta["datasets"]]
        bad = [v for v in values if not is_repo_id(v)]
        if bad:
            problems.append(f"datasets: {bad!r} are not dataset ids (name or owner/name)")
    base = meta.get("base_model")
    if base is not None:
        values = base if isinstance(base, list) else [base]
        bad = [v for v in values if not is_repo_id(v)]
        if bad:
            problems.append(f"base_model: {bad!r} are not model repo ids (owner/name)")
    if "model-index" in meta:
        problems += check_model_index(meta["model-index"])
    if repo_type == "space":
        problems += check_space(meta)
    problems += check_numbers(meta)
    if not problems and repo_type == "model":
        problems += check_client_readable(meta)
    return problems
