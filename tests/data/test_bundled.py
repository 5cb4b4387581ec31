"""The bundled suite: composition, order, laziness, determinism, and no network."""
import socket

import pytest
import torch

import iqaguard as ig
from iqaguard.data.bundled import CONTENTS, BundledDataset, load_content
from iqaguard.data.distortions import DISTORTIONS
from iqaguard.errors import InputError

SMALL = 64


@pytest.fixture(scope="module")
def full():
    return ig.create_dataset("bundled")


def _parts(item):
    content, dtype, level = item.id.split("/")
    return content, dtype, int(level)


def test_composition(full):
    contents = {_parts(it)[0] for it in full}
    types = {_parts(it)[1] for it in full}
    assert len(contents) >= 6 and len(types) >= 10
    assert len(full) == len(contents) * len(types) * 5
    assert len({it.id for it in full}) == len(full)
    for it in full:
        content, dtype, level = _parts(it)
        assert it.truth == -level and it.truth_kind == "level"
        assert it.group == f"{content}/{dtype}"
        assert it.load_ref is not None
    assert full.has_ref


def test_subset_is_interleaved(full):
    sub = full.subset(20)
    assert len(sub) == 20 and isinstance(sub, BundledDataset)
    parts = [_parts(it) for it in sub]
    groups = [parts[i:i + 5] for i in range(0, 20, 5)]
    for g in groups:
        assert [lv for _, _, lv in g] == [1, 2, 3, 4, 5]
        assert len({(c, t) for c, t, _ in g}) == 1
    assert len({g[0][0] for g in groups}) == 4, "4 different contents"
    assert len({g[0][1] for g in groups}) == 4, "4 different types"


def test_every_group_appears_once_with_consecutive_levels(full):
    seen = []
    for i in range(0, len(full), 5):
        block = [_parts(it) for it in full.items[i:i + 5]]
        assert len({(c, t) for c, t, _ in block}) == 1
        seen.append(block[0][:2])
    assert len(seen) == len(set(seen)) == len(CONTENTS) * len(DISTORTIONS)


def test_first_round_covers_every_content(full):
    first = [_parts(full[i * 5])[0] for i in range(len(CONTENTS))]
    assert sorted(first) == sorted(CONTENTS)


def test_pristine_contents_are_distinct_natural_photos():
    imgs = {c: load_content(c, SMALL) for c in CONTENTS}
    for c, x in imgs.items():
        assert x.shape == (1, 3, SMALL, SMALL) and x.dtype == torch.float32
        assert float(x.std()) > 0.08, f"{c} looks flat"
        # colour photos: the channels are not all equal
        assert float((x[:, 0] - x[:, 1]).abs().mean()) > 0.01, f"{c} looks grey"
    names = list(imgs)
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            assert float((imgs[names[i]] - imgs[names[j]]).abs().mean()) > 0.05


def test_loading_is_deterministic_and_refs_match():
    ds = BundledDataset(size=SMALL, contents="chelsea,rocket", types="white_noise,jpeg,color_block")
    assert len(ds) == 2 * 3 * 5
    for it in ds.items[::4]:
        a, b = it.load(), it.load()
        assert a.shape == (1, 3, SMALL, SMALL)
        assert torch.equal(a, b)
        a.fill_(0)                                    # a caller scribbling on its copy ...
        assert torch.equal(it.load(), b)              # ... does not corrupt the cache
        ref = it.load_ref()
        assert torch.equal(ref, load_content(it.id.split("/")[0], SMALL))
        assert not torch.equal(b, ref)
    # a second dataset object gives the same pixels
    other = BundledDataset(size=SMALL, contents="chelsea,rocket", types="white_noise,jpeg,color_block")
    assert torch.equal(other[7].load(), ds[7].load())


def test_seeds_differ_between_groups_but_levels_are_nested():
    ds = BundledDataset(size=SMALL, contents="astronaut", types="white_noise")
    x = ds[0].load_ref()
    n1, n5 = ds[0].load() - x, ds[4].load() - x
    # same draw at every level (scaled): noise at level 1 and 5 strongly correlated
    corr = torch.corrcoef(torch.stack([n1.flatten(), n5.flatten()]))[0, 1]
    assert corr > 0.8


def test_params_and_subsets():
    ds = ig.create_dataset("bundled:size=64,levels='2,4',contents=coffee,types='jpeg,pixelate'")
    assert [it.id for it in ds] == ["coffee/jpeg/2", "coffee/jpeg/4", "coffee/pixelate/2", "coffee/pixelate/4"]
    again = ig.create_dataset("bundled", **ds.params)
    assert [it.id for it in again] == [it.id for it in ds]
    assert ig.canonical(ds) == ig.canonical(again)
    one = ig.create_dataset("bundled:size=64,levels=3,contents=coffee,types=jpeg")   # levels parses to int 3
    assert [it.id for it in one] == ["coffee/jpeg/3"]
    listed = ig.create_dataset("bundled", size=64, levels=[5, 1], types=["pixelate", "jpeg"], contents="coffee")
    assert [it.id for it in listed] == ["coffee/jpeg/1", "coffee/jpeg/5", "coffee/pixelate/1", "coffee/pixelate/5"]


def test_include_pristine_adds_level_zero():
    ds = BundledDataset(size=SMALL, contents="coffee", types="jpeg", include_pristine=True)
    assert [it.id for it in ds] == [f"coffee/jpeg/{lv}" for lv in range(6)]
    assert ds[0].truth == 0.0 and torch.equal(ds[0].load(), ds[0].load_ref())


@pytest.mark.parametrize("kwargs, match", [
    ({"types": "blur"}, "unknown 'blur'; valid: .*gaussian_blur"),
    ({"contents": "lena"}, "unknown 'lena'; valid: astronaut"),
    ({"levels": "0,1"}, "levels"),
    ({"levels": "a"}, "levels"),
    ({"levels": ""}, "levels"),
    ({"size": 8}, "size"),
    ({"size": 1024}, "size"),
    ({"size": 64.0}, "size"),
    ({"types": "jpeg,jpeg"}, "duplicate"),
])
def test_bad_params_raise(kwargs, match):
    with pytest.raises(InputError, match=match):
        BundledDataset(**kwargs)


def test_no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    from iqaguard.data import bundled
    bundled._pristine.cache_clear()                   # force the files to be read again
    ds = BundledDataset(size=SMALL)
    for i in range(0, len(ds), 5):                    # one item of every (content, type) group
        it = ds[i + 2]
        assert it.load().shape == (1, 3, SMALL, SMALL)
        assert it.load_ref().shape == (1, 3, SMALL, SMALL)
