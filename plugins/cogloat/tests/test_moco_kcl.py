"""The ``moco-kcl`` preset: the paper's MoCo-based KCL baseline (Tables 1, 3-5)."""

import math

import torch

from ltcore import Plugins, prepare, resolve
from ltcore.testing import FAST_SETTINGS
from ltcore_cogloat.loss import global_contrastive_loss


def test_preset_resolves_to_kcl_options():
    settings = resolve(Plugins(), ["cogloat"], ["cifar100-lt", "moco-kcl"])
    options = settings.plugins["cogloat"]
    assert (options.k, options.variant, options.kcl_positives) == (0, "kcl+kglobal", 6)
    assert not options.adaptive_temperature and not options.include_batch_keys
    assert settings.run.dataset == "cifar100-lt"  # composes with the dataset presets


def test_preset_run_selects_kcl_positives():
    # the run the preset assembles: no k-global positive views, the KCL loss mix
    plugins = Plugins()
    settings = resolve(plugins, ["cogloat"], ["moco-kcl"],
                       assignments=[*FAST_SETTINGS, "device=cpu"], overrides={"epochs": 1})
    run = prepare(plugins, ["cogloat"], settings)
    (term,) = [t.fn for t in run.main_stage.losses if t.name == "cogloat"]
    assert term.k == 0 and term.positive_roles == []
    assert term.variant == "kcl+kglobal" and term.kcl_positives == 6
    assert term.temperatures is None and not term.include_batch_keys


def test_kcl_loss_by_direct_computation():
    # KCL (Kang et al.): positives the own key and up to 6 same-label queue keys (here fewer,
    # so all of them), negatives the other queue keys, the batch's keys not used
    generator = torch.Generator().manual_seed(0)

    def unit(*shape):
        return torch.nn.functional.normalize(torch.randn(*shape, generator=generator,
                                                         dtype=torch.float64), dim=-1)

    queries, keys, queue = unit(3, 4), unit(3, 4), unit(7, 4)
    labels = torch.tensor([0, 1, 0])
    queue_labels = torch.tensor([0, 1, 1, 2, 0, 2, 2])
    tau = 0.1
    loss = global_contrastive_loss(queries, keys, keys.new_zeros(3, 0, 4), queue, labels,
                                   queue_labels, tau, variant="kcl+kglobal",
                                   include_batch_keys=False, kcl_positives=6)
    total = 0.0
    for i in range(3):
        positives = [keys[i]] + [queue[m] for m in range(7) if queue_labels[m] == labels[i]]
        negatives = [queue[m] for m in range(7) if queue_labels[m] != labels[i]]
        negative_sum = sum(math.exp(float(queries[i] @ n) / tau) for n in negatives)
        terms = []
        for p in positives:
            s = math.exp(float(queries[i] @ p) / tau)
            terms.append(-math.log(s / (s + negative_sum)))
        total += sum(terms) / len(terms)
    assert math.isclose(float(loss), total / 3, rel_tol=1e-9)
