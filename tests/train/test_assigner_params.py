"""The typed assigner parameters of the run config (adla/assigner_params.py) are the assigner classes'
keyword arguments: same names, order, defaults and types, so the two can never drift."""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields

import pytest

from adla.assigner_params import ASSIGNER_PARAMS, AdlaParams, MaxIoUParams, RFLAParams
from adla.config import assigner_params, to_dict
from adla.errors import AdlaError
from adla.train.assigners import ASSIGNERS, AdaptiveDynamicAssigner, RFLAssigner, build_assigner

# how a class's annotation of a sequence argument reads in the dataclass (YAML lists become tuples)
SEQUENCES = {"Sequence[float]": "tuple[float, ...]", "Sequence[int]": "tuple[int, ...]"}


def _as_field_type(annotation: str) -> str:
    for seq, tup in SEQUENCES.items():
        annotation = annotation.replace(seq, tup)
    return annotation


def test_every_assigner_has_typed_params():
    assert list(ASSIGNER_PARAMS) == list(ASSIGNERS)


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_params_dataclass_equals_init_signature(name):
    sig = inspect.signature(ASSIGNERS[name])
    args = list(sig.parameters.values())
    assert all(a.kind is inspect.Parameter.KEYWORD_ONLY for a in args), "assigner arguments are keyword-only"
    flds = fields(ASSIGNER_PARAMS[name])
    assert [f.name for f in flds] == [a.name for a in args]
    for f, a in zip(flds, args, strict=True):
        assert f.default is not MISSING and a.default is not inspect.Parameter.empty, f.name
        assert f.default == a.default and type(f.default) is type(a.default), f.name
        assert f.type == _as_field_type(str(a.annotation)), f.name


@pytest.mark.parametrize("name", list(ASSIGNERS))
def test_defaults_round_trip_and_build(name):
    default = ASSIGNER_PARAMS[name]()
    assert assigner_params(name, to_dict(default)) == default  # the dict a checkpoint stores
    assert assigner_params(name, None) == default
    assert type(build_assigner(name, default)) is ASSIGNERS[name]
    assert type(build_assigner(name)) is ASSIGNERS[name]


def test_build_assigner_takes_typed_params():
    a = build_assigner("adla", AdlaParams(alpha0=0.5, quality="md", dynamic=False))
    assert isinstance(a, AdaptiveDynamicAssigner) and (a.alpha0, a.quality, a.dynamic) == (0.5, "md", False)
    r = build_assigner("rfla", RFLAParams(trf=(8.0,), topk=(1, 1)))
    assert isinstance(r, RFLAssigner) and tuple(r.topk) == (1, 1)
    with pytest.raises(AdlaError, match="MaxIoUParams given for assigner 'adla', which takes AdlaParams"):
        build_assigner("adla", MaxIoUParams())


def test_build_assigner_dict_is_typed():
    with pytest.raises(AdlaError, match=r"unknown parameter\(s\) \['alpha1'\] for assigner 'adla'; known: "
                                        r"\['alpha0', "):
        build_assigner("adla", {"alpha1": 0.5})
    with pytest.raises(AdlaError, match=r"assigner.params.alpha0: expected a number, got 'high' \(assigner 'adla'\)"):
        build_assigner("adla", {"alpha0": "high"})
    with pytest.raises(AdlaError, match="params.prune: expected true or false, got 1"):
        build_assigner("maxiou", {"prune": 1})
    with pytest.raises(AdlaError, match="params.chunk_size: expected an integer, got 8.5"):
        build_assigner("atss", {"chunk_size": 8.5})
    assert build_assigner("nwd", {"constant": 6}).constant == 6.0  # an int where a float is due
