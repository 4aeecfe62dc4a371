"""Which checkpoint the Space serves, read from the encoder repo's cards and pinned to commit shas.

- ``main``'s card (read once; its sha is kept): ``hf_transfer_seg.robustness_summary[target]``
  (written by scoring) names the best revision and its sha and holds one row per scored revision
  with its interval; ``hf_transfer_seg.checkpoints`` (pretraining) adds ImageNet top-1.
- Each checkpoint revision's card, read at the commit its branch points to: its
  ``hf_transfer_seg.downstream`` entries (written by fine-tuning) give the Dice and the segmentation
  repo fine-tuned from it (``seg_repo: "owner/name@branch"``); ``training`` adds top-1 if main lacks it.
- Each segmentation repo is pinned to the commit its branch points to now, and its own card at that
  commit (``hf_transfer_seg.base``: encoder repo, revision, sha) says which revision it came from.

Models are loaded only by those shas, never by a branch that could move while the Space runs.

One commit per revision: a revision branch gains card-only commits after its weights are pushed (scoring writes
the score, fine-tuning the Dice), so scoring may have read commit A and fine-tuning, later, commit B of the same
branch. Both hold the same ``model.safetensors`` in the normal flow; :func:`_one_commit_per_revision` checks that
(the file's LFS sha256, or its git blob id, at both commits) and then names the revision by the commit the
leaderboard and the summary name (A). If the weights differ (the branch was pushed to again after scoring), both
commits are kept and a notice says so.
"""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

from hf_transfer_seg.cards import schema
from hf_transfer_seg.cards.data import get_namespace
from hf_transfer_seg.cards.schema import number
from hf_transfer_seg.cards.shape import BadCard
from hf_transfer_seg.errors import ConfigError, HubError, RevisionNotFound
from hf_transfer_seg.hub import branch_sha, card_at_sha, list_revisions, parse_revision_name, with_retries
from hf_transfer_seg.space.config import SpaceConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SegModelRef:
    """A segmentation model repo pinned to a commit, and the encoder revision it was fine-tuned from."""

    repo_id: str
    sha: str
    encoder_revision: str | None = None
    # the encoder revision's commit: the one the leaderboard and scoring name when fine-tuning's download holds the
    # same model.safetensors (see the module doc), else the commit fine-tuning downloaded
    encoder_sha: str | None = None
    encoder_downloaded_sha: str | None = None  # the commit fine-tuning downloaded the encoder from (its card's base.sha)
    encoder_weights_id: str | None = None  # model.safetensors at encoder_sha: "sha256:..." (LFS) or "git-blob:..."
    encoder_repo: str | None = None  # the encoder repo its card names (None: the Space's encoder repo)
    target: str | None = None
    dice: float | None = None
    frozen: bool | None = None
    synthetic: bool | None = None
    # the strongest trivial prediction on the same validation images: (name, Dice), e.g. ("all foreground", 0.873)
    trivial: tuple[str, float] | None = None

    @property
    def label(self) -> str:
        """One line for dropdowns: ``epoch-0020 · org/seg@1a2b3c4d · fine-tuned encoder · Dice 0.812``."""
        parts = [self.encoder_revision or "unknown revision", f"{self.repo_id}@{self.sha[:8]}"]
        if self.frozen is not None:
            parts.append("frozen encoder" if self.frozen else "fine-tuned encoder")
        if self.dice is not None:
            parts.append(f"Dice {self.dice:.3f}")
        return " · ".join(parts)


@dataclass(frozen=True)
class LeaderboardRow:
    revision: str
    epoch: float | None
    sha: str | None
    imagenet_top1: float | None = None
    score: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    dice: float | None = None
    is_best: bool = False
    tied_with_best: bool | None = None  # paired test on per-image values (scoring); None = not tested


@dataclass
class Selection:
    """What the cards of ``encoder_repo`` say the Space should serve."""

    encoder_repo: str
    main_sha: str
    target: str | None
    score_config: str | None
    best_revision: str | None
    best_sha: str | None
    best_score: float | None
    rows: list[LeaderboardRow]
    seg_models: list[SegModelRef]
    serving: SegModelRef | None
    plot_path: Path | None = None
    synthetic: bool | None = None
    notices: list[str] = field(default_factory=list)
    ranking: Any = None  # space.ranking.RankingView of config.results_repo, when one is configured

    def others(self) -> list[SegModelRef]:
        """Segmentation models other than the one served (for the compare tab)."""
        return [m for m in self.seg_models if m != self.serving]


def plot_file(target: str) -> str:
    """Path in the repo of the score-vs-epoch plot of ``target``, as scoring names it."""
    return schema.plot_path(schema.ROBUSTNESS, target)


