"""Images per second of feature extraction from a folder of 224 px JPEGs: decoding in the main
process (data.workers=0) against DataLoader workers, in one run, with identical features checked.

    python benchmarks/data_loading.py [--images 400] [--workers 2] [--backbone ViT-B-16]

The folder is generated once under --dir. By default the image tower is the embedded tiny model (its
transform resizes the 224 px JPEGs to 64 px), so that decoding and resizing, the work the workers
take over, dominate as they do when a GPU runs the image tower; --backbone ViT-B-16 also runs the
real image tower on this machine's CPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
from PIL import Image

from vlprompt.backbones import load_backbone
from vlprompt.data.feature_cache import encode_records
from vlprompt.data.folder import read_image_folder


def make_folder(root: Path, n: int, classes: int = 10) -> Path:
    """n random 224 x 224 JPEGs in ``classes`` class folders (kept between runs)."""
    done = root / ".complete"
    if done.is_file() and int(done.read_text()) == n:
        return root
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        pixels = torch.randint(0, 256, (224, 224, 3), generator=g, dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(folder / f"{i:05d}.jpg", quality=90)
    done.write_text(str(n))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backbone", default="vlprompt-tiny")
    parser.add_argument("--dir", default="/tmp/vlprompt-bench-jpegs")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the main process encodes; the workers get the other cores
    print(f"torch threads in the main process: {torch.get_num_threads()}; workers: {args.workers}")
    data = read_image_folder(make_folder(Path(args.dir), args.images))
    records = data.train + data.val + data.test
    backbone = load_backbone(args.backbone, None)
    results = {}
    for workers in (0, args.workers):
        start = time.perf_counter()
        results[workers] = encode_records(backbone, data, records, views=1, seed=0, batch_size=64, workers=workers)
        rate = len(records) / (time.perf_counter() - start)
        print(f"workers={workers}: {rate:8.1f} images/s")
        results[f"rate{workers}"] = rate
    assert torch.equal(results[0], results[args.workers]), "features differ between worker counts"
    print(f"speed-up with {args.workers} workers: {results[f'rate{args.workers}'] / results['rate0']:.2f}x "
          f"({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
