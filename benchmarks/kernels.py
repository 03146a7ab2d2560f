"""Kernel timings: medbench's differentiable GLCM and VAFA's blockwise DCT against their references.

What is measured:

* **GLCM** (``plugins/medbench_tcglcm/glcm.py``, used by the ``tc-glcm`` defense's loss): on a batch
  of random gray images in [0, 1] (default 64 at 224², seed 0), 32 grey levels, distance 3, the 8
  angles k·45°, the five texture features of paper 000 (ASM, contrast, homogeneity, correlation,
  dissimilarity):

  - ``medbench soft``: ``soft_cooccurrence`` (Gaussian memberships, one batched matrix product
    per distinct offset) → ``texture_features``, the differentiable forward pass, on ``--device``;
    its float32 features are also compared with a float64 run (largest relative difference per
    feature, relative to that feature's largest magnitude), as a check of the float32 rounding;
  - ``medbench soft fwd+bwd``: the same plus the gradient of the features' sum to the images
    (what training with the GLCM loss pays);
  - ``medbench hard``: ``hard_cooccurrence`` (one ``torch.bincount`` of level pairs per distinct
    offset), which reproduces scikit-image exactly; the largest difference to scikit-image's
    features is reported as a correctness check;
  - ``scikit-image``: ``graycomatrix(symmetric=True, normed=True)`` + ``graycoprops`` image by
    image on the CPU, on the same images quantised to 32 levels (``min(⌊32·x⌋, 31)``).

* **Blockwise DCT** (``plugins/medbench_vafa/dct.py``, VAFA's transform): orthonormal 3-D DCT-II
  of every 8³ block of random volumes (default batch 2 of 1×96³, i.e. 2 × 1728 blocks):

  - ``medbench blockwise_dct``: block split + one matrix product per axis, on ``--device``;
  - ``scipy.fft.dctn``: the same blocks split with NumPy, then ``dctn(type=2, norm='ortho')`` over
    the last three axes in one call (``workers`` = torch's thread count), on the CPU; the largest
    difference of the coefficients is reported.

Every kernel is warmed up, then the kernels of a group are timed round-robin ``--repeats`` times
(``torch.cuda.synchronize`` around each call on CUDA); the median, min and max seconds are
printed, with speedups = reference median / medbench median (above 1: medbench is faster).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

SEED = 0
FEATURES = ("ASM", "contrast", "homogeneity", "correlation", "dissimilarity")
ANGLES = tuple(k * math.pi / 4 for k in range(8))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    parser.add_argument("--glcm-batch", type=int, default=64)
    parser.add_argument("--glcm-size", type=int, default=224)
    parser.add_argument("--levels", type=int, default=32)
    parser.add_argument("--distance", type=int, default=3)
    parser.add_argument("--dct-batch", type=int, default=2)
    parser.add_argument("--dct-size", type=int, default=96, help="edge of the cubic volume")
    parser.add_argument("--block", type=int, default=8, help="edge of the cubic DCT block")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--skip", nargs="+", choices=("glcm", "dct"), default=[], help="groups to leave out")
    parser.add_argument("--json", type=Path, default=None, help="write the results as JSON")
    parser.add_argument(
        "--tiny", action="store_true", help="GLCM 4 images at 64², DCT one 32³ volume, 1 repeat"
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.glcm_batch, args.glcm_size, args.dct_batch, args.dct_size, args.repeats = 4, 64, 1, 32, 1
    if args.dct_size % args.block:
        parser.error("--dct-size must be a multiple of --block")
    if min(args.glcm_batch, args.glcm_size, args.dct_batch, args.repeats, args.levels) < 1:
        parser.error("sizes and repeats must be positive")
    return args


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_group(
    kernels: dict[str, Callable[[], Any]], device: torch.device, repeats: int, warmup: int
) -> dict[str, dict[str, Any]]:
    """Warm up every kernel, then time them round-robin (rotating order); wall seconds per kernel."""
    names = list(kernels)
    for name in names:
        for _ in range(warmup):
            kernels[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            started = time.perf_counter()
            kernels[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - started)
    return {
        name: {
            "times_s": values,
            "median_s": statistics.median(values),
            "min_s": min(values),
            "max_s": max(values),
        }
        for name, values in times.items()
    }


# --------------------------------------------------------------------------- GLCM


def skimage_features(images: np.ndarray, levels: int, distance: int) -> np.ndarray:
    """scikit-image's features ``(B, 5, 8)`` of quantised images ``(B, H, W)`` (uint8 levels)."""
    from skimage.feature import graycomatrix, graycoprops

    result = np.empty((images.shape[0], len(FEATURES), len(ANGLES)))
    for index, image in enumerate(images):
        glcm = graycomatrix(image, [distance], list(ANGLES), levels=levels, symmetric=True, normed=True)
        for f_index, name in enumerate(FEATURES):
            result[index, f_index] = graycoprops(glcm, name)[0]
    return result


