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
