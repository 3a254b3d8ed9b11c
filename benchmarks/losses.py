"""Cost of BCL's class averaging and of GML's student step at the sizes of the large recipes.

(i) BCL: forward + backward time and peak extra memory of ``balanced_contrastive_loss`` (L1,
the default form) for batches B of 64 and 256 images (N = 2B rows, two views) and C of 100,
1,000 and 8,142 classes (iNaturalist 2018), plus L2 and the loss without prototypes
(``class_complement=False``) at B = 256, C = 8,142, against ``onehot_bcl_loss``: a copy of the
previous implementation, which built ``(N + C) x C`` and ``N x C`` one-hot matrices.

(ii) GML: one student step's loss work at queue sizes k of 4,096, 16,384 (ImageNet-LT) and
65,536 (iNaturalist): the key MLP (``MLPHead(2048, 1024, 2048)``, the ImageNet preset's) over
the whole queue of 2,048-d teacher features, both losses (``L_GML`` and the temperature loss)
against a batch of 128 queries, and the backward to the queries, the key MLP and ``log tau_g``.
``previous`` is the formulation before the change (fp32 key MLP, the similarities computed once
per loss); ``shared`` stores the queue in and projects it in the compute precision (bf16
autocast or fp32) and computes the similarities once for both losses, the keys' normalisation
applied to the product; ``stored keys`` is the step of the
non-default ``gml.queue_contents = key-embeddings`` (key embeddings stored when enqueued, the key
MLP over the batch's 128 teacher features only, their rows written into the stored queue with
their gradient). The k = 65,536 rows compare the previous step
with the compute precision's only (bf16 where both are timed), to keep the run short.

Time: ``time.perf_counter`` around each call (after ``torch.cuda.synchronize`` on CUDA), the
median of ``--repeats`` calls (``--large-repeats`` for k = 65,536) after ``--warmup`` untimed
ones, the variants of a row interleaved so that changes of the machine's load hit all of them.
Peak extra memory: on CUDA ``torch.cuda.max_memory_allocated`` minus what was allocated before
the call; on the CPU the profiler's memory events (``torch.profiler.profile(profile_memory=
True)``: every allocation and free of the call with its time stamp), summed in time order, the
peak of that running sum. Inputs allocated before the call are not counted; the gradients the
call returns are. The GML rows are timed only.

Example::

    python benchmarks/losses.py                # CUDA if there, else CPU (2 cores: ~2.5 min)
    python benchmarks/losses.py --quick        # without the k = 65,536 rows
    python benchmarks/losses.py --device cuda --precision bf16
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # the profiler's start-up warnings

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from ltcore_bcl import balanced_contrastive_loss  # noqa: E402
from ltcore_gml.loss import (gml_loss, gml_loss_from_similarities,  # noqa: E402
                             similarities_to_keys, temperature_loss,
                             temperature_loss_from_similarities)
from ltcore_gml.bank import with_fresh_rows  # noqa: E402
from ltcore_gml.queue import class_queue_sizes  # noqa: E402

from ltcore import MLPHead  # noqa: E402
from ltcore.losses import (compute_dtype, full_precision, masked_logsumexp,  # noqa: E402
                           positive_mean_loss)

MB = 2**20


def onehot_bcl_loss(embeddings, labels, prototypes, temperature, *, averaging="L1",
                    class_complement=True):
    """The previous implementation of ``balanced_contrastive_loss`` (L1 and L2 forms, no logit
    biases), kept for comparison: class sizes and class sums through one-hot matrices."""
    num_rows = embeddings.shape[0]
    num_classes = prototypes.shape[0]
    device = embeddings.device
    with full_precision(device):
        dtype = compute_dtype(embeddings.dtype, prototypes.dtype)
        features = embeddings.to(dtype)
        class_ids = torch.arange(num_classes, device=device)
        if class_complement:
            prototype_logits = features @ prototypes.to(dtype).T / temperature
        logits = features @ features.T / temperature
        contrast_labels = labels
        if class_complement:
            logits = torch.cat([logits, prototype_logits], dim=1)
            contrast_labels = torch.cat([labels, class_ids])
        contrast_mask = ~torch.eye(num_rows, logits.shape[1], dtype=torch.bool, device=device)
        positive_mask = (labels[:, None] == contrast_labels[None, :]) & contrast_mask
        contrast_one_hot = F.one_hot(contrast_labels, num_classes).to(dtype)
        anchor_one_hot = F.one_hot(labels, num_classes).to(dtype)
        class_sizes = contrast_one_hot.sum(dim=0)[None, :] - anchor_one_hot
        if averaging == "L1":
            entry_class_sizes = class_sizes[:, contrast_labels].clamp(min=1)
            log_denominator = masked_logsumexp(
                logits - torch.log(entry_class_sizes), contrast_mask, keepdim=True
            )
        else:
            class_logit_sums = logits.masked_fill(~contrast_mask, 0.0) @ contrast_one_hot
            class_mean_logits = class_logit_sums / class_sizes.clamp(min=1)
            log_denominator = masked_logsumexp(class_mean_logits, class_sizes > 0, keepdim=True)
        return positive_mean_loss(logits - log_denominator, positive_mask)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(calls: dict, device: torch.device, repeats: int, warmup: int) -> dict:
    """Median wall-clock seconds of each of ``calls`` (name -> function) over ``repeats``
    calls after ``warmup``, the calls interleaved so that changes of load spread over all."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def peak_extra_bytes(call, device: torch.device) -> int:
    """Peak of the memory ``call()`` allocates beyond what was allocated before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call()
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as profile:
        call()
    changes = sorted((event.start_ns(), event.nbytes())
                     for event in profile.profiler.kineto_results.events()
                     if event.name() == "[memory]"
                     and event.device_type() == torch.autograd.DeviceType.CPU)
    live = peak = 0
    for _, change in changes:
        live += change
        peak = max(peak, live)
    return peak


# -- (i) BCL -----------------------------------------------------------------------------------


def bcl_inputs(batch: int, num_classes: int, dim: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    image_labels = torch.randint(0, num_classes, (batch,), generator=generator)
    labels = image_labels.repeat(2).to(device)
    embeddings = F.normalize(torch.randn(2 * batch, dim, generator=generator), dim=1)
    prototypes = F.normalize(torch.randn(num_classes, dim, generator=generator), dim=1)
    return (embeddings.to(device).requires_grad_(), labels,
            prototypes.to(device).requires_grad_())


def bcl_rows(args, device: torch.device) -> list[dict]:
    cases = [(batch, classes, "L1", True) for batch in (64, 256) for classes in (100, 1000, 8142)]
    cases += [(256, 8142, "L2", True), (256, 8142, "L1", False)]
    rows = []
    for batch, classes, averaging, complement in cases:
        embeddings, labels, prototypes = bcl_inputs(batch, classes, args.bcl_dim, device)
        options = {"averaging": averaging, "class_complement": complement}
        row = {"batch": batch, "classes": classes, "form": averaging + ("" if complement
                                                                        else ", no prototypes")}
        values = {}

        def step(loss_fn, name):
            loss = loss_fn(embeddings, labels, prototypes, 0.07, **options)
            torch.autograd.grad(loss, (embeddings, prototypes), allow_unused=True)
            values[name] = loss.detach()

        calls = {"previous": lambda: step(onehot_bcl_loss, "previous"),
                 "new": lambda: step(balanced_contrastive_loss, "new")}
        for name, seconds in median_seconds(calls, device, args.repeats, args.warmup).items():
            row[f"{name}_s"] = seconds
            row[f"{name}_mb"] = peak_extra_bytes(calls[name], device) / MB
        row["same"] = bool(torch.equal(values["previous"], values["new"]))
        row["difference"] = float((values["previous"] - values["new"]).abs())
        rows.append(row)
        print(f"  bcl B={batch} C={classes} {row['form']}: previous {row['previous_s']:.4f} s "
              f"{row['previous_mb']:.0f} MB, new {row['new_s']:.4f} s {row['new_mb']:.0f} MB",
              flush=True)
    return rows


# -- (ii) GML ----------------------------------------------------------------------------------


def long_tailed_counts(num_classes: int, most: int = 1280, fewest: int = 5) -> torch.Tensor:
    """Exponentially decaying class counts from ``most`` to ``fewest`` (ImageNet-LT's range)."""
    ratio = torch.arange(num_classes, dtype=torch.float64) / max(num_classes - 1, 1)
    return (most * (fewest / most) ** ratio).round().long()


class GMLProblem:
    """One step's inputs: a filled queue of teacher features with its labels and indices, the
    key MLP, the queries and ``log tau_g``."""

    def __init__(self, queue_size: int, num_classes: int, device: torch.device, batch: int = 128,
                 feature_dim: int = 2048, hidden: int = 2048, projection_dim: int = 1024):
        generator = torch.Generator().manual_seed(queue_size)
        counts = long_tailed_counts(num_classes)
        sizes = class_queue_sizes(counts, queue_size, 2)
        self.prior = (counts.double() / counts.sum()).float().to(device)
        self.bank_labels = torch.repeat_interleave(torch.arange(num_classes), sizes).to(device)
        self.queue = torch.randn(queue_size, feature_dim, generator=generator).to(device)
        self.queue_bf16 = self.queue.bfloat16()  # the queue of a bf16 run
        self.bank_indices = torch.randint(0, int(counts.sum()), (queue_size,),
                                          generator=generator).to(device)
        self.valid = torch.ones(queue_size, dtype=torch.bool, device=device)
        self.labels = torch.multinomial(self.prior.cpu(), batch, replacement=True,
                                        generator=generator).to(device)
        self.indices = self.bank_indices[:batch].clone()
        query = F.normalize(torch.randn(batch, projection_dim, generator=generator), dim=1)
        self.query = query.to(device).requires_grad_()
        self.key_head = MLPHead(feature_dim, projection_dim, hidden).to(device)
        self.log_temperature = torch.tensor(0.07, device=device).log().requires_grad_()
        # gml.queue_contents = key-embeddings: unit key embeddings stored when enqueued, the
        # batch's own keys (projected from its teacher features) written to their slots
        self.stored_keys = F.normalize(torch.randn(queue_size, projection_dim,
                                                   generator=generator), dim=1).to(device)
        self.batch_features = torch.randn(batch, feature_dim, generator=generator).to(device)
        self.slots = torch.randperm(queue_size, generator=generator)[:batch].to(device)
        self.writers = torch.arange(batch, device=device)
        self.trained = [self.query, self.log_temperature, *self.key_head.parameters()]

    def previous_step(self) -> None:
        """The step before the change: fp32 key MLP, one similarity product per loss."""
        bank = F.normalize(self.key_head(self.queue.float()), dim=1)
        tau = self.log_temperature.exp().detach()
        loss = gml_loss(self.query, self.labels, bank, self.bank_labels, self.prior, tau,
                        bank_valid=self.valid)
        loss = loss + temperature_loss(self.query, self.labels, bank, self.bank_labels,
                                       self.bank_indices, self.indices, self.prior,
                                       self.log_temperature, bank_valid=self.valid)
        torch.autograd.grad(loss, self.trained)

    def losses_and_backward(self, similarities: torch.Tensor) -> None:
        """Both losses from the shared similarities, and the backward to what is trained."""
        tau = self.log_temperature.exp().detach()
        loss = gml_loss_from_similarities(similarities, self.labels, self.bank_labels,
                                          self.prior, tau, bank_valid=self.valid)
        loss = loss + temperature_loss_from_similarities(
            similarities, self.labels, self.bank_labels, self.bank_indices, self.indices,
            self.prior, self.log_temperature, bank_valid=self.valid)
        torch.autograd.grad(loss, self.trained)

    def shared_step(self, precision: str) -> None:
        """The step now: the queue stored and the key MLP run in the compute precision, one
        similarity product shared by both losses, normalised after the product."""
        device = self.queue.device.type
        bf16 = precision == "bf16"
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            projected = self.key_head(self.queue_bf16 if bf16 else self.queue)
        similarities, _ = similarities_to_keys(self.query, projected)
        self.losses_and_backward(similarities)

    def stored_keys_step(self, precision: str) -> None:
        """The step of the ``key-embeddings`` option: the key MLP over the batch only."""
        device = self.queue.device.type
        with torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16"):
            projected = self.key_head(self.batch_features)
        fresh = F.normalize(projected.float(), dim=1)
        bank = with_fresh_rows(self.stored_keys, fresh, self.slots, self.writers)
        similarities = self.query @ bank.T
        self.losses_and_backward(similarities)


def gml_rows(args, device: torch.device, precisions: list[str]) -> list[dict]:
    sizes = [(4096, 1000), (16384, 1000)] + ([] if args.quick else [(65536, 8142)])
    rows = []
    for queue_size, classes in sizes:
        problem = GMLProblem(queue_size, classes, device)
        large = queue_size > 16384
        calls = {"previous (fp32)": problem.previous_step}
        calls.update({f"shared ({p})": lambda p=p: problem.shared_step(p)
                      for p in (precisions[-1:] if large else precisions)})
        calls[f"stored keys ({precisions[-1]})"] = lambda: problem.stored_keys_step(precisions[-1])
        repeats = args.large_repeats if large else args.repeats
        for name, seconds in median_seconds(calls, device, repeats, args.warmup).items():
            rows.append({"k": queue_size, "classes": classes, "variant": name, "s": seconds,
                         "repeats": repeats})
            print(f"  gml k={queue_size} {name}: {seconds:.3f} s", flush=True)
    return rows


def cpu_has_bf16_instructions() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and any(flag in cpuinfo.read_text() for flag in ("avx512_bf16",
                                                                             "amx_bf16"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="GML compute precision of the new step (auto: bf16 on CUDA, both "
                             "fp32 and bf16 on the CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement")
    parser.add_argument("--large-repeats", type=int, default=1,
                        help="timed calls per variant of the k = 65,536 GML rows")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--bcl-dim", type=int, default=1024,
                        help="embedding width of the BCL rows (the large presets' projection)")
    parser.add_argument("--quick", action="store_true", help="skip the k = 65,536 GML rows")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.precision == "auto":
        precisions = ["bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    else:
        precisions = [args.precision]
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
                    f"{torch.get_num_threads()} torch threads")
    print(f"# loss costs on {device} ({machine}), torch {torch.__version__}; median of "
          f"{args.repeats} calls after {args.warmup} warm-up", flush=True)

    bcl = bcl_rows(args, device)
    gml = gml_rows(args, device, precisions)

    print(f"\n## BCL forward + backward, D = {args.bcl_dim} (previous: one-hot class counts)")
    print("|   B |     C | form              | previous s | previous MB |  new s | new MB "
          "| same value |")
    print("|----:|------:|-------------------|-----------:|------------:|-------:|-------:"
          "|-----------:|")
    for row in bcl:
        same = "yes" if row["same"] else f"{row['difference']:.1e}"
        print(f"| {row['batch']:3d} | {row['classes']:5d} | {row['form']:<17} | "
              f"{row['previous_s']:10.4f} | {row['previous_mb']:11.1f} | {row['new_s']:6.4f} | "
              f"{row['new_mb']:6.1f} | {same:>10} |")

    print("\n## GML step: key MLP 2048-2048-1024 over the queue, L_GML + L_tau, backward, B = 128")
    print("|     k |    C | variant            |      s | x previous | timed calls |")
    print("|------:|-----:|--------------------|-------:|-----------:|------------:|")
    previous = {row["k"]: row["s"] for row in gml if row["variant"].startswith("previous")}
    for row in gml:
        print(f"| {row['k']:5d} | {row['classes']:4d} | {row['variant']:<18} | {row['s']:6.3f} | "
              f"{row['s'] / previous[row['k']]:10.2f} | {row['repeats']:11d} |")

    print()
    largest = next(r for r in bcl if (r["batch"], r["classes"], r["form"]) == (256, 8142, "L1"))
    thousand = next(r for r in bcl if (r["batch"], r["classes"], r["form"]) == (256, 1000, "L1"))
    ratio = largest["new_s"] / thousand["new_s"]
    print(f"{'PASS' if largest['new_mb'] <= 200 else 'FAIL'}: BCL B=256 C=8142 extra memory "
          f"{largest['new_mb']:.1f} MB <= 200 MB on {device} (previous "
          f"{largest['previous_mb']:.1f} MB)")
    print(f"{'PASS' if ratio <= 10 else 'FAIL'}: BCL B=256 time C=8142 / C=1000 = {ratio:.2f} "
          f"<= 10 on {device} (previous "
          f"{largest['previous_s'] / thousand['previous_s']:.2f})")
    compute = "bf16" if "bf16" in precisions else precisions[0]
    at_imagenet = {row["variant"]: row["s"] for row in gml if row["k"] == 16384}
    shared = at_imagenet[f"shared ({compute})"]
    speedup = at_imagenet["previous (fp32)"] / shared
    note = ""
    if device.type == "cpu" and compute == "bf16":
        flags = "has" if cpu_has_bf16_instructions() else "lacks"
        note = (f"; on the CPU the halving comes mostly from the bf16 key MLP (this CPU {flags} "
                f"avx512_bf16 / amx_bf16)")
        if "fp32" in precisions:
            note += (f", the shared, product-normalised similarities alone give "
                     f"{at_imagenet['previous (fp32)'] / at_imagenet['shared (fp32)']:.2f}x")
    print(f"{'PASS' if speedup >= 2 else 'FAIL'}: GML step at k=16384 (ImageNet-LT) "
          f"{speedup:.2f}x faster than the previous one ({compute} vs fp32) >= 2x{note}")
    stored = at_imagenet[f"stored keys ({precisions[-1]})"]
    print(f"GML step at k=16384 with gml.queue_contents = key-embeddings (not the reference's): "
          f"{at_imagenet['previous (fp32)'] / stored:.1f}x faster than the previous one")


if __name__ == "__main__":
    main()
