"""Typed run configuration: one frozen dataclass per component, loaded from YAML with overrides.

Defaults live only in the dataclasses. A YAML file or a ``key.sub=value`` override naming a field that
does not exist is an error, not a silent no-op. The resolved config is saved beside every checkpoint.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from adla.anchors import DEFAULT_MAX_STRIDE, AnchorSpec
from adla.assigner_params import ASSIGNER_PARAMS, AssignerParams, param_names
from adla.errors import AdlaError
from adla.model import ModelConfig
from adla.postprocess import PostprocessConfig
from adla.ranges import ConfigValueError, check_ranges


@dataclass(frozen=True)
class AssignerConfig:
    """Which assigner (a key of ``adla.train.assigners.ASSIGNERS``) and its typed keyword arguments.

    ``params`` is the dataclass of ``name`` in ``adla.assigner_params.ASSIGNER_PARAMS``; given as None
    (the assigner's defaults) or as a dict (YAML, an old checkpoint), it is converted here, and a key or
    a type that assigner does not take is an ``AdlaError``.
    """

    name: str = "maxiou"
    params: AssignerParams = None  # type: ignore[assignment]  # None or a dict: converted in __post_init__

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", assigner_params(self.name, self.params))


@dataclass(frozen=True)
class LossConfig:
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    box_weight: float = 1.0

    RANGES: ClassVar[dict[str, str]] = {"focal_alpha": "[0, 1]", "focal_gamma": ">= 0", "box_weight": ">= 0"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


@dataclass(frozen=True)
class DataConfig:
    """COCO-json data. A relative path in a config file is relative to that file's folder; one given as an
    override (``--set data.train_ann=...``) to the working directory (``load_config``)."""

    train_ann: str | None = None
    train_images: str | None = None
    val_ann: str | None = None
    val_images: str | None = None
    hflip: float = 0.5
    vflip: float = 0.5
    batch_size: int = 2  # per process
    num_workers: int = 2
    size_divisor: int = DEFAULT_MAX_STRIDE  # batches padded to a multiple: the default anchors' max stride
    # augmentation (adla.data.augment): the AI-TOD paper configs keep flips only
    rot90: bool = False  # all 8 flips/90-degree rotations (replaces hflip/vflip)
    crop: int | None = None  # square random crop side (px) at training, zero-padded where the image is smaller
    scale: tuple[float, ...] = (1.0, 1.0)  # log-uniform resize range before the crop
    min_visible: float = 0.5  # a box cut by the crop is kept when this share of it is inside
    photometric: float = 0.0  # brightness/contrast/saturation jitter strength (0.2 = +-20 %)

    RANGES: ClassVar[dict[str, str]] = {"hflip": "[0, 1]", "vflip": "[0, 1]", "batch_size": ">= 1",
                                        "num_workers": ">= 0", "size_divisor": ">= 1", "crop": ">= 8",
                                        "scale": "> 0", "min_visible": "[0, 1]", "photometric": "[0, 1)"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


@dataclass(frozen=True)
class OptimConfig:
    """SGD with linear warm-up and step decay; the public AI-TOD RetinaNet schedule by default."""

    epochs: int = 12
    lr: float = 0.005
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 500
    warmup_ratio: float = 0.001
    milestones: tuple[int, ...] = (8, 11)
    lr_gamma: float = 0.1
    grad_clip: float | None = 35.0
    amp: bool = True  # only on CUDA
    # an iteration budget instead of epochs (for small data sets): when set, ``epochs`` is ignored and the
    # run ends after ``iters`` iterations (step milestones still count epochs; cosine spans the budget)
    iters: int | None = None
    schedule: str = "step"  # "step" (milestones, in epochs) or "cosine" (to min_lr_ratio over the run)
    min_lr_ratio: float = 0.01
    ema: float = 0.0  # decay of an exponential moving average of the weights (0 = off), evaluated and saved
    ema_warmup: int = 200  # iterations over which the EMA decay ramps up: decay * (1 - exp(-step / ema_warmup))

    RANGES: ClassVar[dict[str, str]] = {
        "epochs": ">= 1", "lr": "> 0", "momentum": "[0, 1)", "weight_decay": ">= 0", "warmup_iters": ">= 0",
        "warmup_ratio": "(0, 1]", "milestones": ">= 1", "lr_gamma": "> 0", "grad_clip": ">= 0",
        "iters": ">= 1", "schedule": "in step|cosine", "min_lr_ratio": "[0, 1]", "ema": "[0, 1)",
        "ema_warmup": ">= 1"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


# The small CPU model, the one definition used by the demo, `adla bench train-step` and the tests:
# ResNet-18 from scratch with BatchNorm, 64-channel FPN, narrow 2-conv heads, 3 classes (the synthetic
# data's). configs/cpu_small_*.yaml spell the same model in YAML (tests/core/test_configs.py checks it).
SMALL_MODEL: dict[str, Any] = {"backbone": "resnet18", "norm": "bn", "num_classes": 3, "fpn_channels": 64,
                               "head_channels": 64, "head_convs": 2}


def small_model_overrides(**replace: Any) -> list[str]:
    """The small CPU model as ``model.key=value`` overrides for ``load_config``; ``replace`` changes fields
    by name (e.g. ``fpn_channels=32``), and may name any ``ModelConfig`` field."""
    known = {f.name for f in fields(ModelConfig)}
    unknown = sorted(set(replace) - known)
    if unknown:
        raise AdlaError(f"small_model_overrides: unknown model field(s) {unknown}; known: {sorted(known)}")
    return [f"model.{k}={v}" for k, v in {**SMALL_MODEL, **replace}.items()]


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    assigner: AssignerConfig = field(default_factory=AssignerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: PostprocessConfig = field(default_factory=PostprocessConfig)
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 20
    eval_every: int = 0  # epochs between evaluations; 0 = only at the end

    RANGES: ClassVar[dict[str, str]] = {"log_every": ">= 1", "eval_every": ">= 0"}

    def __post_init__(self) -> None:
        check_ranges(self, self.RANGES)


def to_dict(cfg: Any) -> Any:
    """A plain (YAML-safe) dict of a config dataclass."""
    if is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in fields(cfg)}
    if isinstance(cfg, (tuple, list)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(value, dict):
            raise AdlaError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where)
            except AdlaError as exc:
                errors.append(str(exc))
        raise AdlaError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise AdlaError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise AdlaError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise AdlaError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise AdlaError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise AdlaError(f"{where}: expected a string, got {value!r}")
    if tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
        raise AdlaError(f"{where}: expected a mapping, got {value!r}")
    return value


def from_dict(cls: type, data: dict, where: str = "config") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are an error naming the key."""
    if cls is AssignerConfig:
        return _assigner_from_dict(data, where)
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise AdlaError(f"{where}: unknown key(s) {unknown}; known: {sorted(names)}")
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigValueError as exc:  # a value out of its range: name the full key
        raise AdlaError(f"{where}.{exc.field}: {exc.reason}") from exc
    except (TypeError, ValueError) as exc:
        raise AdlaError(f"{where}: {exc}") from exc


# parameters renamed since checkpoints were first written: (assigner, old name) -> new name. Checkpoints and
# configs that use the old name keep loading.
RENAMED_PARAMS = {("adla", "quality"): "matching"}  # ADLA's "diou" / "md": not a Quality (the class)


def assigner_params(name: str, params: Any = None, where: str = "assigner.params") -> AssignerParams:
    """The typed parameters of assigner ``name`` from None (its defaults), a dict (YAML values, checkpoint
    configs: lists become tuples, ints floats where a float is due) or its dataclass, unchanged.

    Raises ``AdlaError`` naming an unknown assigner, each unknown key with the assigner's valid keys, or
    the key of a value of the wrong type; ``where`` begins the message (the key path of ``params``).
    """
    if not isinstance(name, str) or name not in ASSIGNER_PARAMS:
        raise AdlaError(f"unknown assigner {name!r}; known: {sorted(ASSIGNER_PARAMS)}")
    cls = ASSIGNER_PARAMS[name]
    if params is None:
        return cls()
    if isinstance(params, cls):
        return params  # type: ignore[return-value]  # cls is one of the AssignerParams
    if is_dataclass(params):
        raise AdlaError(f"{where}: {type(params).__name__} given for assigner {name!r}, which takes "
                        f"{cls.__name__}")
    if not isinstance(params, Mapping):
        raise AdlaError(f"{where}: expected a mapping of assigner {name!r}'s parameters, got {params!r}")
    for (who, old), new in RENAMED_PARAMS.items():
        if who == name and old in params:
            if new in params:
                raise AdlaError(f"{where}: {old!r} is the old name of {new!r}; give only {new!r}")
            params = {(new if k == old else k): v for k, v in params.items()}
    known = param_names(name)
    unknown = sorted(set(params) - set(known), key=str)
    if unknown:
        raise AdlaError(f"{where}: unknown parameter(s) {unknown} for assigner {name!r}; known: {known}")
    try:
        return from_dict(cls, dict(params), where)
    except AdlaError as exc:
        raise AdlaError(f"{exc} (assigner {name!r})") from exc


def _assigner_from_dict(data: dict, where: str) -> AssignerConfig:
    """``assigner: {name: ..., params: {...}}``: the params checked against the dataclass of that name."""
    known = [f.name for f in fields(AssignerConfig)]
    unknown = sorted(set(data) - set(known), key=str)
    if unknown:
        raise AdlaError(f"{where}: unknown key(s) {unknown}; known: {known}")
    name = _coerce(data.get("name", AssignerConfig.name), str, f"{where}.name")
    if name not in ASSIGNER_PARAMS:
        raise AdlaError(f"{where}.name: unknown assigner {name!r}; known: {sorted(ASSIGNER_PARAMS)}")
    params = data.get("params")
    return AssignerConfig(name, assigner_params(name, {} if params is None else params, f"{where}.params"))


def _merge(base: dict, top: dict) -> dict:
    out = dict(base)
    for k, v in top.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with_base(tree: dict, path: Path, depth: int = 0) -> dict:
    """Resolve ``_base_: other.yaml`` (relative to the file) by a recursive merge, child wins."""
    base_name = tree.pop("_base_", None)
    if base_name is None:
        return tree
    if depth > 8:
        raise AdlaError("_base_ chain deeper than 8 files (a cycle?)", path)
    if not isinstance(base_name, str):
        raise AdlaError(f"_base_ must be one file name, got {type(base_name).__name__} {base_name!r:.60}", path)
    base_path = (path.parent / base_name).resolve()
    if not base_path.is_file():
        raise AdlaError(f"_base_ file {base_name} not found", path)
    try:
        base = yaml.safe_load(base_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise AdlaError(f"not valid YAML: {exc}", base_path) from exc
    if not isinstance(base, dict):
        raise AdlaError(f"a config must be a mapping of sections, got {type(base).__name__}", base_path)
    return _merge(_with_base(base, base_path, depth + 1), tree)


def _set_path(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise AdlaError(f"override {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _check_path(cls: type, dotted: str) -> None:
    keys = dotted.split(".")
    node: Any = cls
    for i, k in enumerate(keys):
        if node is AssignerConfig and keys[i:i + 1] == ["params"]:
            # the keys of assigner.params depend on assigner.name, which a later override may set: the
            # whole config checks them (naming the assigner's keys); here only their depth
            if len(keys) > i + 2:
                raise AdlaError(f"override {dotted}: {keys[i + 1]} is not a section")
            return
        if not is_dataclass(node):
            if node is dict or typing.get_origin(node) is dict:
                return  # free-form: checked by the component itself
            raise AdlaError(f"override {dotted}: {k} is not a section")
        hints = {n: t for n, t in typing.get_type_hints(node).items() if n in {f.name for f in fields(node)}}
        if k not in hints:
            raise AdlaError(f"override {dotted}: unknown key {k!r}; known: {sorted(hints)}")
        node = hints[k]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """RunConfig from a YAML file (or the defaults) plus ``key.sub=value`` overrides (YAML values)."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise AdlaError("config file not found", path)
        try:
            tree = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise AdlaError(f"not valid YAML: {exc}", path) from exc
        if not isinstance(tree, dict):
            raise AdlaError("a config must be a mapping at the top level", path)
        tree = _resolve_paths(_with_base(tree, path), path.parent)
    for item in overrides:
        if "=" not in item:
            raise AdlaError(f"override {item!r}: expected key=value")
        key, raw = item.split("=", 1)
        _check_path(RunConfig, key.strip())
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value)
    return from_dict(RunConfig, tree, str(path) if path else "config")


DATA_PATHS = ("train_ann", "train_images", "val_ann", "val_images")


def _resolve_paths(tree: dict, base: Path) -> dict:
    """The config file's data paths, relative ones taken from the file's folder ``base``.

    Before the ``--set`` overrides are applied: a path given on the command line is the shell's, relative
    to the working directory. One fallback for run folders written before this rule (their config.yaml
    holds paths as the command line gave them): a relative path that is not in the file's folder but is
    in the working directory is taken from there.
    """
    data = tree.get("data")
    if not isinstance(data, dict):
        return tree
    fixed = dict(data)
    for key in DATA_PATHS:
        p = data.get(key)
        if not isinstance(p, str) or Path(p).is_absolute():
            continue
        cand = base / p
        fixed[key] = p if not cand.exists() and Path(p).exists() else str(cand)
    return {**tree, "data": fixed}


def config_from_dict(tree: dict) -> RunConfig:
    """RunConfig from a resolved dict (as saved in a checkpoint)."""
    return from_dict(RunConfig, tree, "checkpoint config")


def dump_yaml(cfg: RunConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "SMALL_MODEL", "AnchorSpec", "AssignerConfig", "AssignerParams", "DataConfig", "LossConfig", "ModelConfig",
    "OptimConfig", "PostprocessConfig", "RunConfig", "assigner_params", "config_from_dict", "dump_yaml",
    "load_config", "small_model_overrides", "to_dict",
]
