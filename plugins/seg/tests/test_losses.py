"""The per-pixel losses against direct, slow computations of their formulas."""

import math

import pytest
import torch

from ltcore_gml import ClassWiseQueue
from ltcore_seg.losses import IGNORE, pixel_cross_entropy, pixel_gml_loss, sample_pixels


def slow_pixel_ce(logits, masks, log_prior, tau):
    """mmsegmentation's mean: the sum over labelled pixels over the count of all pixels."""
    b, c, h, w = logits.shape
    total = 0.0
    for i in range(b):
        for y in range(h):
            for x in range(w):
                label = int(masks[i, y, x])
                if label == IGNORE:
                    continue
                z = [float(logits[i, k, y, x]) + tau * float(log_prior[k]) for k in range(c)]
                top = max(z)
                total += -(z[label] - top - math.log(sum(math.exp(v - top) for v in z)))
    return total / (b * h * w)


@pytest.mark.parametrize("tau", [0.0, 1.0, 0.3])
def test_pixel_cross_entropy_is_the_mean_over_all_pixels_of_the_adjusted_ce(tau):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 3, 5, generator=g)
    masks = torch.randint(0, 4, (2, 3, 5), generator=g)
    masks[0, 0, :2] = IGNORE
    prior = torch.tensor([0.6, 0.25, 0.1, 0.05])
    got = pixel_cross_entropy(logits, masks, prior.log(), tau)
    assert float(got) == pytest.approx(slow_pixel_ce(logits, masks, prior.log(), tau), rel=1e-5)


def test_pixel_cross_entropy_upsamples_coarse_logits_to_the_masks():
    """Logits at the features' resolution are upsampled bilinearly to the masks before the
    logit adjustment and the CE, as an upsampled forward would have given them."""
    g = torch.Generator().manual_seed(4)
    coarse = torch.randn(2, 3, 2, 3, generator=g)
    masks = torch.randint(0, 3, (2, 8, 12), generator=g)
    prior = torch.tensor([0.7, 0.2, 0.1])
    fine = torch.nn.functional.interpolate(coarse, size=(8, 12), mode="bilinear",
                                           align_corners=False)
    got = pixel_cross_entropy(coarse, masks, prior.log(), 0.5)
    assert torch.equal(got, pixel_cross_entropy(fine, masks, prior.log(), 0.5))
    assert float(got) == pytest.approx(slow_pixel_ce(fine, masks, prior.log(), 0.5), rel=1e-5)


def test_pixel_cross_entropy_hand_case():
    # one pixel of class 1 with logits (0, 0) and one ignored pixel: log 2 over 2 pixels
    logits = torch.zeros(1, 2, 1, 2)
    masks = torch.tensor([[[1, IGNORE]]])
    assert float(pixel_cross_entropy(logits, masks)) == pytest.approx(math.log(2) / 2)


def slow_gml(query, labels, features, feature_labels, valid, prior, tau, alpha):
    """Eq. 10: -log softmax_c(log mean_{z in Z_c} exp(q.z / tau) + alpha log pi_c)[y], the mean
    over the queries; classes without an entry are left out of the softmax."""
    losses = []
    for q, y in zip(query.tolist(), labels.tolist()):
        scores = {}
        for c in range(len(prior)):
            entries = [f for f, l, v in zip(features.tolist(), feature_labels.tolist(),
                                            valid.tolist()) if l == c and v]
            if entries:
                mean = sum(math.exp(sum(a * b for a, b in zip(q, f)) / tau)
                           for f in entries) / len(entries)
                scores[c] = math.log(mean) + alpha * math.log(float(prior[c]))
        if y not in scores:
            continue
        top = max(scores.values())
        losses.append(-(scores[y] - top - math.log(sum(math.exp(v - top)
                                                       for v in scores.values()))))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("alpha", [0.0, 0.2, 1.0])
def test_pixel_gml_agrees_with_eq_10(alpha):
    g = torch.Generator().manual_seed(alpha.__hash__() % 1000)
    prior = torch.tensor([0.7, 0.2, 0.1])
    queue = ClassWiseQueue.from_class_counts(torch.tensor([70, 20, 10]), 12, 2, 4)
    written = torch.nn.functional.normalize(torch.randn(9, 4, generator=g), dim=1)
    written_labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 0, 1])
    queue.enqueue(written, written_labels, torch.arange(9))
    query = torch.nn.functional.normalize(torch.randn(5, 4, generator=g), dim=1)
    labels = torch.tensor([0, 1, 2, 0, 1])
    got = pixel_gml_loss(query, labels, queue, prior, 0.07, alpha)
    want = slow_gml(query, labels, queue.features(), queue.labels(), queue.valid(), prior, 0.07,
                    alpha)
    assert float(got) == pytest.approx(want, rel=1e-4)


def test_pixel_gml_hand_case():
    # one query equal to its class's only entry, orthogonal to the other class's: with
    # tau 1 and alpha 0 the loss is -log(e / (e + 1))
    queue = ClassWiseQueue(torch.tensor([1, 1]), 2)
    queue.enqueue(torch.eye(2), torch.tensor([0, 1]), torch.arange(2))
    loss = pixel_gml_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), queue,
                          torch.tensor([0.5, 0.5]), 1.0, 0.0)
    assert float(loss) == pytest.approx(-math.log(math.e / (math.e + 1)))


def test_sample_pixels_takes_at_most_k_labelled_pixels_per_class_at_the_feature_size():
    features = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    masks = torch.full((2, 8, 8), IGNORE, dtype=torch.long)
    masks[0, :4] = 1          # 8 feature pixels of class 1 in image 0
    masks[1, :, :2] = 2       # 4 feature pixels of class 2 in image 1
    masks[1, 6:, 6:] = 0      # 1 feature pixel of class 0 in image 1
    got, labels, images = sample_pixels(features, masks, per_class=3,
                                        generator=torch.Generator().manual_seed(0))
    assert sorted(labels.tolist()) == [0, 1, 1, 1, 2, 2, 2]
    assert images[labels == 1].eq(0).all() and images[labels != 1].eq(1).all()
    small = torch.nn.functional.interpolate(masks[:, None].float(), size=(4, 4),
                                            mode="nearest")[:, 0].long()
    for f, label, image in zip(got, labels, images):
        # each sampled feature is a pixel of its image whose downsampled label is its label
        where = (features[image].permute(1, 2, 0) == f).all(dim=-1)
        assert where.sum() == 1 and small[image][where].item() == label