def card_namespace(repo_id: str, sha: str) -> dict[str, Any]:
    """Our ``hf_transfer_seg`` mapping of the card of ``repo_id`` at commit ``sha`` ({} without a card)."""
    return get_namespace(card_at_sha(repo_id, sha).data)


def _usable_namespace(repo_id: str, sha: str) -> dict[str, Any] | BadCard:
    """:func:`card_namespace`, or the :class:`BadCard` saying why the card at ``sha`` cannot be used."""
    try:
        return card_namespace(repo_id, sha)
    except BadCard as exc:
        return exc


def _choose_target(summary: dict[str, Any], wanted: str | None, repo_id: str) -> str | None:
    if wanted:
        if summary and wanted not in summary:
            raise ConfigError(
                f"{repo_id} has no robustness scores for target {wanted!r}; scored targets: {', '.join(sorted(summary))}. "
                "Set HTS_TARGET (or --target) to one of them, or score that target with `hf-transfer-seg score`"
            )
        return wanted
    if len(summary) > 1:
        raise ConfigError(
            f"{repo_id} has robustness scores for several targets ({', '.join(sorted(summary))}); "
            "choose one with HTS_TARGET (or --target)"
        )
    return next(iter(summary), None)


def _split_repo_ref(value: str) -> tuple[str, str]:
    """``owner/name@branch`` -> (``owner/name``, ``branch``); no ``@`` means ``main``."""
    repo, _, revision = str(value).partition("@")
    return repo, revision or "main"


def _downstream_refs(revision: str, revision_sha: str, downstream: dict[str, Any]) -> list[tuple[SegModelRef, str]]:
    """(unpinned model, its branch) for each downstream entry of one revision card that names a seg repo."""
    out = []
    for key, entry in sorted(downstream.items()):
        if not isinstance(entry, dict) or not entry.get("seg_repo"):
            continue
        repo, branch = _split_repo_ref(entry["seg_repo"])
        target = (entry.get("target") or {}).get("key") if isinstance(entry.get("target"), dict) else None
        ref = SegModelRef(
            repo_id=repo,
            sha="",
            encoder_revision=revision,
            encoder_sha=revision_sha,
            target=target or key.split("@")[0],
            dice=number(entry.get("dice_mean")),
            frozen=entry.get("frozen"),
            synthetic=entry.get("synthetic"),
        )
        out.append((ref, branch))
    return out


def _pin(ref: SegModelRef, branch: str, api: HfApi, notices: list[str]) -> SegModelRef | None:
    """``ref`` pinned to the current commit of ``branch``, with the facts of its own card at that commit."""
    try:
        sha = branch_sha(ref.repo_id, branch, api=api)
    except (RevisionNotFound, RepositoryNotFoundError, HubError) as exc:
        notices.append(f"segmentation repo {ref.repo_id}@{branch} is unavailable ({type(exc).__name__}); skipped")
        return None
    ours = _usable_namespace(ref.repo_id, sha)
    if isinstance(ours, BadCard):
        notices.append(f"segmentation repo {ref.repo_id}@{branch} skipped: {ours}")
        return None
    base = ours.get(schema.BASE) or {}
    metrics = ours.get(schema.METRICS) or {}
    target = ours.get(schema.TARGET) or {}
    card_revision = base.get("revision")
    if ref.encoder_revision and card_revision and card_revision != ref.encoder_revision:
        notices.append(
            f"{ref.repo_id}@{sha[:10]} was fine-tuned from {card_revision}, not {ref.encoder_revision} as the encoder "
            "card says (the repo was pushed to again); it is listed under its own card's revision"
        )
    return replace(
        ref,
        sha=sha,
        trivial=strongest_trivial(metrics.get("baselines")),
        encoder_revision=card_revision or ref.encoder_revision,
        encoder_sha=base.get("sha") or ref.encoder_sha,
        encoder_downloaded_sha=base.get("sha") or ref.encoder_sha,
        encoder_repo=base.get("repo") or ref.encoder_repo,
        target=target.get("key") if isinstance(target, dict) and target.get("key") else ref.target,
        dice=number(metrics.get("dice_mean")) if ref.dice is None else ref.dice,
        frozen=(ours.get("recipe") or {}).get("frozen", ref.frozen),
        synthetic=ours.get("synthetic", ref.synthetic),
    )


def strongest_trivial(baselines: Any) -> tuple[str, float] | None:
    """(name, Dice) of the best constant prediction recorded beside a model's validation Dice, None when unrecorded."""
    from hf_transfer_seg.metrics.baselines import best_baseline

    name, value = best_baseline(baselines)
    return None if value is None else (name.replace("_", " "), value)


