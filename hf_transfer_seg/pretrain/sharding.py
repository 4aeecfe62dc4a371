"""FSDP2 for pretraining: through Accelerate on GPUs, with Accelerate's own sharding code over gloo on CPUs.

Why not Accelerate alone on CPU (accelerate 1.16, torch 2.14): ``AcceleratorState`` turns a launch with
``ACCELERATE_USE_FSDP=true`` into ``DistributedType.FSDP`` only when the distributed type is a device one
(MULTI_GPU/NPU/XPU/MLU/...); a CPU launch is MULTI_CPU, which is not in that list, so Accelerate would run plain
DDP under ``fsdp.yaml`` (what the issue measured). With ``cpu=False`` and no accelerator it sets up no process
group at all. torch's FSDP2 itself shards over gloo on CPU (``fully_shard``, reduce-scatter, DTensor state
dicts and ``torch.distributed.checkpoint`` all work there).

So on CPU, :func:`shard` builds Accelerate's FSDP plugin from the same launcher environment (``fsdp.yaml``) and
runs Accelerate's ``fsdp2_prepare_model`` (its wrap policy, ``fully_shard`` per unit, then the root) on the gloo
process group of a MULTI_CPU Accelerator; :class:`Shards` saves and resumes the sharded model and optimizer with
``torch.distributed.checkpoint`` (every process writes its own shards); :func:`full_state_dict` is the export both
paths share: ``get_model_state_dict(full_state_dict=True, cpu_offload=True)``, the full weights on process 0.
FSDP version 1 has no CPU path here and is refused in one line, as is a wrap policy that wraps nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hf_transfer_seg.errors import ConfigError

SHARDS_DIR = "fsdp_shards"  # in a saved training state: the DCP checkpoint of the sharded model and optimizer


def requested() -> bool:
    """Whether the launcher asked for FSDP (``accelerate launch`` with ``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def plugin_from_env():
    from accelerate.utils import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin()  # reads FSDP_* as the launcher set them


def _wrapped_units(plugin, model: torch.nn.Module) -> int:
    """How many submodules Accelerate's FSDP2 wrap policy makes units of (the root aside)."""
    import copy

    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    plugin = copy.copy(plugin)  # set_auto_wrap_policy resolves the policy in place: leave the caller's plugin as it was

    try:
        plugin.set_auto_wrap_policy(model)
        policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    except ValueError as exc:  # "Could not find the transformer layer class X in the model."
        raise ConfigError(f"FSDP cannot wrap this encoder: {exc} Name one of its block classes ({_blocks(model)}) "
                          "in fsdp_transformer_layer_cls_to_wrap, or use fsdp_auto_wrap_policy: SIZE_BASED_WRAP") from None
    if policy is None:
        return 0
    return sum(1 for name, module in model.named_modules() if name and policy(module))


def _blocks(model: torch.nn.Module) -> str:
    names = dict.fromkeys(type(m).__name__ for n, m in model.named_modules() if n.count(".") == 1 and any(True for _ in m.children()))
    return ", ".join(list(names)[:6])


def check_model(plugin, model: torch.nn.Module, encoder: str) -> None:
    """Refuse, in one line, an FSDP request whose wrap policy makes no unit of ``encoder`` (nothing would shard)."""
    if _wrapped_units(plugin, model):
        return
    largest = max((sum(p.numel() for p in m.parameters()) for n, m in model.named_modules() if n), default=0)
    if getattr(plugin, "min_num_params", None):
        raise ConfigError(
            f"FSDP cannot wrap encoder {encoder!r}: no block has more than fsdp_min_num_params={plugin.min_num_params:,} "
            f"parameters (the largest has {largest:,}); lower it (e.g. --fsdp_min_num_params {max(1, largest // 4)}) or "
            "train it with multi_gpu.yaml (DDP)"
        )
    raise ConfigError(
        f"FSDP cannot wrap encoder {encoder!r}: the wrap policy selects none of its blocks ({_blocks(model)}); name one "
        "in fsdp_transformer_layer_cls_to_wrap, or use fsdp_auto_wrap_policy: SIZE_BASED_WRAP"
    )


def cpu_mode(accelerator) -> bool:
    """True when FSDP was asked for and this process must shard on CPU itself (see the module docstring)."""
    from accelerate.utils import DistributedType

    if not requested() or accelerator.distributed_type == DistributedType.FSDP:
        return False
    if accelerator.num_processes < 2:
        raise ConfigError("FSDP on CPU needs at least 2 processes to shard over; pass --num_processes 2 or more, or use cpu.yaml")
    version = int(os.environ.get("FSDP_VERSION", "1"))
    if version != 2:
        raise ConfigError(f"fsdp_version {version} cannot shard on CPU here (FSDP2 can); set fsdp_version: 2 (--fsdp_version 2)")
    return True


def shard(accelerator, model: torch.nn.Module, encoder: str) -> torch.nn.Module:
    """Shard ``model`` over the CPU process group with Accelerate's FSDP2 preparation (in place; returned)."""
    from types import SimpleNamespace

    from accelerate.utils.fsdp_utils import fsdp2_prepare_model

    plugin = plugin_from_env()
    check_model(plugin, model, encoder)
    if accelerator.mixed_precision != "no":
        plugin.set_mixed_precision(accelerator.mixed_precision)
    # the fields fsdp2_prepare_model reads from an Accelerator, with the plugin a GPU launch would carry in its state
    view = SimpleNamespace(
        state=SimpleNamespace(fsdp_plugin=plugin), torch_device_mesh=None, parallelism_config=None,
        mixed_precision=accelerator.mixed_precision, is_main_process=accelerator.is_main_process, device=accelerator.device,
    )
    model = fsdp2_prepare_model(view, model)
    model.register_forward_pre_hook(_sync_buffers_in_training)
    return model


@torch.no_grad()
def sync_buffers(model: torch.nn.Module) -> None:
    """Give every process process 0's buffers (BatchNorm statistics), as DDP does before each forward.

    FSDP shards parameters only; buffers stay per process and drift apart (each sees its own batches). Kept
    equal, the checkpoint (process 0's) is the same as DDP's, and a saved state holds one consistent copy (DCP
    writes a replicated tensor from one process only, not necessarily process 0)."""
    import torch.distributed as dist

    by_dtype: dict = {}
    for buffer in model.buffers():
        by_dtype.setdefault(buffer.dtype, []).append(buffer)
    for group in by_dtype.values():
        flat = torch.cat([b.reshape(-1) for b in group])
        dist.broadcast(flat, src=0)
        offset = 0
        for b in group:
            b.copy_(flat[offset:offset + b.numel()].view_as(b))
            offset += b.numel()


def _sync_buffers_in_training(module: torch.nn.Module, args) -> None:  # noqa: ARG001 - forward pre-hook signature
    if module.training:
        sync_buffers(module)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(getattr(model, "_orig_mod", model), FSDPModule)


def full_state_dict(model: torch.nn.Module, *, everywhere: bool = False) -> dict:
    """The full weights of an FSDP2 model, gathered from the shards (collective): on process 0 only, on the CPU,
    unless ``everywhere``."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=not everywhere)
    return get_model_state_dict(model, options=options)


class Shards:
    """The sharded model and optimizer of a CPU FSDP run, saved into and loaded from a training-state folder."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def _state(self) -> dict:
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_sd, optim_sd = get_state_dict(self.model, self.optimizer)
        return {"model": model_sd, "optimizer": optim_sd}

    def save(self, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp

        sync_buffers(self.model)
        dcp.save(self._state(), checkpoint_id=str(Path(folder) / SHARDS_DIR))

    def load(self, folder: Path) -> None:
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import set_state_dict

        where = Path(folder) / SHARDS_DIR
        if not where.is_dir():
            raise ConfigError(f"{folder} holds no sharded FSDP state ({SHARDS_DIR}/): it was saved by a run that did not "
                              "shard on CPU; resume it with the launch config it was started with")
        state = self._state()
        dcp.load(state, checkpoint_id=str(where))
        set_state_dict(self.model, self.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def check_request(command: list[str], fsdp: dict) -> None:
    """The launcher's check of an FSDP pretrain run before anything starts: the encoder must be wrappable.

    ``command``: the pretrain arguments; ``fsdp``: the launch's ``fsdp_*`` settings (config file, command line)."""
    from accelerate.utils import FullyShardedDataParallelPlugin

    from hf_transfer_seg.cli.argtypes import Parser
    from hf_transfer_seg.cli.pretrain import _add_pretrain_options, _overrides
    from hf_transfer_seg.pretrain import recipes
    from hf_transfer_seg.pretrain.config import build_config

    parser = Parser(prog="hf-transfer-seg pretrain", add_help=False)
    _add_pretrain_options(parser)
    args, _ = parser.parse_known_args(command)
    config = build_config(_overrides(args), args.config_file)
    kwargs: dict = {"fsdp_version": 2}
    if fsdp.get("fsdp_auto_wrap_policy"):
        kwargs["auto_wrap_policy"] = str(fsdp["fsdp_auto_wrap_policy"]).lower()
    if fsdp.get("fsdp_min_num_params") is not None:
        kwargs["min_num_params"] = int(fsdp["fsdp_min_num_params"])
    layers = fsdp.get("fsdp_transformer_layer_cls_to_wrap")
    if layers:
        kwargs["transformer_cls_names_to_wrap"] = [s.strip() for s in str(layers).split(",") if s.strip()]
    plugin = FullyShardedDataParallelPlugin(**kwargs)
    with torch.device("meta"):
        model = recipes.create_model(config, config.num_classes or 10)
    check_model(plugin, model, config.encoder)
