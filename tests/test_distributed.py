"""Distributed pretraining as it really runs: ``hf-transfer-seg launch`` (Accelerate's launcher, torchrun, gloo) with
2 CPU processes, FSDP sharding on CPU, two machines on localhost, port races and bad launch input.

Tiny on purpose (test_resnet, 32 px, 64 synthetic images, batch 8). FSDP is compared with DDP of the same launch
shape: the same processes see the same micro-batches with the same per-process augmentation and BatchNorm
statistics, so the weights can only differ by how gradients are reduced (reduce-scatter vs all-reduce). A
1-process run would draw other augmentations (one RNG stream instead of one per process) and normalise
batches of 8 instead of 4, under FSDP and DDP alike.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download
from safetensors.torch import load_file

from hf_transfer_seg import hub
from hf_transfer_seg.pretrain.loop import STEP_DELAY_ENV

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "accelerate_configs"
TINY = [
    "--encoder", "test_resnet", "--image-size", "32", "--train-size", "64", "--val-size", "32",
    "--batch-size", "8", "--lr", "2e-3", "--num-workers", "0", "--log-every", "0",
]
RUN = [*TINY, "--epochs", "1", "--checkpoint-epochs", "0.5,1"]  # optimizer steps 4 and 8
TWO = ["--num_processes", "2", "--mixed_precision", "no"]
FSDP = ["--config_file", str(CONFIGS / "fsdp.yaml"), *TWO, "--fsdp_min_num_params", "20000"]  # test_resnet's blocks: 37k-268k
DDP = ["--config_file", str(CONFIGS / "multi_gpu.yaml"), *TWO]
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"})
    env.update(extra)
    return env


def _argv(launch_args: list[str], command: list[str]) -> list[str]:
    return [sys.executable, "-m", "hf_transfer_seg", "launch", *launch_args, "--", *command]


def launch(launch_args: list[str], command: list[str], *, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(_argv(launch_args, command), env=env or _env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def start(launch_args: list[str], command: list[str], *, env: dict, log: Path) -> subprocess.Popen:
    """A launch in its own process group (one 'machine': the launcher and its workers, see kill_machine)."""
    return subprocess.Popen(_argv(launch_args, command), env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                            cwd=ROOT, start_new_session=True)


def kill_machine(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and its workers (torchrun starts them in sessions of their own), workers first."""
    import psutil

    try:
        workers = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        workers = []
    for worker in workers:
        try:
            worker.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(workers, timeout=30)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _latest(out: Path) -> str | None:
    pointer = out / "state" / "LATEST"
    return pointer.read_text().strip() if pointer.is_file() else None