def weights_id(repo: str, sha: str, api: HfApi) -> str | None:
    """Identity of ``model.safetensors`` at commit ``sha``: its LFS sha256 when the Hub stores it in LFS, else its
    git blob id (both name the content; None when the commit has no such file)."""
    from hf_transfer_seg.models.checkpoint import WEIGHTS_NAME

    infos = with_retries(lambda: api.get_paths_info(repo, [WEIGHTS_NAME], revision=sha), what=f"paths-info {repo}@{sha[:10]}")
    for info in infos:
        if getattr(info, "path", None) == WEIGHTS_NAME:
            lfs = getattr(info, "lfs", None)
            return f"sha256:{lfs.sha256}" if lfs is not None else f"git-blob:{info.blob_id}"
    return None


def _one_commit_per_revision(
    models: list[SegModelRef], repo: str, rows: list[LeaderboardRow], api: HfApi, notices: list[str]
) -> list[SegModelRef]:
    """Each model's encoder commit replaced by the revision's leaderboard commit when both hold the same weights."""
    listed = {r.revision: r.sha for r in rows if r.sha}
    ids: dict[str, str | None] = {}

    def ident(sha: str) -> str | None:
        if sha not in ids:
            try:
                ids[sha] = weights_id(repo, sha, api)
            except (HubError, RevisionNotFound, RepositoryNotFoundError) as exc:
                log.info("could not read model.safetensors of %s@%s: %s", repo, sha[:10], exc)
                ids[sha] = None
        return ids[sha]

    out = []
    for m in models:
        downloaded, commit = m.encoder_downloaded_sha, listed.get(m.encoder_revision or "")
        if not downloaded or m.encoder_repo not in (None, repo):
            out.append(m)
            continue
        mine = ident(downloaded)
        if commit and commit != downloaded and mine is not None:
            if ident(commit) == mine:
                m = replace(m, encoder_sha=commit)
            else:
                notices.append(
                    f"{m.repo_id} was fine-tuned from {m.encoder_revision} at {downloaded[:10]}, whose model.safetensors "
                    f"differs from the one at {commit[:10]}, the commit that was scored (the branch was pushed to again)"
                )
        out.append(replace(m, encoder_weights_id=mine))
    return out


def _leaderboard(
    heads: dict[str, Any], cards: dict[str, dict], checkpoints: dict[str, dict], scored: dict[str, dict], best: str | None
) -> list[LeaderboardRow]:
    """One row per revision: branch heads, pretraining's checkpoint list and scoring's rows, joined by name."""
    rows = []
    names = set(heads) | set(checkpoints) | set(scored)
    for name in sorted(names, key=lambda n: (parse_revision_name(n) is None, parse_revision_name(n) or 0.0, n)):
        c, s, card = checkpoints.get(name, {}), scored.get(name, {}), cards.get(name) or {}
        training = card.get(schema.TRAINING) or {}
        top1 = next((v for v in (c.get("top1"), c.get("imagenet_top1"), s.get("top1"), s.get("imagenet_top1"), training.get("top1"),
                                 training.get("imagenet_top1")) if v is not None), None)
        dice = [number(e.get("dice_mean")) for e in (card.get(schema.DOWNSTREAM) or {}).values() if isinstance(e, dict)]
        epoch = number(s.get("epoch", c.get("epoch")))
        rows.append(
            LeaderboardRow(
                revision=name,
                epoch=parse_revision_name(name) if epoch is None else epoch,
                sha=s.get("sha") or c.get("sha") or (heads[name].sha if name in heads else None),
                imagenet_top1=number(top1),
                score=number(s.get("score")),
                ci_low=number(s.get("ci_low")),
                ci_high=number(s.get("ci_high")),
                dice=max((d for d in dice if d is not None), default=None),
                is_best=name == best,
                tied_with_best=s.get("tied_with_best"),
            )
        )
    return rows


def _plot(repo: str, main_sha: str, target: str, notices: list[str]) -> Path | None:
    try:
        return Path(
            with_retries(lambda: hf_hub_download(repo, plot_file(target), revision=main_sha), what=f"download {plot_file(target)}")
        )
    except EntryNotFoundError:
        notices.append(f"{repo} has no {plot_file(target)} yet (scoring writes it)")
        return None


