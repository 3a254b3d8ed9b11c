import pytest
import torch
import torch.nn.functional as F
from ltcore_iccl.centroids import CENTROID_INITS, CENTROID_UPDATES, EMACentroids

DTYPE = torch.float64


def _reference_update(centroids, initialized, embeddings, labels, momentum, normalize):
    """Eq. 1 with the batch mean, one class at a time."""
    centroids = centroids.clone()
    initialized = initialized.clone()
    for k in range(centroids.shape[0]):
        members = [embeddings[i] for i in range(len(labels)) if int(labels[i]) == k]
        if not members:
            continue
        mean = sum(members) / len(members)
        new = momentum * centroids[k] + (1.0 - momentum) * mean if initialized[k] else mean
        centroids[k] = new / new.norm() if normalize else new
        initialized[k] = True
    return centroids, initialized


def _reference_per_sample_update(centroids, initialized, embeddings, labels, momentum, normalize):
    """MoPro's loop, one sample at a time in batch order, then one normalisation per batch.

    A class seen for the first time runs the same loop from zero and is divided by the weight
    its samples received (``1 - m^n``), i.e. it starts at their EMA-weighted mean.
    """
    centroids = centroids.clone()
    initialized = initialized.clone()
    fresh_weight = {}
    for z, label in zip(embeddings, labels.tolist()):
        if not initialized[label] and label not in fresh_weight:
            centroids[label] = torch.zeros_like(z)
            fresh_weight[label] = 0.0
        centroids[label] = momentum * centroids[label] + (1.0 - momentum) * z
        if label in fresh_weight:
            fresh_weight[label] = momentum * fresh_weight[label] + (1.0 - momentum)
    for label, weight in fresh_weight.items():
        centroids[label] = centroids[label] / weight
        initialized[label] = True
    if normalize:
        centroids = F.normalize(centroids, dim=1)
    return centroids, initialized


def _batch(seed, n=12, classes=6, dim=5, present=None):
    gen = torch.Generator().manual_seed(seed)
    embeddings = F.normalize(torch.randn(n, dim, generator=gen, dtype=DTYPE), dim=1)
    pool = torch.tensor(present) if present is not None else torch.arange(classes)
    labels = pool[torch.randint(0, len(pool), (n,), generator=gen)]
    return embeddings, labels


@pytest.mark.parametrize("init", ["first_batch", "random"])
@pytest.mark.parametrize("normalize", [False, True])
def test_batch_mean_updates_match_per_class_loop(init, normalize):
    generator = torch.Generator().manual_seed(0)
    module = EMACentroids(6, 5, momentum=0.9, normalize=normalize, init=init,
                          update="batch-mean", generator=generator).to(DTYPE)
    expected, expected_init = module.centroids.clone(), module.initialized.clone()
    for step, present in enumerate([[0, 2, 3], [1, 2, 3, 4, 5], [0, 5]]):
        embeddings, labels = _batch(step, present=present)
        module.update(embeddings, labels)
        expected, expected_init = _reference_update(expected, expected_init, embeddings, labels,
                                                    0.9, normalize)
        torch.testing.assert_close(module.centroids, expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(module.initialized, expected_init)


@pytest.mark.parametrize("momentum", [0.9, 0.5, 0.0])
@pytest.mark.parametrize("init", ["first_batch", "random"])
@pytest.mark.parametrize("normalize", [False, True])
def test_per_sample_updates_match_mopro_loop(init, normalize, momentum):
    generator = torch.Generator().manual_seed(0)
    module = EMACentroids(6, 5, momentum=momentum, normalize=normalize, init=init,
                          generator=generator).to(DTYPE)
    assert module.update_rule == "per-sample"
    # unit rows in float64, so the loop's normalisation of absent classes leaves them in place
    module.centroids.copy_(F.normalize(module.centroids, dim=1))
    expected, expected_init = module.centroids.clone(), module.initialized.clone()
    for step, present in enumerate([[0, 2, 3], [1, 2, 3, 4, 5], [0, 5], [4]]):
        embeddings, labels = _batch(step, n=4 + 5 * step, present=present)
        module.update(embeddings, labels)
        expected, expected_init = _reference_per_sample_update(
            expected, expected_init, embeddings, labels, momentum, normalize)
        torch.testing.assert_close(module.centroids, expected, rtol=1e-12, atol=1e-12)
        assert torch.equal(module.initialized, expected_init)


def test_per_sample_update_hand_computed():
    module = EMACentroids(2, 2, momentum=0.5, normalize=False).to(DTYPE)
    module.update(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=DTYPE), torch.tensor([0, 0]))
    # from zero: 0.25 (1, 0) + 0.5 (0, 1), divided by the weight 0.75 it received
    torch.testing.assert_close(module.centroids[0], torch.tensor([1 / 3, 2 / 3], dtype=DTYPE))
    module.update(torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]], dtype=DTYPE),
                  torch.tensor([0, 1, 0]))
    # 0.25 c + 0.25 (0, 0) + 0.5 (3, 0); class 1 seen first: its single sample
    torch.testing.assert_close(module.centroids, torch.tensor(
        [[1 / 12 + 1.5, 1 / 6], [1.0, 1.0]], dtype=DTYPE))


