"""The neutral core every part reads: config, layer kinds and their registries, errors, paths.

- :mod:`core.kinds`: one :class:`~core.kinds.LayerKind` per layer kind (config keys, shapes,
  MACs, ``qmodel.json`` record);
- :mod:`core.registry`: the per-subsystem tables keyed by kind;
- :mod:`core.config`: parse and validate ``configs/<preset>.toml``;
- :mod:`core.errors`: :class:`~core.errors.UserError` and the one-line CLI wrapper;
- :mod:`core.paths`: the checkout, presets and build folders;
- :mod:`core.provenance`: input digests, atomic writes, the build-folder lock;
- :mod:`core.data`: MNIST (offline), IDX folders and Fashion-MNIST as uint8 arrays.

It imports neither torch nor Amaranth, and nothing from quant/, golden/, hw/, fpga/ or sim/.
"""
