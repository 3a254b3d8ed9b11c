"""Training-step throughput of CLIP image towers as GML text-centre students.

One step is what ``gml.centres = text`` trains: the image tower's forward on a batch, the
cosine classifier (x30, logit-adjusted CE) and ``L_GML`` against ``C x T`` fixed text centres
(random unit vectors here: the text tower runs once per run, not per step), the backward and an
AdamW update. Backbones are built by ``ltcore.clip.clip_backbone`` with random weights (no
download): ``RN50`` and ``ViT-B-16`` at 224 px and ``ViT-B-16`` at 384 px
(``force_image_size``), batch ``--batch-size``, bf16 autocast on CUDA (fp32 on the CPU).

Time: ``time.perf_counter`` around each step after ``torch.cuda.synchronize``, the median of
``--steps`` steps after ``--warmup`` untimed ones. Peak memory: ``torch.cuda.max_memory_allocated``
over the timed steps (CUDA only).

Example::

    python benchmarks/clip_step.py --device cuda --json benchmarks/results/clip-step.json
    python benchmarks/clip_step.py --tiny --device cpu       # a tiny model, seconds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TINY_CLIP = {"embed_dim": 16,
             "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8,
                            "head_width": 16},
             "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                          "layers": 1}}
CASES = (("RN50", 224), ("ViT-B-16", 224), ("ViT-B-16", 384))


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--classes", type=int, default=1000, help="C (ImageNet-LT: 1,000)")
    parser.add_argument("--templates", type=int, default=80, help="T (clip.templates imagenet)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--tiny", action="store_true",
                        help="a tiny CLIP configuration at 32 px, batch 8, 10 classes x 2 prompts")
    parser.add_argument("--json", type=Path, help="write the figures here")
    return parser.parse_args(argv)


def build(architecture: str, image_size: int, tiny: bool):
    from ltcore.clip import clip_backbone

    if tiny:
        return clip_backbone("tiny", config=TINY_CLIP)
    options = {} if image_size == 224 else {"force_image_size": image_size}
    return clip_backbone(architecture, pretrained=False, **options)


def time_case(architecture: str, image_size: int, args: argparse.Namespace) -> dict:
    from ltcore_gml.loss import gml_loss_from_similarities

    from ltcore.models import CosineClassifier

    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    backbone = build(architecture, image_size, args.tiny).to(device)
    classifier = CosineClassifier(backbone.feature_dim, args.classes).to(device)
    params = [p for p in [*backbone.parameters(), *classifier.parameters()] if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.05)
    centres = F.normalize(torch.randn(args.classes * args.templates, backbone.feature_dim,
                                      generator=gen), dim=1).to(device)
    centre_labels = torch.arange(args.classes, device=device).repeat_interleave(args.templates)
    prior = torch.linspace(1.0, 0.01, args.classes, device=device)
    prior = prior / prior.sum()
    images = torch.randn(args.batch_size, 3, image_size, image_size, generator=gen).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=gen).to(device)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else contextlib.nullcontext())

    def step():
        with autocast:
            features = backbone(images)
            logits = classifier(features).float()
        query = F.normalize(features.float(), dim=1)
        loss = (F.cross_entropy(logits + prior.log(), labels)
                + gml_loss_from_similarities(query @ centres.T, labels, centre_labels, prior,
                                             0.07))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def synchronize():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    backbone.train()
    for _ in range(args.warmup):
        step()
    synchronize()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    row = {"backbone": f"clip:{architecture}" if not args.tiny else "clip:tiny",
           "image_size": image_size, "batch_size": args.batch_size,
           "precision": "bf16" if device.type == "cuda" else "fp32",
           "ms_per_step": round(seconds * 1000, 2),
           "images_per_s": round(args.batch_size / seconds, 1),
           "peak_mem_gb": (round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2)
                           if device.type == "cuda" else None)}
    return row


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.tiny:
        args.batch_size, args.classes, args.templates = 8, 10, 2
        args.steps, args.warmup = min(args.steps, 2), min(args.warmup, 1)
    torch.manual_seed(0)
    cases = (("tiny", 32),) if args.tiny else CASES
    rows = []
    for architecture, size in cases:
        rows.append(time_case(architecture, size, args))
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()  # the last case's model and optimiser are gone
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu"
    record = {"device": name, "torch": torch.__version__, "classes": args.classes,
              "templates": args.templates, "rows": rows}
    print(f"{'backbone':<16}{'px':>5}{'batch':>7}{'ms/step':>10}{'images/s':>10}{'peak GB':>9}")
    for r in rows:
        peak = "-" if r["peak_mem_gb"] is None else f"{r['peak_mem_gb']:.2f}"
        print(f"{r['backbone']:<16}{r['image_size']:>5}{r['batch_size']:>7}"
              f"{r['ms_per_step']:>10.1f}{r['images_per_s']:>10.1f}{peak:>9}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return record


if __name__ == "__main__":
    main()
