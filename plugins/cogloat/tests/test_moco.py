from collections import deque

import pytest
import torch
from torch import nn

from ltcore_cogloat.moco import LabelledQueue, momentum_update


def _encoder(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


@pytest.mark.parametrize("momentum", [0.0, 0.9, 0.999, 1.0])
def test_momentum_update_matches_the_formula(momentum):
    target, source = _encoder(0), _encoder(1)
    source.train()
    source(torch.randn(8, 4))  # moves the source's BatchNorm statistics away from their initial values
    target_before = [parameter.detach().clone() for parameter in target.parameters()]
    momentum_update(target, source, momentum)
    for before, updated, query in zip(target_before, target.parameters(), source.parameters()):
        expected = momentum * before + (1.0 - momentum) * query.detach()
        torch.testing.assert_close(updated.detach(), expected, rtol=1e-6, atol=1e-7)
    for target_buffer, source_buffer in zip(target.buffers(), source.buffers()):
        assert torch.equal(target_buffer, source_buffer)
    assert int(target[1].num_batches_tracked) == 1


def test_momentum_update_rejects_mismatched_modules_and_momentum():
    with pytest.raises(ValueError):
        momentum_update(nn.Linear(4, 3), nn.Linear(4, 2), 0.9)
    with pytest.raises(ValueError):
        momentum_update(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3)), 0.9)
    with pytest.raises(ValueError):
        momentum_update(nn.Linear(4, 3), nn.Linear(4, 3), 1.5)


def _queue_in_fifo_order(queue):
    """Entries oldest first: slots [pointer, size) then [0, pointer) once full, else [0, pointer)."""
    pointer = int(queue.pointer)
    if bool(queue.valid.all()):
        order = list(range(pointer, queue.size)) + list(range(pointer))
    else:
        order = list(range(pointer))
    return [(queue.keys[slot].tolist(), int(queue.labels[slot])) for slot in order]


def test_queue_is_fifo_with_wrap_around_and_label_bookkeeping():
    size, dim = 5, 2
    queue = LabelledQueue(size, dim)
    reference = deque(maxlen=size)
    assert not bool(queue.valid.any())
    assert queue.labels.tolist() == [-1] * size
    counter = 0
    for batch in [3, 4, 2, 7, 5, 1]:
        keys = torch.arange(counter, counter + batch, dtype=torch.float32).unsqueeze(1).repeat(1, dim)
        labels = torch.arange(counter, counter + batch) % 3
        queue.enqueue(keys, labels)
        for key, label in zip(keys.tolist(), labels.tolist()):
            reference.append((key, label))
        counter += batch
        assert int(queue.pointer) == counter % size
        assert int(queue.valid.sum()) == min(counter, size)
        assert _queue_in_fifo_order(queue) == list(reference)

    first = LabelledQueue(size, dim)
    first.enqueue(torch.ones(3, dim), torch.tensor([4, 5, 6]))
    assert first.valid.tolist() == [True, True, True, False, False]
    assert first.labels.tolist() == [4, 5, 6, -1, -1]


def test_queue_state_dict_round_trip_and_detached_keys():
    queue = LabelledQueue(6, 3)
    keys = torch.randn(4, 3, requires_grad=True)
    queue.enqueue(keys, torch.tensor([0, 1, 2, 3]))
    assert not queue.keys.requires_grad
    restored = LabelledQueue(6, 3)
    restored.load_state_dict(queue.state_dict())
    for name in ("keys", "labels", "valid", "pointer"):
        assert torch.equal(getattr(restored, name), getattr(queue, name))
    more_keys, more_labels = torch.randn(5, 3), torch.tensor([5, 6, 7, 8, 9])
    queue.enqueue(more_keys, more_labels)
    restored.enqueue(more_keys, more_labels)
    assert torch.equal(restored.keys, queue.keys)
    assert torch.equal(restored.labels, queue.labels)
    assert int(restored.pointer) == 3


def test_queue_rejects_wrong_shapes():
    queue = LabelledQueue(4, 2)
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 5), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        queue.enqueue(torch.randn(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError):
        LabelledQueue(0, 2)
