"""How long a SYNTHETIC phantom series takes: generate + write a 40-slice 432² series, leg and thigh.

Prints per-step medians over a few repeats, and a peer in the same run: SimpleITK (GDCM) writing the same
volume as a DICOM series, to put our pydicom writer in proportion.

    .venv/bin/python benchmarks/phantom.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.phantom import PhantomSpec, generate, write_series


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def sitk_write(ph, folder: Path) -> None:  # type: ignore[no-untyped-def]
    """The peer: write the same uint16 volume as a DICOM series with SimpleITK/GDCM."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.clip(np.rint(ph.image), 0, 4095).astype(np.uint16))
    image.SetSpacing((ph.spacing[2], ph.spacing[1], ph.spacing[0]))
    image.SetOrigin(ph.origin)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        sl = image[:, :, k]
        sl.SetMetaData("0008|0060", "MR")
        sl.SetMetaData("0020|0032", "\\".join(str(v) for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
        sl.SetMetaData("0020|0013", str(k + 1))
        writer.SetFileName(str(folder / f"peer_{k:04d}.dcm"))
        writer.Execute(sl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    generate(PhantomSpec("leg", "t1", 0, n_slices=2, matrix=256))  # warm imports
    print("SYNTHETIC phantom: 40 slices x 432 x 432, median of", args.repeats, "runs (seconds)")
    print(f"{'series':<14}{'generate':>10}{'write':>10}{'total':>10}{'enhanced':>10}{'peer write':>12}{'ratio':>8}")
    for region in ("leg", "thigh"):
        gen, wr, enh, peer = [], [], [], []
        for r in range(args.repeats):
            spec = PhantomSpec(region, "t1", 1000 + r, n_slices=40, matrix=432)  # type: ignore[arg-type]
            ph, t_gen = timed(generate, spec)
            with tempfile.TemporaryDirectory() as tmp:
                _, t_wr = timed(write_series, ph, Path(tmp) / "classic")
                _, t_enh = timed(write_series, ph, Path(tmp) / "enhanced", enhanced=True)
                (Path(tmp) / "peer").mkdir()
                _, t_peer = timed(sitk_write, ph, Path(tmp) / "peer")
            gen.append(t_gen)
            wr.append(t_wr)
            enh.append(t_enh)
            peer.append(t_peer)
        g, w, e, p = (statistics.median(x) for x in (gen, wr, enh, peer))
        print(f"{region + ' T1':<14}{g:>10.2f}{w:>10.2f}{g + w:>10.2f}{e:>10.2f}{p:>12.2f}{w / p:>8.2f}")
    print("ratio = our pydicom classic-series write / SimpleITK-GDCM write of the same volume")


if __name__ == "__main__":
    main()
