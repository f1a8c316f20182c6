"""golden.blas: one BLAS thread inside the block, the previous count restored after it."""

import threading

import pytest

from golden import blas


class FakeBlas:
    """A BLAS thread count with a getter and a setter, recording every set."""

    def __init__(self, threads):
        self.threads = threads
        self.sets = []

    def get(self):
        return self.threads

    def set(self, n):
        self.sets.append(n)
        self.threads = n


@pytest.fixture
def fake(monkeypatch):
    found = FakeBlas(4)
    monkeypatch.setattr(blas, "_FOUND", [(found.get, found.set)])
    monkeypatch.setattr(blas, "_STATE", {"depth": 0, "saved": None})
    return found


def test_one_thread_restores_the_real_blas():
    found = blas.controls()
    if found is None:                           # another BLAS: nothing to hold
        with blas.one_thread(), blas.one_thread():
            pass
        return
    get, _ = found
    before = get()
    with blas.one_thread():
        assert get() == 1
        with blas.one_thread():
            assert get() == 1
        assert get() == 1
    assert get() == before


def test_nested_blocks_set_once_and_restore_once(fake):
    with blas.one_thread():
        assert fake.threads == 1
        with blas.one_thread():
            assert fake.threads == 1
        assert fake.threads == 1
    assert fake.threads == 4
    assert fake.sets == [1, 4]


def test_an_exception_in_the_block_restores(fake):
    with pytest.raises(KeyError), blas.one_thread():
        raise KeyError("x")
    assert fake.threads == 4 and fake.sets == [1, 4]
    assert blas._STATE["depth"] == 0


def test_concurrent_blocks_restore_when_the_last_ends(fake):
    entered, leave = threading.Barrier(3), threading.Event()
    seen = []

    def worker():
        with blas.one_thread():
            entered.wait()
            leave.wait()
            seen.append(fake.threads)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    entered.wait()                  # both workers are inside their block
    assert fake.threads == 1
    leave.set()
    for t in threads:
        t.join()
    assert seen == [1, 1]
    assert fake.threads == 4 and fake.sets == [1, 4]


def test_without_a_blas_control_the_block_does_nothing(monkeypatch):
    monkeypatch.setattr(blas, "_FOUND", [None])
    assert blas.controls() is None
    with blas.one_thread():
        pass


def test_a_failed_search_counts_as_not_found(monkeypatch):
    def broken():
        raise AttributeError("no symbol")
    monkeypatch.setattr(blas, "_FOUND", [])
    monkeypatch.setattr(blas, "_search", broken)
    assert blas.controls() is None
    assert blas._FOUND == [None]                # searched once, never again


def test_the_search_never_loads_a_library(monkeypatch, tmp_path):
    """A candidate that is not already loaded (here: not a library at all) is skipped."""
    (tmp_path / "libopenblas.so").write_bytes(b"not a library")
    monkeypatch.setattr(blas, "_candidates", lambda: iter([str(tmp_path / "libopenblas.so")]))
    assert blas._search() is None
