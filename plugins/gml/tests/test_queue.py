import math

import pytest
import torch

from ltcore_gml.queue import ClassWiseQueue, class_queue_sizes


def _reference_sizes(counts, total, minimum):
    """Eq. 5 with largest-remainder rounding, one class at a time."""
    prior = [c / sum(counts) for c in counts]
    exact = [minimum + (total - minimum * len(counts)) * p for p in prior]
    sizes = [math.floor(e) for e in exact]
    fractions = sorted(range(len(counts)), key=lambda c: (-(exact[c] - sizes[c]), c))
    for c in fractions[: total - sum(sizes)]:
        sizes[c] += 1
    return sizes, exact


def _cifar_lt_counts(n_max, classes, imbalance):
    return [int(n_max * (1 / imbalance) ** (i / (classes - 1))) for i in range(classes)]


@pytest.mark.parametrize(
    ("counts", "total", "minimum"),
    [
        (_cifar_lt_counts(500, 100, 100), 4096, 2),
        (_cifar_lt_counts(5000, 10, 100), 4096, 2),
        ([500, 200, 50, 5], 100, 2),
        ([7, 7, 7], 50, 3),
    ],
)
def test_queue_sizes_follow_formula_and_sum_to_total(counts, total, minimum):
    sizes = class_queue_sizes(torch.tensor(counts), total, minimum)
    expected, exact = _reference_sizes(counts, total, minimum)
    assert sizes.dtype == torch.long
    assert sizes.tolist() == expected
    assert int(sizes.sum()) == total
    assert bool((sizes >= minimum).all())
    assert all(abs(s - e) < 1 for s, e in zip(sizes.tolist(), exact))


def test_queue_sizes_hand_computed():
    # 1 + 8 * (3/4, 1/4) = (7, 3) exactly.
    assert class_queue_sizes(torch.tensor([3, 1]), 10, 1).tolist() == [7, 3]
    # 1 + 7/3 = 3.33 each: floors (3, 3, 3), the one remaining entry goes to class 0 (tie).
    assert class_queue_sizes(torch.tensor([1, 1, 1]), 10, 1).tolist() == [4, 3, 3]
    # 2 + 6 * (0.5, 0.3, 0.2) = (5, 3.8, 3.2): floors (5, 3, 3), remainder 1 to class 1.
    assert class_queue_sizes(torch.tensor([5, 3, 2]), 12, 2).tolist() == [5, 4, 3]


def test_queue_sizes_reject_impossible_requests():
    with pytest.raises(ValueError):
        class_queue_sizes(torch.tensor([5, 5]), 3, 2)
    with pytest.raises(ValueError):
        class_queue_sizes(torch.tensor([5, 5]), 10, 0)


class _ReferenceQueue:
    """Per-class ring buffers, written one sample at a time in batch order.

    ``overflow="last"``: every sample writes and advances its class's pointer.
    ``overflow="first"``: a class stops writing once it has written as many samples in this
    batch as it has slots (the reference code's ``_dequeue_and_enqueue_w_base``).
    """

    def __init__(self, sizes, dim, overflow):
        self.slots = [[None] * s for s in sizes]
        self.pointers = [0] * len(sizes)
        self.dim = dim
        self.overflow = overflow

    def enqueue(self, features, labels, indices):
        written = [0] * len(self.slots)
        for feature, label, index in zip(features, labels.tolist(), indices.tolist()):
            capacity = len(self.slots[label])
            if self.overflow == "first" and written[label] == capacity:
                continue
            self.slots[label][self.pointers[label]] = (feature.clone(), index)
            self.pointers[label] = (self.pointers[label] + 1) % capacity
            written[label] += 1

    def flat(self):
        features, labels, indices, valid = [], [], [], []
        for label, class_slots in enumerate(self.slots):
            for entry in class_slots:
                features.append(entry[0] if entry else torch.zeros(self.dim))
                indices.append(entry[1] if entry else -1)
                valid.append(entry is not None)
                labels.append(label)
        stacked = torch.stack(features)
        return stacked, torch.tensor(labels), torch.tensor(indices), torch.tensor(valid)


def _assert_same_state(queue, reference):
    features, labels, indices, valid = reference.flat()
    assert torch.equal(queue.features(), features)
    assert torch.equal(queue.labels(), labels)
    assert torch.equal(queue.indices(), indices)
    assert torch.equal(queue.valid(), valid)
    assert queue.pointers.tolist() == reference.pointers


def _random_batches(seed, num_classes, batch_sizes):
    """Batches whose labels favour class 0, so classes often overflow their queues."""
    gen = torch.Generator().manual_seed(seed)
    start = 0
    for batch in batch_sizes:
        labels = torch.randint(-3, num_classes, (batch,), generator=gen).clamp_min(0)
        yield torch.randn(batch, 3, generator=gen), labels, torch.arange(start, start + batch)
        start += batch


