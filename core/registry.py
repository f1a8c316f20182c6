"""Per-subsystem registries keyed by layer kind (see :mod:`core.kinds`).

Each subsystem that does something per layer kind keeps one :class:`Registry` and registers an
entry for every kind it handles::

    OPS = Registry("golden op", exported_only=True)

    @OPS.register("conv")
    class ConvOp: ...

Looking up a kind that has no entry raises ``KeyError`` naming the subsystem and the kind;
:meth:`Registry.missing` lists the kinds without an entry (``tests/test_registries.py`` walks
every registry and fails on any). Nothing outside the registries dispatches on a layer's kind.
"""

from .kinds import KINDS

__all__ = ["Registry", "REGISTRIES"]

#: Every registry created, by subsystem name (filled as the subsystems' modules are imported).
REGISTRIES = {}


class Registry:
    """A table from layer-kind name to a subsystem's entry for that kind.

    Parameters
    ----------
    subsystem : str
        What the entries are (``"golden op"``, ``"hardware stage"``); names the registry in
        error messages and in :data:`REGISTRIES`.
    exported_only : bool
        Whether only kinds with a ``qmodel.json`` record need an entry (golden/ and hw/ never
        see a kind folded away at export).
    """

    def __init__(self, subsystem, *, exported_only=False):
        if not isinstance(subsystem, str) or not subsystem:
            raise TypeError(f"subsystem must be a non-empty string, not {subsystem!r}")
        if subsystem in REGISTRIES:
            raise ValueError(f"a registry for {subsystem!r} already exists")
        self._subsystem = subsystem
        self._exported_only = bool(exported_only)
        self._entries = {}
        REGISTRIES[subsystem] = self

    @property
    def subsystem(self):
        return self._subsystem

    def register(self, *kinds):
        """Decorate the entry of ``kinds``; a kind may be registered once."""
        for kind in kinds:
            if kind not in KINDS:
                raise KeyError(f"{self._subsystem}: cannot register unknown layer kind {kind!r}; "
                               f"describe it in core/kinds.py first")
            if kind in self._entries:
                raise ValueError(f"{self._subsystem}: layer kind {kind!r} is registered twice")
            if self._exported_only and not KINDS[kind].exported:
                raise ValueError(f"{self._subsystem}: layer kind {kind!r} is folded away at "
                                 f"export and never reaches this registry")

        def decorate(entry):
            for kind in kinds:
                self._entries[kind] = entry
            return entry
        return decorate

    def __getitem__(self, kind):
        try:
            return self._entries[kind]
        except KeyError:
            raise KeyError(f"{self._subsystem}: no entry for layer kind {kind!r}; registered: "
                           f"{', '.join(sorted(self._entries))}") from None

    def __contains__(self, kind):
        return kind in self._entries

    def kinds(self):
        """Return the kinds this registry must cover."""
        return tuple(n for n, k in KINDS.items() if k.exported or not self._exported_only)

    def missing(self):
        """Return the kinds that need an entry and have none."""
        return tuple(k for k in self.kinds() if k not in self._entries)

    def __repr__(self):
        return f"<Registry {self._subsystem!r}: {', '.join(sorted(self._entries))}>"
