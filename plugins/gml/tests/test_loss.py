import math

import pytest
import torch
import torch.nn.functional as F

from ltcore_gml.loss import class_log_mean_exp, gml_loss, temperature_loss

DTYPE = torch.float64


def _reference_gml(query, labels, bank, bank_labels, prior, temperature, alpha, usable):
    """Eq. 10 written entry by entry; classes without usable entries are skipped, and so
    are queries whose own class has none."""
    losses = []
    num_classes = len(prior)
    for b in range(query.shape[0]):
        logits = {}
        for c in range(num_classes):
            terms = [
                math.exp(float(query[b] @ bank[j]) / temperature)
                for j in range(bank.shape[0])
                if int(bank_labels[j]) == c and bool(usable[b][j])
            ]
            if terms:
                logits[c] = math.log(sum(terms) / len(terms)) + alpha * math.log(float(prior[c]))
        target = int(labels[b])
        if target not in logits:
            continue
        denominator = sum(math.exp(v) for v in logits.values())
        losses.append(-(logits[target] - math.log(denominator)))
    return sum(losses) / len(losses) if losses else 0.0


def _random_problem(seed, batch=6, bank_size=20, classes=4, dim=5, dtype=DTYPE):
    gen = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    bank = F.normalize(torch.randn(bank_size, dim, generator=gen, dtype=dtype), dim=1)
    bank_labels = torch.arange(bank_size) % classes
    counts = torch.randint(1, 50, (classes,), generator=gen).to(dtype)
    prior = counts / counts.sum()
    return gen, query, labels, bank, bank_labels, prior


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("temperature", "alpha"), [(0.1, 1.0), (0.5, 0.2), (1.0, 0.0)])
def test_gml_matches_reference(seed, temperature, alpha):
    _, query, labels, bank, bank_labels, prior = _random_problem(seed)
    loss = gml_loss(query, labels, bank, bank_labels, prior, temperature, alpha)
    usable = torch.ones(query.shape[0], bank.shape[0], dtype=torch.bool)
    expected = _reference_gml(query, labels, bank, bank_labels, prior, temperature, alpha, usable)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


@pytest.mark.parametrize("seed", [3, 4])
def test_gml_matches_reference_with_validity_and_exclusion_masks(seed):
    gen, query, labels, bank, bank_labels, prior = _random_problem(seed)
    valid = torch.rand(bank.shape[0], generator=gen) > 0.3
    exclude = torch.rand(query.shape[0], bank.shape[0], generator=gen) > 0.6
    loss = gml_loss(query, labels, bank, bank_labels, prior, 0.2, bank_valid=valid, exclude=exclude)
    usable = valid.unsqueeze(0) & ~exclude
    expected = _reference_gml(query, labels, bank, bank_labels, prior, 0.2, 1.0, usable)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_gml_float32_is_stable_at_small_temperature():
    _, query, labels, bank, bank_labels, prior = _random_problem(
        5, batch=16, bank_size=64, classes=8, dim=16
    )
    loss = gml_loss(query.float(), labels, bank.float(), bank_labels, prior.float(), 0.01)
    usable = torch.ones(16, 64, dtype=torch.bool)
    expected = _reference_gml(query, labels, bank, bank_labels, prior, 0.01, 1.0, usable)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float32), rtol=1e-5, atol=0)


def test_gml_hand_computed():
    # Class 0 holds (1, 0) and (0, 1), class 1 holds (-1, 0); query (1, 0), tau 1, balanced prior.
    # s_0 = log((e + 1) / 2), s_1 = -1, loss = log(1 + e^{s_1 - s_0}) = log(1 + 2 / (e (e + 1))).
    query = torch.tensor([[1.0, 0.0]], dtype=DTYPE)
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]], dtype=DTYPE)
    bank_labels = torch.tensor([0, 0, 1])
    loss = gml_loss(
        query, torch.tensor([0]), bank, bank_labels, torch.tensor([0.5, 0.5], dtype=DTYPE), 1.0
    )
    assert loss.item() == pytest.approx(math.log(1.0 + 2.0 / (math.e * (math.e + 1.0))), rel=1e-12)
    # A prior (0.8, 0.2) with alpha 1 moves the margin by log(0.2 / 0.8).
    skewed = gml_loss(
        query, torch.tensor([0]), bank, bank_labels, torch.tensor([0.8, 0.2], dtype=DTYPE), 1.0
    )
    assert skewed.item() == pytest.approx(
        math.log(1.0 + 0.25 * 2.0 / (math.e * (math.e + 1.0))), rel=1e-12
    )


