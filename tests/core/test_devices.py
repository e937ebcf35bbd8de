"""adla.checks.resolve_device / check_device: the one device resolution (auto, cpu, cuda, cuda:N)."""

from __future__ import annotations

import pytest
import torch

from adla.checks import check_device, resolve_device
from adla.errors import AdlaError


def test_auto_and_cpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_cuda_without_a_gpu_and_bad_names_are_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("cuda", "cuda:1"):
        with pytest.raises(AdlaError, match=f"--device {name}: no CUDA GPU") as exc:
            check_device(name)
        assert "\n" not in str(exc.value)
    with pytest.raises(AdlaError, match="--device gpu: unknown device, expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")
    check_device("auto")
    check_device(None)


def test_cuda_index_is_checked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(AdlaError, match="--device cuda:2: this machine has 2 GPU"):
        resolve_device("cuda:2")
    with pytest.raises(AdlaError, match="model device cuda:x: unknown device, expected cuda or cuda:N"):
        resolve_device("cuda:x", "model device")
