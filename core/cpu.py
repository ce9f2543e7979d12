"""What CPU this is, as every figure and cached choice records it: model name and the ISA flags
that pick ONNX Runtime's and PyTorch's kernels. Torch-free."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

# The flags that change which integer / float kernels run (ONNX Runtime's MLAS dispatch).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx_vnni_int8", "amx_int8", "asimddp", "i8mm")


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, object]:
    """``{"model", "isa": [flags], "cores"}`` of the CPUs this process may run on."""
    fields: dict[str, str] = {}
    flags: set[str] = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("flags", "Features"):
                    flags.update(value.split())
                else:
                    fields.setdefault(key, value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:  # virtual machines often name only the vendor line ("AMD EPYC")
        model += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return {"model": model, "isa": [f for f in ISA_FLAGS if f in flags], "cores": usable_cores()}


def describe_cpu() -> str:
    info = cpu_info()
    return f"{info['model']}, {info['cores']} cores, {' '.join(info['isa']) or 'no AVX2'}"


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class OtherLoad:
    """How many cores other processes kept busy while the block ran (machine busy time from
    ``/proc/stat`` minus this process's own CPU time); ``cores`` is None where ``/proc/stat``
    is missing (not Linux).

        with OtherLoad() as load:
            ...
        load.cores   # e.g. 0.9: about one core was taken by someone else
    """

    def __enter__(self) -> "OtherLoad":
        self.cores: float | None = None
        self._start = _busy_and_own()
        return self

    def __exit__(self, *exc) -> None:
        end = _busy_and_own()
        if self._start is None or end is None:
            return
        (busy0, own0, wall0), (busy1, own1, wall1) = self._start, end
        if wall1 > wall0:
            self.cores = max(0.0, (busy1 - busy0) - (own1 - own0)) / (wall1 - wall0)


def _busy_and_own() -> tuple[float, float, float] | None:
    """(seconds of busy CPU on the whole machine, this process's CPU seconds, wall clock)."""
    import time

    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    busy = (sum(values) - values[3] - values[4] - values[7]) / hz  # steal: another VM's time, not ours to count
    t = os.times()
    return busy, t.user + t.system, time.monotonic()