def test_first_batch_start_is_moPro_zero_start_once_normalised():
    embeddings, labels = _batch(4, n=10, present=[1, 3])
    module = EMACentroids(5, 5, momentum=0.8).to(DTYPE)
    module.update(embeddings, labels)
    zero_start = EMACentroids(5, 5, momentum=0.8, init="random").to(DTYPE)
    zero_start.centroids.zero_()
    zero_start.update(embeddings, labels)
    torch.testing.assert_close(module.centroids, zero_start.centroids, rtol=1e-12, atol=1e-12)


def test_option_values_match_the_plugin_lists():
    from ltcore_iccl import plugin

    assert plugin.CENTROID_INITS == CENTROID_INITS
    assert plugin.CENTROID_UPDATES == CENTROID_UPDATES


def test_absent_classes_are_unchanged():
    module = EMACentroids(6, 5, init="random", generator=torch.Generator().manual_seed(1)).to(DTYPE)
    before = module.centroids.clone()
    embeddings, labels = _batch(0, present=[1, 4])
    module.update(embeddings, labels)
    absent = torch.tensor([0, 2, 3, 5])
    assert torch.equal(module.centroids[absent], before[absent])
    assert not torch.equal(module.centroids[1], before[1])
    assert not torch.equal(module.centroids[4], before[4])


def test_first_batch_initialisation_then_ema_hand_computed():
    module = EMACentroids(3, 2, momentum=0.75, normalize=False, update="batch-mean").to(DTYPE)
    assert torch.equal(module.centroids, torch.zeros(3, 2, dtype=DTYPE))
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=DTYPE)
    module.update(embeddings, torch.tensor([0, 0, 2]))
    # class 0 takes its batch mean (0.5, 0.5); class 2 takes (0, 1); class 1 stays at zero.
    torch.testing.assert_close(module.centroids, torch.tensor(
        [[0.5, 0.5], [0.0, 0.0], [0.0, 1.0]], dtype=DTYPE))
    module.update(torch.tensor([[1.0, 0.0]], dtype=DTYPE), torch.tensor([0]))
    # 0.75 * (0.5, 0.5) + 0.25 * (1, 0) = (0.625, 0.375)
    torch.testing.assert_close(module.centroids[0], torch.tensor([0.625, 0.375], dtype=DTYPE))
    assert module.initialized.tolist() == [True, False, True]


def test_random_initialisation_is_unit_norm_and_reproducible():
    first = EMACentroids(4, 8, init="random", generator=torch.Generator().manual_seed(3))
    second = EMACentroids(4, 8, init="random", generator=torch.Generator().manual_seed(3))
    assert torch.equal(first.centroids, second.centroids)
    torch.testing.assert_close(first.centroids.norm(dim=1), torch.ones(4))
    assert bool(first.initialized.all())