@pytest.mark.parametrize("overflow", ["first", "last"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_enqueue_matches_per_sample_loop(overflow, seed):
    sizes = [3, 1, 4, 2]
    queue = ClassWiseQueue(torch.tensor(sizes), dim=3, overflow=overflow)
    reference = _ReferenceQueue(sizes, dim=3, overflow=overflow)
    overflowed = False
    for features, labels, indices in _random_batches(seed, len(sizes), [2, 5, 9, 1, 12, 0, 7, 20]):
        counts = torch.bincount(labels, minlength=len(sizes))
        overflowed |= bool((counts > torch.tensor(sizes)).any())
        queue.enqueue(features, labels, indices)
        reference.enqueue(features, labels, indices)
        _assert_same_state(queue, reference)
    assert overflowed


def test_first_overflow_keeps_the_first_samples_and_the_pointer():
    queue = ClassWiseQueue(torch.tensor([3, 2]), dim=1)
    assert queue.overflow == "first"
    queue.enqueue(torch.tensor([[9.0]]), torch.tensor([0]), torch.tensor([9]))
    labels = torch.zeros(5, dtype=torch.long)
    queue.enqueue(torch.arange(5.0).unsqueeze(1), labels, torch.arange(5))
    # From pointer 1: samples 0, 1, 2 fill slots 1, 2, 0; samples 3 and 4 are dropped and the
    # pointer advances by min(5, 3) = 3, back to 1.
    assert queue.indices()[:3].tolist() == [2, 0, 1]
    assert queue.pointers.tolist() == [1, 0]
    queue.enqueue(torch.tensor([[5.0]]), torch.tensor([0]), torch.tensor([5]))
    assert queue.indices()[:3].tolist() == [2, 5, 1]


def test_last_overflow_overwrites_the_oldest_entries_in_order():
    queue = ClassWiseQueue(torch.tensor([3, 2]), dim=1, overflow="last")
    labels = torch.zeros(5, dtype=torch.long)
    queue.enqueue(torch.arange(5.0).unsqueeze(1), labels, torch.arange(5))
    # Written in order 0,1,2 then 3 over 0 and 4 over 1: the last three remain.
    assert queue.indices()[:3].tolist() == [3, 4, 2]
    assert queue.features()[:3, 0].tolist() == [3.0, 4.0, 2.0]
    queue.enqueue(torch.tensor([[5.0]]), torch.tensor([0]), torch.tensor([5]))
    assert queue.indices()[:3].tolist() == [3, 4, 5]
    queue.enqueue(torch.tensor([[6.0]]), torch.tensor([0]), torch.tensor([6]))
    assert queue.indices()[:3].tolist() == [6, 4, 5]
    # Class 1 was never written.
    assert queue.valid().tolist() == [True, True, True, False, False]
    assert queue.indices()[3:].tolist() == [-1, -1]


def test_labels_and_indices_bookkeeping():
    queue = ClassWiseQueue.from_class_counts(torch.tensor([30, 10]), total_size=6, min_size=1,
                                             dim=2)
    # 1 + 4 * (3/4, 1/4) = (4, 2)
    assert queue.sizes.tolist() == [4, 2]
    assert queue.labels().tolist() == [0, 0, 0, 0, 1, 1]
    features = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    queue.enqueue(features, torch.tensor([1, 0, 1]), torch.tensor([17, 4, 9]))
    assert queue.indices().tolist() == [4, -1, -1, -1, 17, 9]
    assert queue.valid().tolist() == [True, False, False, False, True, True]
    assert torch.equal(queue.features()[[0, 4, 5]], features[[1, 0, 2]])


def test_enqueue_detaches_and_casts():
    queue = ClassWiseQueue(torch.tensor([2]), dim=2, dtype=torch.float16)
    features = torch.randn(1, 2, requires_grad=True)
    queue.enqueue(features, torch.tensor([0]), torch.tensor([0], dtype=torch.int32))
    assert queue.features().dtype == torch.float16 and not queue.features().requires_grad
    assert queue.indices().dtype == torch.long


def test_state_dict_round_trip():
    queue = ClassWiseQueue(torch.tensor([2, 3]), dim=2)
    gen = torch.Generator().manual_seed(1)
    queue.enqueue(torch.randn(4, 2, generator=gen), torch.tensor([0, 1, 1, 0]), torch.arange(4))
    state = queue.state_dict()
    assert set(state) == {"queue_features", "queue_labels", "queue_indices", "queue_valid",
                          "offsets", "sizes", "pointers"}
    restored = ClassWiseQueue(torch.tensor([2, 3]), dim=2)
    restored.load_state_dict(state)
    more = torch.randn(3, 2, generator=gen)
    for target in (queue, restored):
        target.enqueue(more, torch.tensor([1, 1, 0]), torch.arange(4, 7))
    for name, tensor in queue.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor), name


def test_rejects_empty_class_queue_and_unknown_overflow():
    with pytest.raises(ValueError):
        ClassWiseQueue(torch.tensor([2, 0]), dim=2)
    with pytest.raises(ValueError):
        ClassWiseQueue(torch.tensor([2, 1]), dim=2, overflow="middle")
