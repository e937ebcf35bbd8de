"""Exact spatial pruning of NWD and RFLA: the pruned path against the dense one, bit for bit."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from adla.anchors import AnchorSpec, generate_anchors
from adla.train import assign_commands
from adla.train.assigners import build_assigner, pairwise_kld, pairwise_nwd, receptive_fields, spatial
from adla.train.assigners.quality import NWDPairs
from adla.train.assigners.rfla import KLDPairs

SPEC = AnchorSpec()
FIELDS = ("matched_gt", "max_quality", "pos_thr", "neg_thr", "iou_max")
KINDS = ("tiny", "corners", "huge", "mixed", "grid", "duplicates", "degenerate", "outside", "one")


def gt_case(kind: str, n: int, size: int, gen: torch.Generator) -> torch.Tensor:
    """GTs [n', 4] of one kind of case in a ``size`` x ``size`` image."""
    def rand(*shape):
        return torch.rand(*shape, generator=gen)

    if kind == "corners":  # at the four corners of the image, partly outside it
        wh = rand(n, 2) * 20 + 1
        xy = torch.randint(0, 2, (n, 2), generator=gen).float() * size - wh * rand(n, 2)
    elif kind == "huge":  # far larger than any anchor (2x to 4x the image), and a few tiny ones
        wh = rand(n, 2) * 2 * size + 2 * size
        xy = -rand(n, 2) * size
        wh[: n // 2] = rand(n // 2, 2) * 10 + 2
        xy[: n // 2] = rand(n // 2, 2) * (size - 12)
    elif kind == "mixed":  # any size, elongated too
        wh = rand(n, 2) * size * 0.7 + 0.5
        xy = rand(n, 2) * (size - wh).clamp(min=0)
    elif kind == "grid":  # centred on anchor centres or between two: ties between anchors
        xy = torch.randint(0, size // 8, (n, 2), generator=gen).float() * 8 + 4 * torch.randint(
            0, 2, (n, 1), generator=gen)
        wh = torch.tensor([4.0, 8.0, 16.0, 11.3137])[torch.randint(0, 4, (n,), generator=gen)][:, None]
        wh = wh.expand(n, 2)
        xy = xy - wh / 2
    elif kind == "degenerate":  # zero width or zero height
        wh = rand(n, 2) * 12
        wh[torch.arange(n), torch.randint(0, 2, (n,), generator=gen)] = 0
        xy = rand(n, 2) * size
    elif kind == "outside":  # around and beyond the image
        wh = rand(n, 2) * 30 + 1
        xy = rand(n, 2) * 3 * size - size
    elif kind == "one":
        wh = rand(1, 2) * 14 + 2
        xy = rand(1, 2) * (size - wh)
    else:  # tiny (AI-TOD-like), "duplicates": the same with some GTs repeated
        wh = rand(n, 2) * 14 + 2
        xy = rand(n, 2) * (size - wh)
    gts = torch.cat([xy, xy + wh], dim=1)
    if kind == "duplicates":
        gts = torch.cat([gts, gts[: n // 3], gts[:2]])
    return gts


def assert_same(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert (x is None) == (y is None), f
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), f


@pytest.fixture(params=["as-shipped", "search-only"])
def search(request, monkeypatch):
    """As shipped, small per-anchor searches finish densely; "search-only" forces the widening search."""
    if request.param == "search-only":
        monkeypatch.setattr(spatial, "_DENSE_BELOW", 0)
        monkeypatch.setattr(spatial, "_PAIRS_PER_DENSE", math.inf)
    return request.param


@pytest.fixture
def grids(monkeypatch):
    """Counts the grids built: the pruned path did run."""
    built = []
    init = spatial.LayeredGrid.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        init(self, *args, **kwargs)

    monkeypatch.setattr(spatial.LayeredGrid, "__init__", counting)
    return built


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name, params", [
    ("nwd", {}),
    ("nwd", {"neg_iou_thr": (0.1, 0.4), "gt_max_assign_all": False}),
    ("nwd", {"constant": 6.0, "pos_iou_thr": 0.7, "match_low_quality": False, "min_pos_iou": 0.2}),
    ("rfla", {}),
    ("rfla", {"topk": [9, 3], "stage2_ratio": 0.7, "neg_thr": 0.3}),
])
def test_pruned_equals_dense(kind, name, params, search, grids):
    size = 128
    anchors = generate_anchors(SPEC, size, size)
    counts = SPEC.level_counts(size, size)
    for seed in range(1 if search == "search-only" else 2):
        gts = gt_case(kind, 24, size, torch.Generator().manual_seed(seed))
        pruned = build_assigner(name, params)
        pruned.prune_min_pairs = 0  # prune even this small case
        dense = build_assigner(name, params)
        dense.prune = False
        got = pruned.assign(anchors, gts, num_level_anchors=counts)
        assert_same(got, dense.assign(anchors, gts, num_level_anchors=counts))
    assert grids  # the pruned path ran, not a fallback


@pytest.mark.parametrize("name", ["nwd", "rfla"])
def test_no_gt_one_gt_and_the_default_cutoff(name, grids):
    anchors = generate_anchors(SPEC, 96, 96)
    counts = SPEC.level_counts(96, 96)
    dense = build_assigner(name, {})
    dense.prune = False
    pruned = build_assigner(name, {})
    pruned.prune_min_pairs = 0
    none = pruned.assign(anchors, torch.zeros(0, 4), num_level_anchors=counts)
    assert_same(none, dense.assign(anchors, torch.zeros(0, 4), num_level_anchors=counts))
    assert not grids and torch.equal(none.matched_gt, torch.full((anchors.shape[0],), -1))
    one = torch.tensor([[40.0, 41.0, 47.0, 52.0]])
    assert_same(pruned.assign(anchors, one, num_level_anchors=counts),
                dense.assign(anchors, one, num_level_anchors=counts))
    assert grids
    # As shipped, a case this small (anchors x GTs < prune_min_pairs) takes the dense path.
    grids.clear()
    build_assigner(name, {}).assign(anchors, one, num_level_anchors=counts)
    assert not grids


def test_pruned_equals_dense_at_bench_scale():
    """800 x 800 (118k anchors), 300 tiny GTs, plus a few large ones and GTs at the corners."""
    size = 800
    anchors = generate_anchors(SPEC, size, size)
    counts = SPEC.level_counts(size, size)
    gen = torch.Generator().manual_seed(7)
    gts = torch.cat([gt_case("tiny", 300, size, gen), gt_case("corners", 8, size, gen),
                     gt_case("mixed", 4, size, gen)])
    for name in ("nwd", "rfla"):
        dense = build_assigner(name, {})
        dense.prune = False
        assert_same(build_assigner(name, {}).assign(anchors, gts, num_level_anchors=counts),
                    dense.assign(anchors, gts, num_level_anchors=counts))


def random_boxes(n, gen, lo=1.0, hi=40.0, size=200.0):
    wh = torch.rand(n, 2, generator=gen) * (hi - lo) + lo
    xy = torch.rand(n, 2, generator=gen) * size
    return torch.cat([xy - wh / 2, xy + wh / 2], dim=1)


def pair_qualities(gen):
    anchors = generate_anchors(SPEC, 96, 96)
    levels = torch.repeat_interleave(torch.arange(3), torch.tensor(SPEC.level_counts(96, 96)))
    priors = torch.unique(receptive_fields(anchors, levels, (91.0, 267.0, 427.0), 0.5), dim=0)
    gts = torch.cat([random_boxes(30, gen, 0.5, 20, 96), random_boxes(5, gen, 50, 300, 96),
                     torch.tensor([[10.0, 10.0, 10.0, 30.0]])])
    return [(NWDPairs.build(anchors, gts), pairwise_nwd(anchors, gts)),
            (KLDPairs.build(priors, gts), -pairwise_kld(priors, gts))]


def test_pair_values_and_blocks_equal_the_dense_matrix():
    gen = torch.Generator().manual_seed(0)
    for pq, dense in pair_qualities(gen):
        i = torch.randint(0, pq.num_boxes, (5000,), generator=gen)
        j = torch.randint(0, pq.num_gts, (5000,), generator=gen)
        assert torch.equal(pq.values(i, j), dense[i, j])
        rows, cols = torch.tensor([3, 1, 7]), torch.tensor([2])
        assert torch.equal(pq.block(rows, cols), dense[rows][:, cols])


def test_pairwise_kld_is_independent_of_the_batch():
    gen = torch.Generator().manual_seed(1)
    p, g = random_boxes(500, gen), random_boxes(40, gen, 0.5, 30)
    full = pairwise_kld(p, g)
    for n, m in [(1, 1), (1, 40), (500, 1), (3, 7), (17, 5), (250, 16)]:
        r = torch.randperm(500, generator=gen)[:n]
        c = torch.randperm(40, generator=gen)[:m]
        assert torch.equal(pairwise_kld(p[r], g[c]), full[r][:, c])


def test_radius_never_leaves_out_a_pair_at_or_above_the_level():
    gen = torch.Generator().manual_seed(2)
    for pq, dense in pair_qualities(gen):
        d = pq.box_centres[:, None, :] - pq.gt_centres[None]  # [N, G, 2]
        for quantile in (0.0, 0.5, 0.99, 0.9999, 1.0):
            level = dense.double().quantile(quantile, dim=0)  # [G]: some pairs at the level itself
            n, g = dense.shape
            r = pq.radius(pq.box_layer.repeat_interleave(g), torch.arange(g).repeat(n),
                          level.repeat(n)).view(n, g, 2)
            u = torch.where(d == 0, 0.0, d / r).square().sum(-1)
            outside = (r < 0).any(-1) | (u > 1)
            assert (dense.double()[outside] < level.expand(n, g)[outside]).all()


@pytest.mark.parametrize("k", [1, 2, 3, 9])
def test_top_k_and_best_per_box_equal_dense(k, search):
    gen = torch.Generator().manual_seed(k)
    anchors = generate_anchors(SPEC, 128, 128)
    gts = torch.cat([gt_case("grid", 20, 128, gen), gt_case("mixed", 6, 128, gen),
                     gt_case("corners", 4, 128, gen)])
    for pq, dense in ((NWDPairs.build(anchors, gts), pairwise_nwd(anchors, gts)),
                      (KLDPairs.build(anchors, gts), -pairwise_kld(anchors, gts))):
        i, j, best = spatial.top_k_per_gt(pq, spatial.full_grid(pq), k)
        kth = dense.topk(k, dim=0).values[-1]
        ref_i, ref_j = (dense >= kth).nonzero(as_tuple=True)
        assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(ref_i.tolist(), ref_j.tolist()))
        assert torch.equal(best, dense.amax(dim=0))
        assert torch.equal(spatial.best_per_box(pq), dense.amax(dim=1))


def test_unique_rows_is_torch_unique():
    anchors = generate_anchors(SPEC, 160, 160)
    levels = torch.repeat_interleave(torch.arange(3), torch.tensor(SPEC.level_counts(160, 160)))
    rf = receptive_fields(anchors, levels, (91.0, 267.0, 427.0), 0.5)
    rf[:5] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    rf[5] = torch.tensor([-0.0, 1.0, 2.0, 3.0])  # -0.0 is 0.0
    rows, inverse = spatial.unique_rows(rf)
    ref = torch.unique(rf, dim=0)
    assert rows.shape == ref.shape and torch.equal(rows[inverse], rf + 0.0)
    assert torch.equal(torch.unique(rows, dim=0), ref)


def test_bench_assign_chooses_assigners(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="adla")
    bench = parser.add_subparsers(dest="command").add_parser("bench").add_subparsers(dest="bench_command")
    assign_commands.register_bench(bench)
    args = parser.parse_args(["bench", "assign", "--gts", "5", "--repeats", "1", "--size", "96", "--device",
                              "cpu", "--assigners", "rfla", "nwd", "--json", str(tmp_path / "b.json")])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert all(f"{n} ms" in printed for n in ("maxiou", "rfla", "nwd")) and "adla ms" not in printed
    res = json.loads((tmp_path / "b.json").read_text())
    assert res["assigners"] == ["maxiou", "rfla", "nwd"] and res["rows"][0]["nwd_ms"] > 0
    bad = parser.parse_args(["bench", "assign", "--assigners", "hungarian"])
    with pytest.raises(Exception, match="hungarian"):
        bad.func(bad)