def test_class_log_mean_exp_hand_computed_and_empty_class():
    logits = torch.tensor([[0.0, math.log(3.0), 5.0, 1.0]], dtype=DTYPE)
    entry_labels = torch.tensor([0, 0, 1, 2])
    usable = torch.tensor([[True, True, True, False]])
    scores = class_log_mean_exp(logits, entry_labels, usable, 4)
    torch.testing.assert_close(scores[0, :2], torch.tensor([math.log(2.0), 5.0], dtype=DTYPE))
    assert scores[0, 2] == float("-inf") and scores[0, 3] == float("-inf")


def test_classes_without_entries_leave_the_softmax_and_gradients_stay_finite():
    _, query, labels, bank, bank_labels, prior = _random_problem(6, classes=4)
    labels = torch.tensor([0, 1, 3, 3, 0, 1])
    valid = bank_labels != 2
    exclude = torch.zeros(6, bank.shape[0], dtype=torch.bool)
    exclude[2] = bank_labels == 3  # query 2 has no usable entry of its own class
    query = query.clone().requires_grad_(True)
    loss = gml_loss(query, labels, bank, bank_labels, prior, 0.3, bank_valid=valid, exclude=exclude)
    usable = valid.unsqueeze(0) & ~exclude
    expected = _reference_gml(query.detach(), labels, bank, bank_labels, prior, 0.3, 1.0, usable)
    torch.testing.assert_close(
        loss.detach(), torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0
    )
    loss.backward()
    assert torch.isfinite(query.grad).all()
    assert torch.equal(query.grad[2], torch.zeros_like(query.grad[2]))


def test_loss_is_zero_without_any_defined_query():
    _, query, labels, bank, bank_labels, prior = _random_problem(7)
    valid = torch.zeros(bank.shape[0], dtype=torch.bool)
    query = query.clone().requires_grad_(True)
    loss = gml_loss(query, labels, bank, bank_labels, prior, 0.1, bank_valid=valid)
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(query.grad, torch.zeros_like(query))


def _balanced_problem(seed, classes=5, per_class=6, batch=8, dim=8):
    gen = torch.Generator().manual_seed(seed)
    query = F.normalize(torch.randn(batch, dim, generator=gen, dtype=DTYPE), dim=1)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    bank = F.normalize(torch.randn(classes * per_class, dim, generator=gen, dtype=DTYPE), dim=1)
    bank_labels = torch.arange(classes).repeat_interleave(per_class)
    prior = torch.full((classes,), 1.0 / classes, dtype=DTYPE)
    return query, labels, bank, bank_labels, prior


def _supcon_per_query(query, labels, bank, bank_labels, temperature):
    """SupCon (Khosla, L_out) of each query against the bank: -mean_{positives} log softmax."""
    log_softmax = F.log_softmax(query @ bank.T / temperature, dim=1)
    positives = labels.unsqueeze(1) == bank_labels.unsqueeze(0)
    return -(log_softmax * positives).sum(1) / positives.sum(1)


