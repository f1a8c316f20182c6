import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def discard_unused_elaboratables():
    """Silence Amaranth's "created but never used" for components a test built but did not
    elaborate (the generator builds stages to inspect them)."""
    yield
    from hw.simulation import discard_unused
    discard_unused()