def _wait_for(predicate, timeout: float, what: str, *procs: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"a launch ended (rc {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _weights(path: Path | str) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def _assert_close(actual: dict, expected: dict, what: str, *, exact: bool = False) -> None:
    assert actual.keys() == expected.keys(), what
    for key, value in expected.items():
        if exact:
            assert torch.equal(actual[key], value), f"{what}: {key} differs"
        else:
            torch.testing.assert_close(actual[key], value, rtol=1e-4, atol=1e-5, msg=lambda m: f"{what}: {key}: {m}")


@pytest.fixture(scope="module")
def fsdp_reference(tmp_path_factory) -> Path:
    """An uninterrupted 2-process FSDP run (no Hub): its checkpoints in pending/."""
    out = tmp_path_factory.mktemp("fsdp-reference") / "out"
    done = launch(FSDP, ["pretrain", *RUN, "--output-dir", str(out)])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    first = next(line for line in done.stderr.splitlines() if " INFO hf_transfer_seg." in line)
    assert "distributed: FSDP (FSDP2 sharded over gloo on CPU" in first and "2 process(es) on 1 machine(s)" in first, first
    assert "precision no" in first
    return out


def test_fsdp_on_cpu_really_shards_and_equals_ddp(fsdp_reference, tmp_path):
    state = fsdp_reference / "state" / _latest(fsdp_reference)
    shards = sorted(p.name for p in (state / "fsdp_shards").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"], shards  # each process wrote its own shards
    assert not (state / "model.safetensors").exists()  # nothing unsharded beside them

    ddp = launch(DDP, ["pretrain", *RUN, "--output-dir", str(tmp_path / "ddp")])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "distributed: MULTI_CPU, 2 process(es) on 1 machine(s), device cpu, precision no" in ddp.stderr
    for name in ("epoch-0000.5", "epoch-0001"):
        sharded = _weights(fsdp_reference / "pending" / name / "model.safetensors")
        replicated = _weights(tmp_path / "ddp" / "pending" / name / "model.safetensors")
        _assert_close(sharded, replicated, name)
    first, last = (_weights(fsdp_reference / "pending" / n / "model.safetensors") for n in ("epoch-0000.5", "epoch-0001"))
    assert not torch.equal(first["fc.weight"], last["fc.weight"])  # it trained between the checkpoints


def test_fsdp_killed_mid_run_resumes_from_its_shards_and_pushes(fsdp_reference, hub_endpoint, repo_id, tmp_path):
    out = tmp_path / "out"
    command = ["pretrain", *RUN, "--repo-id", repo_id, "--output-dir", str(out)]
    proc = start(FSDP, command, env=_env(**{STEP_DELAY_ENV: "0.3"}), log=tmp_path / "killed.log")
    _wait_for(lambda: _latest(out) == "step-00000004", 240, "the first checkpoint's state", proc)
    kill_machine(proc)
    assert _latest(out) == "step-00000004", "the run passed the second checkpoint before it was killed"

    resumed = launch(FSDP, [*command, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "step 4, epoch 0, batch 4" in resumed.stderr, resumed.stderr[-3000:]
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0000.5", "epoch-0001"]
    for name in ("epoch-0000.5", "epoch-0001"):
        pushed = _weights(hf_hub_download(repo_id, "model.safetensors", revision=name))
        _assert_close(pushed, _weights(fsdp_reference / "pending" / name / "model.safetensors"), name, exact=True)
    state = json.loads((out / "state" / _latest(out) / "trainer_state.json").read_text())
    assert state["finished"] and state["global_step"] == 8


def test_two_machines_on_localhost_push_then_one_dies_and_both_resume(hub_endpoint, repo_id, tmp_path):
    out = tmp_path / "out"  # shared by both "machines", as multi_node.yaml asks
    command = ["pretrain", *RUN, "--repo-id", repo_id, "--output-dir", str(out)]

    def machine(rank: int, port: int, log: str, *extra: str, delay: str = "0") -> subprocess.Popen:
        options = ["--config_file", str(CONFIGS / "multi_node.yaml"), "--num_processes", "2", "--mixed_precision", "no",
                   "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--machine_rank", str(rank)]
        return start(options, [*command, *extra], env=_env(**{STEP_DELAY_ENV: delay}), log=tmp_path / log)

    port = _free_port()
    m0, m1 = machine(0, port, "m0.log", delay="0.3"), machine(1, port, "m1.log", delay="0.3")
    _wait_for(lambda: _latest(out) == "step-00000004", 240, "the first checkpoint's state", m0, m1)
    kill_machine(m1)  # machine 1 dies; machine 0 loses its peer at the next collective and stops, saying why
    assert m0.wait(timeout=120) == 2
    assert _latest(out) == "step-00000004"
    log0 = (tmp_path / "m0.log").read_text()
    assert "distributed: MULTI_CPU, 2 process(es) on 2 machine(s)" in log0, log0[-3000:]
    assert "lost the connection to another training process" in log0 and "The state of step-00000004 is saved" in log0
    assert "Traceback" not in log0, log0[-3000:]
    _wait_for(lambda: "epoch-0000.5" in [r.name for r in hub.list_revisions(repo_id)], 60, "the first push")

    port = _free_port()
    m0, m1 = machine(0, port, "m0-resumed.log", "--resume"), machine(1, port, "m1-resumed.log", "--resume")
    assert m0.wait(timeout=300) == 0, (tmp_path / "m0-resumed.log").read_text()[-3000:]
    assert m1.wait(timeout=60) == 0, (tmp_path / "m1-resumed.log").read_text()[-3000:]
    assert "step 4, epoch 0, batch 4" in (tmp_path / "m0-resumed.log").read_text()
    assert [r.name for r in hub.list_revisions(repo_id)] == ["epoch-0000.5", "epoch-0001"]
    state = json.loads((out / "state" / _latest(out) / "trainer_state.json").read_text())
    assert state["finished"] and state["global_step"] == 8


def test_a_held_port_does_not_stop_a_one_machine_launch(tmp_path):
    """The race the demo lost: another process holds the port the launch was given (as if it took it between the
    pick and torchrun's bind). The launch still starts its 2 processes: torchrun binds a port of its own."""
    with socket.socket() as holder:
        holder.bind(("", 0))  # every address, as torchrun's store binds it
        holder.listen()
        taken = holder.getsockname()[1]
        done = launch([*DDP, "--main_process_port", str(taken)], ["pretrain", *TINY, "--epochs", "0.5", "--output-dir", str(tmp_path / "out")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 process(es) on 1 machine(s)" in done.stderr and "Traceback" not in done.stderr
    assert (tmp_path / "out" / "pending" / "epoch-0000.5" / "model.safetensors").is_file()


def test_two_launches_at_once_on_one_host_both_finish(tmp_path):
    """Neither names a port (as the demo, and as plain `accelerate launch` would take 29500 for both): each torchrun
    binds a port of its own, so the second cannot collide with the first."""
    procs = [start(DDP, ["pretrain", *TINY, "--epochs", "0.5", "--output-dir", str(tmp_path / f"out{i}")], env=_env(),
                   log=tmp_path / f"run{i}.log") for i in (0, 1)]
    for i, proc in enumerate(procs):
        assert proc.wait(timeout=300) == 0, (tmp_path / f"run{i}.log").read_text()[-3000:]
        assert (tmp_path / f"out{i}" / "pending" / "epoch-0000.5" / "model.safetensors").is_file()


def test_bad_launches_fail_in_one_line_before_training_and_keep_staged_work(tmp_path):
    out = tmp_path / "out"
    (out / "pending" / "epoch-0001").mkdir(parents=True)  # a checkpoint waiting for push-pending
    (out / "pending" / "epoch-0001" / "model.safetensors").write_bytes(b"staged")
    command = ["pretrain", *TINY, "--epochs", "1", "--output-dir", str(out)]
    node = ["--config_file", str(CONFIGS / "multi_node.yaml"), *TWO]
    with socket.socket() as holder:
        holder.bind(("", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        cases = {
            "rank outside": (node + ["--main_process_ip", "127.0.0.1", "--main_process_port", "29555", "--machine_rank", "2"],
                             "machine rank 2 is outside the 2 machine(s)"),
            "template address": (node + ["--machine_rank", "0"], "main_process_ip 10.0.0.1 is not an address of this machine"),
            "unreachable": (node + ["--wait-main", "2", "--main_process_ip", "127.0.0.1", "--main_process_port", str(_free_port()),
                                    "--machine_rank", "1"], "cannot be reached (waited 2s)"),
            "port taken": (node + ["--main_process_ip", "127.0.0.1", "--main_process_port", str(taken), "--machine_rank", "0"],
                           f"port {taken} on 127.0.0.1 is taken by another process; pass a free --main_process_port"),
            "fsdp cannot wrap": (["--config_file", str(CONFIGS / "fsdp.yaml"), *TWO],
                                 "FSDP cannot wrap encoder 'test_resnet': no block has more than fsdp_min_num_params=1,000,000"),
            "fsdp layer class": (["--config_file", str(CONFIGS / "fsdp.yaml"), *TWO, "--fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP",
                                  "--fsdp_transformer_layer_cls_to_wrap", "Block"], "Could not find the transformer layer class Block"),
        }
        for name, (options, message) in cases.items():
            done = launch(options, command, timeout=120)
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            assert done.returncode == 2 and len(lines) == 1 and message in lines[0], (name, done.stderr[-2000:])
    assert not (out / "state").exists()  # nothing started
    assert (out / "pending" / "epoch-0001" / "model.safetensors").read_bytes() == b"staged"
