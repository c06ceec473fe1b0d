"""The batches a run sees: index streams that are a function of (seed, step), the normalisation, and
the reproducible random crops and flips."""
import torch

from uda.data.pairs import Normalize, center_crop, random_crop_flip
from uda.data.streams import IndexStream


def test_index_stream_covers_each_epoch_exactly_once():
    s = IndexStream(10, 4, seed=0, stream=1)
    seen = torch.cat([s.indices(i) for i in range(5)])  # 20 samples = 2 epochs, batch 2 straddles
    assert sorted(seen[:10].tolist()) == list(range(10)) and sorted(seen[10:].tolist()) == list(range(10))
    assert not torch.equal(seen[:10], seen[10:])


def test_index_stream_is_a_function_of_the_step():
    a, b = IndexStream(100, 16, seed=3, stream=1), IndexStream(100, 16, seed=3, stream=1)
    want = [a.indices(i) for i in range(20)]
    assert torch.equal(b.indices(17), want[17]) and torch.equal(b.indices(2), want[2])
    assert not torch.equal(IndexStream(100, 16, seed=3, stream=2).indices(0), want[0])
    assert not torch.equal(IndexStream(100, 16, seed=4, stream=1).indices(0), want[0])


def test_normalize_maps_uint8_to_minus_one_one():
    norm = Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5], torch.device("cpu"))
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2)
    assert torch.allclose(norm(x), torch.tensor([-1.0, 1.0]).view(1, 1, 1, 2).expand(1, 3, 1, 2))


def test_random_crops_and_flips_are_reproducible_and_vary():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    a = random_crop_flip(x, 5, torch.Generator().manual_seed(1))
    b = random_crop_flip(x, 5, torch.Generator().manual_seed(1))
    assert a.shape == (2, 3, 5, 5) and torch.equal(a, b)
    outs = {random_crop_flip(x, 5, torch.Generator().manual_seed(s))[0].sum().item() for s in range(20)}
    assert len(outs) > 1
    assert torch.equal(center_crop(x, 4), x[..., 2:6, 2:6])