def _gml_per_query(query, labels, bank, bank_labels, prior, temperature, alpha=1.0):
    return torch.stack(
        [
            gml_loss(
                query[i : i + 1], labels[i : i + 1], bank, bank_labels, prior, temperature, alpha
            )
            for i in range(len(labels))
        ]
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_balanced_gml_is_eq9_and_bounded_by_supcon(seed, temperature):
    query, labels, bank, bank_labels, prior = _balanced_problem(seed)
    per_class = int((bank_labels == 0).sum())
    gml = _gml_per_query(query, labels, bank, bank_labels, prior, temperature)
    # First line of eq. 9: with equal priors and queue lengths the prior term and 1/|Z_c| cancel.
    exps = torch.exp(query @ bank.T / temperature)
    positives = labels.unsqueeze(1) == bank_labels.unsqueeze(0)
    eq9 = -torch.log((exps * positives).sum(1) / exps.sum(1))
    torch.testing.assert_close(gml, eq9, rtol=1e-10, atol=0)
    torch.testing.assert_close(
        gml, _gml_per_query(query, labels, bank, bank_labels, prior, temperature, 0.3)
    )
    # Jensen (log of a mean >= mean of logs): L_GML + log|Z_y| <= L_SupCon, per query.
    supcon = _supcon_per_query(query, labels, bank, bank_labels, temperature)
    assert bool((gml + math.log(per_class) <= supcon + 1e-12).all())
    assert bool((gml + math.log(per_class) < supcon).any())
    # Eq. 9 as printed (sum, not mean, over Z_y on the right): -L_GML >= sum_{z_y} log softmax.
    log_softmax = F.log_softmax(query @ bank.T / temperature, dim=1)
    assert bool((-gml >= (log_softmax * positives).sum(1)).all())
    # Batch means obey the same bound.
    batch = gml_loss(query, labels, bank, bank_labels, prior, temperature)
    assert batch.item() + math.log(per_class) <= supcon.mean().item() + 1e-12


def test_balanced_bound_is_tight_when_positives_coincide():
    query, labels, bank, bank_labels, prior = _balanced_problem(4, classes=3, per_class=4, batch=1)
    bank = bank.clone()
    bank[bank_labels == labels[0]] = bank[bank_labels == labels[0]][0]
    gml = gml_loss(query, labels, bank, bank_labels, prior, 0.2)
    supcon = _supcon_per_query(query, labels, bank, bank_labels, 0.2)
    torch.testing.assert_close(gml + math.log(4), supcon[0], rtol=1e-10, atol=0)


def _problem_with_own_images(seed):
    gen = torch.Generator().manual_seed(seed)
    classes, batch, bank_size, dim = 3, 6, 24, 6
    query = F.normalize(torch.randn(batch, dim, generator=gen, dtype=DTYPE), dim=1)
    labels = torch.randint(0, classes, (batch,), generator=gen)
    query_indices = torch.arange(100, 100 + batch)
    bank = F.normalize(torch.randn(bank_size, dim, generator=gen, dtype=DTYPE), dim=1)
    bank_labels = torch.arange(bank_size) % classes
    bank_indices = torch.arange(bank_size)
    # The first `batch` slots of each query's class hold that query's own image (its key view).
    own_slots = []
    for i in range(batch):
        slot = int(torch.nonzero((bank_labels == labels[i]) & (bank_indices < 100))[0])
        bank_indices[slot] = query_indices[i]
        bank[slot] = F.normalize(
            query[i] + 0.05 * torch.randn(dim, generator=gen, dtype=DTYPE), dim=0
        )
        own_slots.append(slot)
    prior = torch.tensor([0.6, 0.3, 0.1], dtype=DTYPE)
    return gen, query, labels, query_indices, bank, bank_labels, bank_indices, own_slots, prior


def test_temperature_loss_is_gml_without_own_image_entries():
    _, query, labels, query_indices, bank, bank_labels, bank_indices, _, prior = (
        _problem_with_own_images(0)
    )
    log_temperature = torch.tensor(math.log(0.1), dtype=DTYPE)
    loss = temperature_loss(
        query, labels, bank, bank_labels, bank_indices, query_indices, prior, log_temperature, 0.5
    )
    usable = query_indices.unsqueeze(1) != bank_indices.unsqueeze(0)
    expected = _reference_gml(query, labels, bank, bank_labels, prior, 0.1, 0.5, usable)
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=DTYPE), rtol=1e-5, atol=0)


def test_temperature_gradient_ignores_own_image_entries():
    gen, query, labels, query_indices, bank, bank_labels, bank_indices, own_slots, prior = (
        _problem_with_own_images(1)
    )
    log_temperature = torch.tensor(math.log(0.1), dtype=DTYPE, requires_grad=True)
    query = query.clone().requires_grad_(True)
    bank = bank.clone().requires_grad_(True)
    temperature_loss(
        query, labels, bank, bank_labels, bank_indices, query_indices, prior, log_temperature
    ).backward()
    assert query.grad is None and bank.grad is None  # similarities are detached
    assert log_temperature.grad is not None and log_temperature.grad != 0
    query, bank = query.detach(), bank.detach()
    for i, slot in enumerate(own_slots):
        one = slice(i, i + 1)
        altered = bank.clone()
        altered[slot] = F.normalize(torch.randn(bank.shape[1], generator=gen, dtype=DTYPE), dim=0)
        losses, grads = [], []
        for features in (bank, altered):
            loss = temperature_loss(
                query[one],
                labels[one],
                features,
                bank_labels,
                bank_indices,
                query_indices[one],
                prior,
                log_temperature,
            )
            losses.append(loss.item())
            grads.append(torch.autograd.grad(loss, log_temperature)[0].item())
        assert losses[0] == losses[1] and grads[0] == grads[1]
        # The main loss, which keeps the query's own entry, does see the change.
        plain = [
            gml_loss(query[one], labels[one], features, bank_labels, prior, 0.1).item()
            for features in (bank, altered)
        ]
        assert plain[0] != plain[1]


def test_sgd_on_log_temperature_moves_it_and_lowers_the_loss():
    _, query, labels, query_indices, bank, bank_labels, bank_indices, _, prior = (
        _problem_with_own_images(2)
    )
    log_temperature = torch.nn.Parameter(torch.tensor(math.log(0.5), dtype=DTYPE))
    optimizer = torch.optim.SGD([log_temperature], lr=0.5)

    def loss():
        return temperature_loss(
            query, labels, bank, bank_labels, bank_indices, query_indices, prior, log_temperature
        )

    start = loss().item()
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    end = loss().item()
    assert abs(log_temperature.item() - math.log(0.5)) > 1e-3
    assert end < start


