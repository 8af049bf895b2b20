"""Fixtures for the kernel tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kernel.harness import Kernel, install_specs, kernel_env


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_specs(tmp_path_factory.mktemp("jupyter-prefix"))


@pytest.fixture(scope="module")
def kernel(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel shared by a module: short timeout, small memory and output caps."""
    tmp = tmp_path_factory.mktemp("kernel")
    env = kernel_env(tmp, timeout_seconds=4, memory_mb=256, max_output_bytes=20000)
    k = Kernel(data_dir, env, cwd=tmp)
    yield k
    k.close()


@pytest.fixture
def jupyter_path(data_dir: Path, tmp_path: Path,
                 monkeypatch: pytest.MonkeyPatch) -> Path:
    """For tools that find kernels by name (nbclient, jupyter_kernel_test): JUPYTER_PATH and
    private runtime/audit dirs for this test only."""
    monkeypatch.setenv("JUPYTER_PATH", str(data_dir))
    for key, value in kernel_env(tmp_path).items():
        if key.startswith(("JUPYTER_RUNTIME", "JUPYTER_CONFIG", "IPYTHONDIR", "AGENTICRAFT")):
            monkeypatch.setenv(key, value)
    return data_dir
