"""Deliver checkpoint revisions to the Hub without making training wait, and without losing or repeating any.

Layout of ``--output-dir``::

    pending/<revision>/     complete checkpoint folders not yet confirmed on the Hub (written atomically)
    checkpoints/<revision>/ checkpoints confirmed on the Hub (or kept local when a run has no --repo-id)
    pushed/<revision>.json  the ledger: written only after a push is confirmed (repo, branch, commit sha)
    locks/<revision>.lock   held while one process pushes that revision

A push = the folder to branch ``epoch-NNNN`` (``hub.push_revision``), then main's summary card (and, when this
is the newest checkpoint, its weights) in one commit, then the ledger entry, then the folder moves to
``checkpoints/``. A crash anywhere leaves the folder in ``pending/``: ``push-pending`` (run automatically at the
start of every run) finishes the job; a repeated upload of an unchanged folder makes no new commit.

Each push commits on a staging branch first (``hub.push_revision``), named with this output dir's run identity
(``<output-dir>/RUN_ID``, :func:`~hf_transfer_seg.pretrain.state.run_identity`). A kill between the staging commit
and the branch's deletion leaves it behind; the next start (``--resume``) and ``push-pending`` remove the staging
branches of THIS run only (:func:`remove_leftover_staging`), never another run's, never one being pushed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Iterator

from hf_transfer_seg.cards import get_namespace, schema
from hf_transfer_seg.disk import disk_full_is_clean
from hf_transfer_seg.errors import HfTransferSegError, HubError
from hf_transfer_seg.hub import parse_revision_name, push_revision, update_card
from hf_transfer_seg.hub.failures import cause, is_refusal
from hf_transfer_seg.pretrain import card as cards
from hf_transfer_seg.pretrain.state import run_identity
from hf_transfer_seg.redact import redact
from hf_transfer_seg.safe_yaml import load_card

log = logging.getLogger(__name__)
_STOP = object()


def pending_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "pending"


def checkpoints_dir(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def ledger_path(output_dir: str | Path, revision: str) -> Path:
    return Path(output_dir) / "pushed" / f"{revision}.json"


def read_ledger(output_dir: str | Path, repo_id: str | None = None) -> dict[str, dict]:
    """Confirmed pushes (revision -> entry), optionally only those to ``repo_id``."""
    folder = Path(output_dir) / "pushed"
    entries = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            entry = json.loads(path.read_text())
        except json.JSONDecodeError:
            continue
        if repo_id is None or entry.get("repo_id") == repo_id:
            entries[entry["revision"]] = entry
    return entries


def list_pending(output_dir: str | Path) -> list[str]:
    """Revisions waiting in ``pending/``, in epoch order."""
    folder = pending_dir(output_dir)
    names = [p.name for p in folder.iterdir() if p.is_dir() and parse_revision_name(p.name) is not None] if folder.is_dir() else []
    return sorted(names, key=lambda n: parse_revision_name(n) or 0.0)


def discard_partial(output_dir: str | Path, revision: str) -> None:
    """Remove what a failed :func:`stage_checkpoint` of ``revision`` by this process left behind (never a staged folder)."""
    shutil.rmtree(pending_dir(output_dir) / f".tmp-{revision}-{os.getpid()}", ignore_errors=True)


def stage_checkpoint(output_dir: str | Path, revision: str, build) -> Path:
    """Write a checkpoint folder with ``build(tmp_folder)`` and publish it atomically as ``pending/<revision>``."""
    pending = pending_dir(output_dir)
    pending.mkdir(parents=True, exist_ok=True)
    tmp = pending / f".tmp-{revision}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with disk_full_is_clean(output_dir, f"checkpoint {revision}", partial=tmp):
        build(tmp)
    final = pending / revision
    if final.exists():  # a resumed run recomputed a checkpoint that was never confirmed: the new one wins
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


@contextlib.contextmanager
def _revision_lock(output_dir: str | Path, revision: str) -> Iterator[bool]:
    """Yield True when this process holds the push lock of ``revision`` (released even on SIGKILL)."""
    folder = Path(output_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{revision}.lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _finish(output_dir: Path, revision: str) -> None:
    """Move a confirmed checkpoint from pending/ to checkpoints/."""
    source = pending_dir(output_dir) / revision
    if not source.is_dir():
        return
    target = checkpoints_dir(output_dir) / revision
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(source, target)


def push_one(output_dir: str | Path, revision: str, repo_id: str) -> dict | None:
    """Deliver ``pending/<revision>`` to ``repo_id``; return its ledger entry (None if another process is on it)."""
    output_dir = Path(output_dir)
    done = read_ledger(output_dir, repo_id).get(revision)
    if done is not None:  # confirmed earlier; only the move to checkpoints/ was interrupted
        _finish(output_dir, revision)
        return done
    with _revision_lock(output_dir, revision) as held:
        if not held:
            log.info("%s is being pushed by another process; leaving it to that one", revision)
            return None
        folder = pending_dir(output_dir) / revision
        readme = folder / "README.md"
        card = load_card(readme, where=str(readme))
        facts = dict(get_namespace(card.data, schema.TRAINING, {}) or {})
        if cards.REPO_NAME_PLACEHOLDER in readme.read_text():  # written by a run without --repo-id
            readme.write_text(cards.set_repo_id(readme.read_text(), repo_id))
        epoch = parse_revision_name(revision)
        info = push_revision(
            folder, repo_id, epoch, commit_message=f"Checkpoint {revision} (epoch {epoch:g}, step {facts.get('global_step')})",
            owner=run_identity(output_dir),
        )
        pushed = read_ledger(output_dir, repo_id)
        latest = all(epoch >= float(e["epoch"]) for e in pushed.values())
        extra = {name: (folder / name).read_bytes() for name in ("config.json", "model.safetensors")} if latest else None
        row = cards.summary_row(revision, info.sha, facts)
        main_sha = update_card(
            repo_id,
            "main",
            lambda c: cards.edit_summary(c, row, facts, repo_id, latest=latest),
            commit_message=f"Summary: add {revision}" + (" (latest weights)" if latest else ""),
            extra_files=extra,
        )
        entry = {
            "repo_id": repo_id,
            "revision": revision,
            "epoch": epoch,
            "sha": info.sha,
            "main_sha": main_sha,
            "pushed_by": {"pid": os.getpid(), "rank": int(os.environ.get("RANK", "0"))},
            "pushed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        path = ledger_path(output_dir, revision)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entry, indent=2))
        os.replace(tmp, path)
        _finish(output_dir, revision)
        log.info("pushed %s to %s@%s (%s)", folder.name, repo_id, revision, info.sha[:10])
        return entry


def remove_leftover_staging(output_dir: str | Path, repo_id: str) -> list[str]:
    """Delete the staging branches this run (``<output-dir>/RUN_ID``) left in ``repo_id``; return their names.

    A branch is skipped while another process holds the push lock of the revision it stages (that push is in
    flight). Never raises: a Hub that cannot be reached leaves them for the next start.
    """
    from huggingface_hub import HfApi

    from hf_transfer_seg.hub.revisions import staging_branches

    owner = run_identity(output_dir)
    api, removed = HfApi(), []
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        found = staging_branches(repo_id, owner, api=api)
    except RepositoryNotFoundError:  # a new repo (created by the first push): nothing to clean
        return removed
    except Exception as exc:  # noqa: BLE001 - a clean-up never stops training
        log.warning("could not list the staging branches of %s (%s); they are removed at the next start", repo_id, redact(exc))
        return removed
    for branch, revision in sorted(found.items()):
        with _revision_lock(output_dir, revision) as held:
            if not held:
                log.info("%s: a push of %s is in flight; leaving its staging branch", branch, revision)
                continue
            try:
                api.delete_branch(repo_id, branch=branch)
                removed.append(branch)
            except Exception as exc:  # noqa: BLE001
                log.warning("could not delete leftover staging branch %s of %s (%s)", branch, repo_id, redact(exc))
    if removed:
        log.info("removed %d staging branch(es) this run left in %s after an interrupted push: %s",
                 len(removed), repo_id, ", ".join(removed))
    return removed


def push_with_retries(output_dir: str | Path, revision: str, repo_id: str, *, attempts: int, delay: float) -> dict | None:
    """``push_one`` with rounds of back-off; raises the last error when every round failed, or at once when the
    Hub refused the push (a 4xx answer: the same push would be refused again)."""
    for attempt in range(1, attempts + 1):
        try:
            return push_one(output_dir, revision, repo_id)
        except (HfTransferSegError, OSError, Exception) as exc:  # noqa: BLE001 - the checkpoint stays pending
            if attempt == attempts or is_refusal(exc):
                raise
            wait = delay * 2 ** (attempt - 1)
            log.warning("push of %s failed (%s); round %d/%d, next in %.0fs", revision, redact(exc), attempt, attempts, wait)
            time.sleep(wait)
    return None


def push_pending(output_dir: str | Path, repo_id: str, *, attempts: int = 3, delay: float = 30.0,
                 causes: dict[str, str] | None = None) -> tuple[list[str], list[str]]:
    """Push every pending checkpoint of ``output_dir`` in epoch order; return (pushed, still pending); the cause
    of each failure goes into ``causes`` (revision -> one line). First removes the staging branches an
    interrupted push of this run left behind."""
    remove_leftover_staging(output_dir, repo_id)
    pushed, failed = [], []
    for revision in list_pending(output_dir):
        try:
            if push_with_retries(output_dir, revision, repo_id, attempts=attempts, delay=delay) is not None:
                pushed.append(revision)
        except Exception as exc:  # noqa: BLE001 - report and go on with the next one
            why = cause(exc)
            log.error("could not push %s: %s; it stays in %s", revision, why, pending_dir(output_dir))
            log.debug("push of %s failed", revision, exc_info=True)
            failed.append(revision)
            if causes is not None:
                causes[revision] = why
    return pushed, failed


def relicense_pending(output_dir: str | Path, setting: str) -> list[str]:
    """Set the license of every pending checkpoint's card to ``setting`` (``ID`` or ``other:NAME``, checked);
    return the revisions changed. For checkpoints the Hub refused because of the license they were staged with."""
    from hf_transfer_seg.cards.license import apply_license, choose_license

    chosen = choose_license(setting)
    changed = []
    for revision in list_pending(output_dir):
        readme = pending_dir(output_dir) / revision / "README.md"
        if not readme.is_file():
            continue
        card = apply_license(load_card(readme, where=str(readme)), chosen)
        tmp = readme.with_suffix(".tmp")
        card.save(tmp)
        os.replace(tmp, readme)
        changed.append(revision)
    return changed


CARD_FAILED = "its card could not be built"  # the cause of a checkpoint staged with a fallback card (pretrain.loop)


def card_failure(said: str) -> str:
    """The cause recorded for a checkpoint whose card failed (``said``: the error, through ``public_text``)."""
    return f"{CARD_FAILED} ({said}); it is staged with a minimal card that says so"


def delivery_hint(output_dir: str | Path, repo_id: str | None, causes: dict[str, str]) -> str:
    """The exact command that delivers what is pending, and what to fix first when the Hub refused something."""
    command = f"hf-transfer-seg push-pending --output-dir {output_dir} --repo-id {repo_id or '<namespace/name>'}"
    refused = " ".join(c for c in causes.values() if not c.startswith(CARD_FAILED))  # the Hub's answers only
    if "license" in refused.lower():
        return (f"choose a license the Hub accepts and deliver them with `{command} --license ID` (it rewrites "
                "the license of their cards)")
    if "HTTP 4" in refused:
        return f"fix what the Hub refused, then deliver them with `{command}`"
    if "cannot reach the Hub" in refused or "HTTP 5" in refused:
        return f"deliver them with `{command}` once the Hub answers again"
    return f"deliver them with `{command}`"


class Publisher:
    """A background thread that pushes staged revisions in order; training never waits for the network.

    Use it as a context manager (as huggingface_hub's ``CommitScheduler``): however the block ends, normally or
    by an exception, its exit delivers every queued push before going on, and what cannot be delivered stays
    staged in ``pending/`` (``pending`` lists it) for ``push-pending``.
    """

    def __init__(self, output_dir: str | Path, repo_id: str, *, attempts: int = 3, delay: float = 30.0):
        self.output_dir, self.repo_id, self.attempts, self.delay = Path(output_dir), repo_id, attempts, delay
        self.pushed: list[str] = []
        self.failed: list[str] = []
        self.causes: dict[str, str] = {}  # revision -> why its push failed (one line, hub.failures.cause)
        self.pending: list[str] = []  # after close(): the revisions still in pending/
        self.removed_staging: list[str] = []  # leftover staging branches of this run, removed at start
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="hf-transfer-seg-publisher", daemon=True)
        self._thread.start()

    def submit(self, revision: str) -> None:
        self._queue.put(revision)

    def submit_pending(self) -> list[str]:
        """Queue every checkpoint left in ``pending/`` by earlier runs."""
        names = list_pending(self.output_dir)
        for name in names:
            self.submit(name)
        return names

    def _run(self) -> None:
        try:  # let training threads win the CPU when it is scarce (Linux: niceness is per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        self.removed_staging = remove_leftover_staging(self.output_dir, self.repo_id)  # before any push of ours
        while True:
            revision = self._queue.get()
            try:
                if revision is _STOP:
                    return
                if not (pending_dir(self.output_dir) / revision).is_dir():
                    continue  # already delivered (queued twice)
                try:
                    if push_with_retries(self.output_dir, revision, self.repo_id, attempts=self.attempts, delay=self.delay):
                        self.pushed.append(revision)
                except Exception as exc:  # noqa: BLE001 - never kill training over a push
                    self.failed.append(revision)
                    self.causes[revision] = cause(exc)
                    log.debug("push of %s failed", revision, exc_info=True)
                    log.error(
                        "giving up pushing %s for now: %s. It stays in %s; %s (also run at the next start)",
                        revision, self.causes[revision], pending_dir(self.output_dir),
                        delivery_hint(self.output_dir, self.repo_id, {revision: self.causes[revision]}),
                    )
            finally:
                self._queue.task_done()

    def close(self, timeout: float | None = None) -> list[str]:
        """Finish queued pushes (up to ``timeout`` seconds); return the revisions still pending."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("pushes still running after %.0fs; what is not confirmed stays in pending/", timeout or 0)
        self.pending = list_pending(self.output_dir)
        return self.pending

    def __enter__(self) -> "Publisher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            log.error("training failed (%s); delivering the checkpoints already written before stopping", exc_type.__name__)
        self.close()
        if exc_type is not None and self.pending:
            log.error("not on the Hub: %s; they are safe in %s: %s", ", ".join(self.pending), pending_dir(self.output_dir),
                      delivery_hint(self.output_dir, self.repo_id, self.causes))


def require_pushable(output_dir: str | Path) -> None:
    if not pending_dir(output_dir).is_dir() and not checkpoints_dir(output_dir).is_dir():
        raise HubError(f"{output_dir} holds no checkpoints (no pending/ or checkpoints/ folder); check --output-dir")