def select(config: SpaceConfig, *, api: HfApi | None = None) -> Selection:
    """Read the cards of ``config.model_repo`` and decide what to serve."""
    api = api or HfApi()
    repo = config.model_repo
    try:
        main_sha = branch_sha(repo, "main", api=api)
        revisions = list_revisions(repo, api=api)
    except RepositoryNotFoundError as exc:
        raise ConfigError(
            f"encoder repo {repo!r} was not found on {api.endpoint}: check HTS_MODEL_REPO / --model-repo, "
            "HF_ENDPOINT, and that HF_TOKEN can read it if it is private"
        ) from exc
    ours = card_namespace(repo, main_sha)
    summary = ours.get(schema.ROBUSTNESS_SUMMARY) or {}
    notices: list[str] = []
    target = _choose_target(summary, config.target, repo)
    entry = summary.get(target, {}) if target else {}
    if not entry:
        notices.append(
            f"{repo} has no robustness scores{f' for {target}' if target else ''} yet, so its revisions are listed "
            f"unranked. Run `hf-transfer-seg score --repo-id {repo} --target TARGET` to rank them."
        )
    best_revision = entry.get("best_revision")

    # Every checkpoint revision's card, read at the commit its branch points to (in parallel: one request each).
    heads = {r.name: r for r in revisions}
    with ThreadPoolExecutor(max_workers=8) as pool:
        cards = dict(zip(heads, pool.map(lambda r: _usable_namespace(repo, r.sha), revisions)))
    for name, card in list(cards.items()):
        if isinstance(card, BadCard):  # an untrusted sidecar: that revision is skipped, and the Space says why
            notices.append(f"revision {name} skipped: {card}")
            del cards[name], heads[name]
    checkpoints = {c["revision"]: c for c in ours.get(schema.CHECKPOINTS) or [] if isinstance(c, dict) and c.get("revision")}
    scored = {r["revision"]: r for r in entry.get("rows") or [] if isinstance(r, dict) and r.get("revision")}
    rows = _leaderboard(heads, cards, checkpoints, scored, best_revision)

    # Models the revision cards name, and first, when configured, the explicit one (served if it can be pinned).
    unpinned = [pair for name, card in cards.items() for pair in _downstream_refs(name, heads[name].sha, card.get(schema.DOWNSTREAM) or {})]
    explicit = None
    if config.seg_repo:
        explicit = _pin(SegModelRef(repo_id=config.seg_repo, sha=""), config.seg_revision or "main", api, notices)
        unpinned = [(ref, branch) for ref, branch in unpinned if ref.repo_id != config.seg_repo]
    seg_models = [m for m in (_pin(ref, branch, api, notices) for ref, branch in unpinned) if m is not None]
    if explicit is not None:
        seg_models.insert(0, explicit)
    seg_models = _one_commit_per_revision(seg_models, repo, rows, api, notices)
    if explicit is not None:
        explicit = seg_models[0]
    serving = _choose_serving(seg_models, best_revision, rows, explicit=explicit is not None, notices=notices, repo=repo)

    flags = [((cards.get(n) or {}).get(schema.TRAINING) or {}).get("synthetic") for n in heads]
    flags = [bool(f) for f in flags + [r.get("synthetic") for r in scored.values()] if f is not None]
    return Selection(
        encoder_repo=repo,
        main_sha=main_sha,
        target=target,
        score_config=entry.get("config"),
        best_revision=best_revision,
        best_sha=entry.get("best_sha"),
        best_score=number(entry.get("best_score")),
        rows=rows,
        seg_models=seg_models,
        serving=serving,
        plot_path=_plot(repo, main_sha, target, notices) if target and entry else None,
        synthetic=any(flags) if flags else None,
        notices=notices,
        ranking=_ranking(config, target, notices),
    )


def _ranking(config: SpaceConfig, target: str | None, notices: list[str]):
    if not config.results_repo:
        return None
    from hf_transfer_seg.space.ranking import load_ranking

    return load_ranking(config.results_repo, target, notices)


def _choose_serving(
    seg_models: list[SegModelRef],
    best_revision: str | None,
    rows: list[LeaderboardRow],
    *,
    explicit: bool,
    notices: list[str],
    repo: str,
) -> SegModelRef | None:
    if not seg_models:
        notices.append(
            f"No segmentation model fine-tuned from {repo} is known, so there is nothing to serve yet: fine-tune one with "
            f"`hf-transfer-seg finetune --encoder-repo {repo} --revision {best_revision or 'REVISION'} --push-to OWNER/NAME` "
            "or point HTS_SEG_REPO at one."
        )
        return None
    if explicit:
        chosen = seg_models[0]
        if best_revision and chosen.encoder_revision and chosen.encoder_revision != best_revision:
            notices.append(
                f"HTS_SEG_REPO {chosen.repo_id} was fine-tuned from {chosen.encoder_revision}, not from the best-scored "
                f"revision {best_revision}."
            )
        return chosen
    from_best = [m for m in seg_models if best_revision and m.encoder_revision == best_revision]
    if from_best:
        return max(from_best, key=lambda m: (m.dice is not None, m.dice or 0.0))
    # No model from the best revision: the best-ranked revision that has one.
    rank = {r.revision: (r.score is None, r.score or 0.0) for r in rows}
    chosen = min(seg_models, key=lambda m: rank.get(m.encoder_revision or "", (True, math.inf)))
    if best_revision:
        notices.append(
            f"No segmentation model was fine-tuned from the best-scored revision {best_revision}; serving the one from "
            f"{chosen.encoder_revision} instead."
        )
    return chosen
