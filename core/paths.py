"""Where things are: the checkout, the presets, and every build folder of a config.

Everything generated goes under ``build/`` (never committed): ``build/<name>/`` per config, with
its checkpoint, integer model, ``rtl/``, ``reports/``, ``sim/`` and ``synth/``. Every command
takes its folders from here, so a layout change is one edit.
"""

from pathlib import Path

__all__ = ["ROOT", "CONFIG_DIR", "SHIPPED_DIR", "BUILD_DIR", "build_dir", "BuildPaths"]

#: The checkout (the folder holding configs/, core/, hw/, ...).
ROOT = Path(__file__).resolve().parent.parent
#: The presets: ``configs/<preset>.toml``.
CONFIG_DIR = ROOT / "configs"
#: The shipped default checkpoints (``checkpoints/<preset>.pt``, committed).
SHIPPED_DIR = ROOT / "checkpoints"
#: Everything generated.
BUILD_DIR = ROOT / "build"


def build_dir(name):
    """Return ``build/<name>``: the default output folder of the config called ``name`` (a
    :class:`core.config.Config` or its ``model.name``)."""
    name = getattr(name, "name", name)
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise ValueError(f"a build folder needs a plain config name, not {name!r}")
    return BUILD_DIR / name


class BuildPaths:
    """The files of one build folder (``build/<name>`` unless given)."""

    def __init__(self, root):
        self._root = Path(root)

    @classmethod
    def of(cls, config, out=None):
        """The build folder of ``config``: ``out`` when given, else ``build/<name>``."""
        return cls(out if out is not None else build_dir(config))

    @property
    def root(self):
        return self._root

    @property
    def checkpoint(self):
        return self._root / "model.pt"

    @property
    def qmodel_json(self):
        return self._root / "qmodel.json"

    @property
    def qmodel_npz(self):
        return self._root / "qmodel.npz"

    @property
    def rtl(self):
        return self._root / "rtl"

    @property
    def reports(self):
        return self._root / "reports"

    @property
    def sim(self):
        return self._root / "sim"

    @property
    def synth(self):
        return self._root / "synth"

    def __repr__(self):
        return f"BuildPaths({str(self._root)!r})"