def glcm_group(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    from medbench_tcglcm.glcm import hard_cooccurrence, soft_cooccurrence, texture_features

    generator = torch.Generator().manual_seed(SEED)
    gray_cpu = torch.rand((args.glcm_batch, args.glcm_size, args.glcm_size), generator=generator)
    quantised_cpu = (gray_cpu * args.levels).long().clamp_(max=args.levels - 1)
    quantised_np = quantised_cpu.numpy().astype(np.uint8)
    gray, quantised = gray_cpu.to(device), quantised_cpu.to(device)
    distances, angles = [args.distance], list(ANGLES)

    def soft(images: torch.Tensor) -> torch.Tensor:
        return texture_features(soft_cooccurrence(images, args.levels, distances, angles), FEATURES)

    def soft_forward() -> torch.Tensor:
        with torch.no_grad():
            return soft(gray)

    def soft_backward() -> torch.Tensor:
        images = gray.clone().requires_grad_(True)
        soft(images).sum().backward()
        assert images.grad is not None
        return images.grad

    def hard() -> torch.Tensor:
        return texture_features(hard_cooccurrence(quantised, args.levels, distances, angles), FEATURES)

    kernels = {
        "medbench soft": soft_forward,
        "medbench soft fwd+bwd": soft_backward,
        "medbench hard": hard,
        "scikit-image": lambda: skimage_features(quantised_np, args.levels, args.distance),
    }
    timings = time_group(kernels, device, args.repeats, args.warmup)
    reference = skimage_features(quantised_np, args.levels, args.distance)
    hard_diff = float(np.abs(hard()[:, :, 0, :].cpu().numpy() - reference).max())
    with torch.no_grad():
        soft64 = soft(gray.double())
    scale = soft64.abs().amax(dim=(0, 2, 3), keepdim=True).clamp_min(1e-300)
    soft_diff = float(((soft_forward().double() - soft64).abs() / scale).max())
    skimage_median = timings["scikit-image"]["median_s"]
    for name in ("medbench soft", "medbench soft fwd+bwd", "medbench hard"):
        timings[name]["speedup_vs_skimage"] = skimage_median / timings[name]["median_s"]
    return {
        "config": {
            "batch": args.glcm_batch,
            "size": args.glcm_size,
            "levels": args.levels,
            "distance": args.distance,
            "angles": len(ANGLES),
            "features": list(FEATURES),
        },
        "timings": timings,
        "hard_vs_skimage_max_abs_diff": hard_diff,
        "soft_float32_vs_float64_max_rel_diff": soft_diff,
        "reference": "scikit-image",
    }


# --------------------------------------------------------------------------- DCT


def numpy_block_split(x: np.ndarray, block: int) -> np.ndarray:
    """``(*lead, D, H, W)`` → ``(*lead, n_blocks, block, block, block)`` in medbench's block order."""
    *lead, depth, height, width = x.shape
    grid = (depth // block, height // block, width // block)
    m = len(lead)
    split = x.reshape(*lead, grid[0], block, grid[1], block, grid[2], block)
    order = [*range(m), m, m + 2, m + 4, m + 1, m + 3, m + 5]
    return split.transpose(order).reshape(*lead, math.prod(grid), block, block, block)


def dct_group(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    import scipy.fft

    from medbench_vafa.dct import blockwise_dct

    generator = torch.Generator().manual_seed(SEED)
    shape = (args.dct_batch, 1, args.dct_size, args.dct_size, args.dct_size)
    volume_cpu = torch.rand(shape, generator=generator)
    volume, volume_np = volume_cpu.to(device), volume_cpu.numpy()
    block = (args.block,) * 3
    workers = torch.get_num_threads()

    def medbench() -> torch.Tensor:
        with torch.no_grad():
            return blockwise_dct(volume, block)

    def scipy_dctn() -> np.ndarray:
        blocks = numpy_block_split(volume_np, args.block)
        return scipy.fft.dctn(blocks, type=2, norm="ortho", axes=(-3, -2, -1), workers=workers)

    timings = time_group(
        {"medbench blockwise_dct": medbench, "scipy.fft.dctn": scipy_dctn}, device, args.repeats, args.warmup
    )
    difference = float(np.abs(medbench().cpu().numpy() - scipy_dctn()).max())
    timings["medbench blockwise_dct"]["speedup_vs_scipy"] = (
        timings["scipy.fft.dctn"]["median_s"] / timings["medbench blockwise_dct"]["median_s"]
    )
    return {
        "config": {
            "batch": args.dct_batch,
            "volume": [1, args.dct_size, args.dct_size, args.dct_size],
            "block": list(block),
            "blocks": args.dct_batch * (args.dct_size // args.block) ** 3,
            "scipy_workers": workers,
        },
        "timings": timings,
        "max_abs_diff": difference,
        "reference": "scipy.fft.dctn",
    }


# --------------------------------------------------------------------------- output


def format_group(title: str, group: dict[str, Any], speedup_key: str) -> str:
    lines = [title, f"{'kernel':<26} {'median s':>10} {'min s':>10} {'max s':>10} {'speedup':>9}"]
    for name, timing in group["timings"].items():
        speedup = timing.get(speedup_key)
        shown = f"{speedup:>8.3g}x" if speedup is not None else f"{'(ref)':>9}"
        seconds = " ".join(f"{timing[key]:>10.4f}" for key in ("median_s", "min_s", "max_s"))
        lines.append(f"{name:<26} {seconds} {shown}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from medbench.engine.device import resolve_device

    try:
        device = resolve_device(args.device)
    except Exception as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
            "device": str(device),
            "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        },
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, "
        f"{args.repeats} repeat(s) after {args.warmup} warm-up"
    )
    if "glcm" not in args.skip:
        glcm = glcm_group(args, device)
        results["glcm"] = glcm
        c = glcm["config"]
        print(
            format_group(
                f"GLCM: {c['batch']} images {c['size']}x{c['size']}, {c['levels']} levels, distance "
                f"{c['distance']}, {c['angles']} angles, {len(c['features'])} features "
                "(speedup = scikit-image median / medbench median)",
                glcm,
                "speedup_vs_skimage",
            )
        )
        difference = glcm["hard_vs_skimage_max_abs_diff"]
        print(f"hard GLCM vs scikit-image: max |difference| of the features = {difference:.3g}")
        relative = glcm["soft_float32_vs_float64_max_rel_diff"]
        print(f"soft GLCM float32 vs float64: max relative difference of the features = {relative:.3g}")
        print()
    if "dct" not in args.skip:
        dct = dct_group(args, device)
        results["dct"] = dct
        c = dct["config"]
        volume = "x".join(str(size) for size in c["volume"])
        print(
            format_group(
                f"blockwise DCT: batch {c['batch']} of {volume}, {c['block'][0]}^3 blocks "
                f"({c['blocks']} blocks), scipy workers {c['scipy_workers']} "
                "(speedup = scipy median / medbench median)",
                dct,
                "speedup_vs_scipy",
            )
        )
        print(f"medbench vs scipy: max |difference| of the coefficients = {dct['max_abs_diff']:.3g}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