def test_update_does_not_track_gradients():
    module = EMACentroids(3, 4)
    embeddings = torch.randn(5, 4, requires_grad=True)
    module.update(embeddings, torch.tensor([0, 1, 1, 2, 0]))
    assert not module.centroids.requires_grad
    assert module().shape == (3, 4)


def test_state_dict_round_trip():
    module = EMACentroids(5, 3, momentum=0.5)
    embeddings, labels = _batch(2, n=6, classes=5, dim=3, present=[0, 1, 3])
    module.update(embeddings.float(), labels)
    state = module.state_dict()
    assert set(state) == {"centroids", "initialized"}
    restored = EMACentroids(5, 3, momentum=0.5)
    restored.load_state_dict(state)
    assert torch.equal(restored.centroids, module.centroids)
    assert torch.equal(restored.initialized, module.initialized)
    more, more_labels = _batch(3, n=6, classes=5, dim=3)
    module.update(more.float(), more_labels)
    restored.update(more.float(), more_labels)
    assert torch.equal(restored.centroids, module.centroids)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        EMACentroids(3, 2, momentum=1.0)
    with pytest.raises(ValueError):
        EMACentroids(3, 2, init="zeros")
    with pytest.raises(ValueError):
        EMACentroids(3, 2, update="per-batch")


def _fake_run(num_classes=4, dim=3, seed=0):
    import types

    run = types.SimpleNamespace(
        modules=torch.nn.ModuleDict(),
        dataset=types.SimpleNamespace(num_classes=num_classes),
        config=types.SimpleNamespace(seed=seed, model=types.SimpleNamespace(projection_dim=dim)))

    def add_module(name, module):
        run.modules[name] = module
        return module

    run.add_module = add_module
    return run


def test_prototype_provider_attaches_its_bank_and_normalises():
    from ltcore import Plugins

    plugins = Plugins()
    run = _fake_run()
    provider = plugins.component("prototype-provider", "iccl-centroids").obj(
        run, momentum=0.5, update="batch-mean", normalize=False)
    assert run.modules["iccl_centroids"] is provider.bank and provider.bank.momentum == 0.5
    assert provider.centroids.shape == (4, 3)
    embeddings = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    provider.update(embeddings, torch.tensor([1, 3]))
    torch.testing.assert_close(provider.centroids[1], torch.tensor([3.0, 0.0, 0.0]))
    prototypes = provider.prototypes()
    torch.testing.assert_close(prototypes[1], torch.tensor([1.0, 0.0, 0.0]))
    torch.testing.assert_close(prototypes[3], torch.tensor([0.0, 0.0, 1.0]))
    assert torch.equal(prototypes[0], torch.zeros(3))
    # a second provider on the same run shares the module (as the iccl plugin's does)
    again = plugins.component("prototype-provider", "iccl-centroids").obj(run)
    assert again.bank is provider.bank


def test_memory_bank_factory_builds_a_detached_bank():
    from ltcore import Plugins

    run = _fake_run(num_classes=5, dim=7, seed=3)
    bank = Plugins().component("memory-bank", "iccl-centroids").obj(run, init="random")
    assert isinstance(bank, EMACentroids) and bank.centroids.shape == (5, 7)
    assert "iccl_centroids" not in run.modules
    same = Plugins().component("memory-bank", "iccl-centroids").obj(_fake_run(5, 7, seed=3),
                                                                     init="random")
    assert torch.equal(bank.centroids, same.centroids)
    assert (bank.update_rule, bank.normalize) == ("per-sample", True)
    kept = Plugins().component("memory-bank", "iccl-centroids").obj(
        _fake_run(), update="batch-mean", normalize=False)
    assert (kept.update_rule, kept.normalize) == ("batch-mean", False)
