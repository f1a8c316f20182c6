"""core.paths: the checkout, presets and build folders."""

import pytest

from core.config import load_config
from core.paths import BUILD_DIR, CONFIG_DIR, ROOT, SHIPPED_DIR, BuildPaths, build_dir


def test_locations():
    assert (ROOT / "core" / "paths.py").is_file()
    assert (CONFIG_DIR / "lenet5.toml").is_file()
    assert (SHIPPED_DIR / "lenet5.pt").is_file()
    assert BUILD_DIR == ROOT / "build"


def test_build_dir_of_a_config_and_a_name():
    assert build_dir(load_config("lenet5-tanh")) == BUILD_DIR / "lenet5-tanh"
    assert build_dir("x") == BUILD_DIR / "x"
    for bad in ("", "a/b", "..", None):
        with pytest.raises(ValueError, match="a build folder needs a plain config name"):
            build_dir(bad)


def test_build_paths(tmp_path):
    paths = BuildPaths.of(load_config("lenet5"), tmp_path)
    assert paths.root == tmp_path
    assert paths.qmodel_json == tmp_path / "qmodel.json"
    assert paths.qmodel_npz == tmp_path / "qmodel.npz"
    assert paths.checkpoint == tmp_path / "model.pt"
    assert (paths.rtl, paths.reports, paths.sim, paths.synth) == (
        tmp_path / "rtl", tmp_path / "reports", tmp_path / "sim", tmp_path / "synth")
    assert BuildPaths.of(load_config("lenet5")).root == BUILD_DIR / "lenet5"