def test_tensor_temperature_gets_gradient_only_through_temperature_loss():
    _, query, labels, bank, bank_labels, prior = _random_problem(8)
    log_temperature = torch.tensor(math.log(0.2), dtype=DTYPE, requires_grad=True)
    query = query.clone().requires_grad_(True)
    loss = gml_loss(query, labels, bank, bank_labels, prior, log_temperature.exp().detach())
    loss.backward()
    assert log_temperature.grad is None and query.grad is not None
    torch.testing.assert_close(loss, gml_loss(query, labels, bank, bank_labels, prior, 0.2))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_own_image_entries_make_the_best_temperature_collapse(seed):
    # With the query's own (near-duplicate) key in the mixture, the loss keeps falling as
    # tau_g -> 0;
    # without it the minimiser stays at a usable temperature.
    _, query, labels, query_indices, bank, bank_labels, bank_indices, _, prior = (
        _problem_with_own_images(seed)
    )
    grid = torch.logspace(-3, 0, 31, dtype=DTYPE)
    with_own = torch.stack([gml_loss(query, labels, bank, bank_labels, prior, tau) for tau in grid])
    without_own = torch.stack(
        [
            temperature_loss(
                query, labels, bank, bank_labels, bank_indices, query_indices, prior, tau.log()
            )
            for tau in grid
        ]
    )
    assert int(with_own.argmin()) == 0
    assert grid[int(without_own.argmin())] > 0.05


def test_from_similarities_forms_give_the_same_losses_and_gradients():
    from ltcore_gml.loss import gml_loss_from_similarities, temperature_loss_from_similarities

    gen, query, labels, bank, bank_labels, prior = _random_problem(5)
    query.requires_grad_()
    valid = torch.rand(bank.shape[0], generator=gen) > 0.2
    bank_indices = torch.randint(0, 8, (bank.shape[0],), generator=gen)
    query_indices = torch.randint(0, 8, (query.shape[0],), generator=gen)
    log_tau = torch.tensor(math.log(0.2), dtype=DTYPE, requires_grad=True)
    direct = gml_loss(
        query, labels, bank, bank_labels, prior, 0.2, 0.5, bank_valid=valid
    ) + temperature_loss(
        query,
        labels,
        bank,
        bank_labels,
        bank_indices,
        query_indices,
        prior,
        log_tau,
        0.5,
        bank_valid=valid,
    )
    direct_grads = torch.autograd.grad(direct, (query, log_tau))
    similarities = query @ bank.T
    shared = gml_loss_from_similarities(
        similarities, labels, bank_labels, prior, 0.2, 0.5, bank_valid=valid
    ) + temperature_loss_from_similarities(
        similarities,
        labels,
        bank_labels,
        bank_indices,
        query_indices,
        prior,
        log_tau,
        0.5,
        bank_valid=valid,
    )
    assert torch.equal(shared, direct)
    for a, b in zip(torch.autograd.grad(shared, (query, log_tau)), direct_grads):
        assert torch.equal(a, b)


def test_similarities_to_keys_is_the_product_with_normalised_keys():
    from ltcore_gml.loss import similarities_to_keys

    generator = torch.Generator().manual_seed(5)
    query = F.normalize(torch.randn(6, 8, generator=generator, dtype=torch.float64), dim=1)
    keys = 3 * torch.randn(40, 8, generator=generator, dtype=torch.float64)
    keys[7] = 0  # a zero key gives zero similarities, as F.normalize's eps does
    similarities, normalised = similarities_to_keys(query.float(), keys.float())
    direct = torch.stack([torch.stack([q @ k / max(k.norm(), 1e-12) for k in keys]) for q in query])
    torch.testing.assert_close(similarities.double(), direct, atol=1e-6, rtol=0)
    assert torch.equal(similarities[:, 7], torch.zeros(6))
    torch.testing.assert_close(normalised.double(), F.normalize(keys, dim=1), atol=1e-6, rtol=0)
    # gradients as through F.normalize
    keys32 = keys.float().requires_grad_()
    similarities_to_keys(query.float(), keys32)[0].square().sum().backward()
    reference = keys.float().requires_grad_()
    (query.float() @ F.normalize(reference, dim=1).T).square().sum().backward()
    torch.testing.assert_close(keys32.grad, reference.grad, atol=1e-5, rtol=1e-5)
