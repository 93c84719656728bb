"""
The device, precision and peak speed a run gets: pick_device turns the `device` and `dtype` settings into what
torch needs (empty means automatic), and peak_flops gives the GPU's peak for the MFU that train.py and the
benchmarks report.
"""

from contextlib import nullcontext

import torch


def pick_device(device="", dtype=""):
    """(device, device_type, dtype, autocast context) from the settings; empty means automatic:
    cuda, then mps, then cpu; bfloat16 where the GPU supports it, else float32."""
    if not device:
        device = ("cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available()
                  else "cpu")
    device_type = "cuda" if device.startswith("cuda") else device
    if device not in ("cpu", "cuda", "mps") and not (device[:5] == "cuda:" and device[5:].isdigit()):
        raise ValueError(f"device must be cpu, cuda, cuda:N or mps (or empty for automatic), not '{device}'.")
    elsewhere = "use --device=cpu, or leave device empty to pick what there is"
    if device_type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{device}' was asked for, but this torch sees no CUDA GPU; {elsewhere}.")
    if device[5:] and int(device[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device '{device}' was asked for, but this machine has {torch.cuda.device_count()} "
                         f"GPU(s), cuda:0 to cuda:{torch.cuda.device_count() - 1}; pick one of them.")
    if device_type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device 'mps' was asked for, but this machine or torch has no Apple GPU; "
                         f"{elsewhere}.")
    if not dtype:
        dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in dtypes:
        raise ValueError(f"dtype must be float32, bfloat16 or float16, not '{dtype}'.")
    autocast = (nullcontext() if dtype == "float32"
                else torch.autocast(device_type=device_type, dtype=dtypes[dtype]))
    return device, device_type, dtype, autocast


# Peak dense bf16 tensor-core FLOP/s (no sparsity) from the vendors' data sheets, matched against
# torch.cuda.get_device_name(). An unknown device gets no MFU rather than a wrong one.
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,  # SXM; the PCIe and NVL cards are matched first below
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "A100": 312e12,
    "L4": 121e12,
    "L40S": 362e12,
    "L40": 181e12,  # without the S; listed so that it is not read as an L4
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
    "V100": 125e12,  # fp16 tensor cores, V100 has no bf16
    "T4": 65e12,  # fp16
}


def gpu_peak(device_type, say=True):
    """Peak FLOP/s of this process's GPU, or None: on a CPU or an Apple GPU, and on a GPU that PEAK_FLOPS
    lacks (then, with say, one line tells that no MFU is reported)."""
    if device_type != "cuda":
        return None
    peak = peak_flops(torch.cuda.get_device_name())
    if peak is None and say:
        print(f"MFU: {torch.cuda.get_device_name()} is not in PEAK_FLOPS (condense/device.py), so no MFU is "
              "reported")
    return peak


def peak_flops(device_name):
    """Peak FLOP/s for a device name such as 'NVIDIA H100 80GB HBM3', or None when not in the table."""
    for key in sorted(PEAK_FLOPS, key=len, reverse=True):  # longest first, so 'H100 PCIe' beats 'H100'
        if key in device_name:
            return PEAK_FLOPS[key]
    return None
