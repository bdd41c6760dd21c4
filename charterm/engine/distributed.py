"""Where a run trains: the device, and many processes on one model (the torchrun environment,
PyTorch DistributedDataParallel).

`torchrun --nproc_per_node=N -m charterm train ...` starts N copies of `charterm train`; each
finds its rank here, joins the process group (nccl on CUDA, gloo on CPU) and trains on its own
rows of the text. Every collective below is called by all ranks in the same order.
"""

import ctypes
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from charterm.errors import UsageError

_joined = False  # this process joined a process group (see exit_worker)


@dataclass
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum over ranks (float64, on CPU for gloo or the rank's GPU for nccl)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def launched_by_torchrun() -> bool:
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "WORLD_SIZE" in os.environ)


def start(device_name: str) -> tuple[Ranks, str]:
    """Join the process group when started by torchrun. Returns the ranks and the device name
    this rank uses (cuda:LOCAL_RANK on CUDA)."""
    if not launched_by_torchrun():
        return Ranks(), device_name
    ranks = Ranks(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    cuda = device_name in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ranks.local_rank)
        device_name = f"cuda:{ranks.local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    global _joined
    _joined = True
    return ranks, device_name


def stop(ranks: Ranks) -> None:
    if ranks.active:
        dist.destroy_process_group()


def exit_worker(code: int) -> None:
    """End a process that joined a process group, skipping interpreter finalization.

    Gloo's worker threads outlive `destroy_process_group` and may still hold the last reference
    to a tensor from the final collective; if they drop it while the interpreter is finalizing,
    the thread dies taking the GIL and the process aborts ("terminate called without an active
    exception", exit -6) after a run that finished. All files are already written and synced.
    """
    if not _joined:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it
            pass
    os._exit(code)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA GPU is available; use --device cpu or auto")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UsageError("--device mps: Apple MPS is not available; use --device cpu or auto")
    return torch.device(name)


def keep_buffers_in_heap() -> None:
    """Stop glibc from unmapping and re-mapping the large per-step buffers (page faults every
    step); worth 10-15% on CPU. No-op off glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-4, 0)  # M_MMAP_MAX
    except (OSError, AttributeError):
        pass


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"
