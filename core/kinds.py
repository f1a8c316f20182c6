"""The layer-kind table: one declarative description per layer kind.

A :class:`LayerKind` says everything about a kind that does not depend on a subsystem: the keys
its ``[[layers]]`` table takes and how they are validated, its output shape, its MAC count, and
the structural part of its record in ``qmodel.json`` (and how to read that record back). Each
subsystem keeps one :class:`core.registry.Registry` keyed by the same names for its own part
(the PyTorch module and fake-quant, the exporter, the golden op, the hardware stage and its
cycle model); ``tests/test_registries.py`` fails when a kind lacks an entry in any of them.

Adding a kind: describe it here (a subclass registered in :data:`KINDS`), then add one entry
per registry. Nothing else dispatches on a layer's kind.

Kinds:

- ``conv``: 2-D convolution, stride 1, with an optional connection table (LeCun's sparse C3);
- ``pool``: max or average pooling, window = stride = ``size`` (``mode`` = ``max`` | ``avg``);
- ``subsample``: LeCun 1998's trainable subsampling: window sum × per-map coefficient + bias,
  then the activation;
- ``gap``: global average pooling: each channel's mean over the whole map;
- ``dense``: fully connected layer;
- ``rbf``: LeCun 1998's Euclidean RBF output layer (squared distances to fixed centers);
- ``batchnorm``: batch normalization after a conv or dense layer, trained as a layer and folded
  into that layer's weights and bias at export (it has no record and no stage of its own).
"""

import math

__all__ = ["LayerKind", "KINDS", "ACTIVATIONS", "LUT_ACTIVATIONS", "LECUN_1998_C3",
           "kind_of", "exported_kinds", "mac_kinds", "record_shape", "full_connections"]

#: Activation functions a layer may name; the LUT ones become lookup tables in qmodel.json.
ACTIVATIONS = ("relu", "tanh", "scaled_tanh", "sigmoid", "none")
LUT_ACTIVATIONS = ("tanh", "scaled_tanh", "sigmoid")

# LeCun et al. 1998, table I: for each C3 map (0..15), the S2 maps (0..5) it reads.
LECUN_1998_C3 = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (0, 4, 5), (0, 1, 5),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (0, 3, 4, 5), (0, 1, 4, 5), (0, 1, 2, 5),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)


def full_connections(in_channels, out_channels):
    """Return the connection table of a layer whose every output reads every input."""
    return tuple(tuple(range(in_channels)) for _ in range(out_channels))


class LayerKind:
    """The description of one layer kind (subclass it; one instance per kind in :data:`KINDS`).

    Class attributes
    ----------------
    name : str
        The kind's name, the same in the config (``kind = "conv"``), in ``qmodel.json`` and in
        every registry.
    keys : frozenset of str
        The keys its ``[[layers]]`` table may have besides ``name`` and ``kind``.
    exported : bool
        Whether it has a record of its own in ``qmodel.json`` (and so a golden op and a hardware
        stage). ``False`` for kinds folded into the previous layer at export.
    mac : bool
        Whether its products run on the PE × SIMD MAC array (it takes a folding entry).
    final : str
        ``"never"``, ``"allowed"`` or ``"only"``: whether it may (or must) be the output layer.
    output : str or None
        The ``model.output`` a final layer of this kind gives (``softmax`` or ``rbf``).
    roles : tuple of str
        The entries its record's ``arrays`` table may have.
    """

    name = None
    keys = frozenset()
    exported = True
    mac = False
    final = "never"
    output = None
    roles = ()
    #: Whether its input must be a map (it slides a window over height and width).
    spatial = False
    #: Whether its output is a flat vector of features (``(F, 1, 1)``, no spatial layout).
    flat = False
    #: Whether its weights get a number format of their own (``wbits`` sets its width).
    weighted = False
    #: Whether it requantizes its output to a format of its own (``abits`` sets its width),
    #: unless it is the final layer.
    requantizes = False

    # -- config ---------------------------------------------------------------------------
    def parse(self, check, table, prefix, in_shape):
        """Validate a ``[[layers]]`` table (``check`` is the config's checker); return
        ``(params, activation)``: the kind's parameters as a dict and the activation name."""
        return {}, "none"

    def check_order(self, check, prefix, previous):
        """Check the kind against the layer before it (``None`` for the first layer); the
        config itself refuses a :attr:`spatial` kind anywhere after a :attr:`flat` one."""

    def mac_window(self, params, in_shape):
        """Return ``(outputs, window)`` of a MAC kind: output channels (features) and the
        products summed per output (``kh·kw·C``; a dense layer's window is its whole input)."""
        raise TypeError(f"layer kind {self.name!r} has no MAC array")

    def bits_noop(self, key, final):
        """Return why ``[quant.layers.<name>]`` ``key`` (``wbits`` or ``abits``) changes nothing
        on a layer of this kind (``final``: the network's last layer), or ``None`` when it sets
        a width of the integer model."""
        if not self.exported:
            return f"a {self.name} layer is folded into the layer before it at export"
        if key == "wbits" and not self.weighted:
            return f"a {self.name} layer has no weights"
        if key == "abits" and final:
            return "the final layer's scores keep their accumulator's width (not requantized)"
        if key == "abits" and not self.requantizes:
            return f"a {self.name} layer keeps its input's format"
        return None

    # -- shapes and work ------------------------------------------------------------------
    def out_shape(self, params, in_shape):
        """Return the ``(channels, height, width)`` output of an ``in_shape`` input."""
        return tuple(in_shape)

    def macs(self, params, in_shape):
        """Return the useful multiply-accumulates per image (connected pairs only)."""
        return 0

    def fan_in(self, params, in_shape):
        """Return the most products summed into one accumulator (0: no accumulator)."""
        return 0

    # -- qmodel.json ----------------------------------------------------------------------
    def record(self, params, in_shape):
        """Return the structural fields of the kind's ``qmodel.json`` record (no formats, no
        arrays): what :meth:`read_record` needs to rebuild ``params``."""
        return {}

    def read_record(self, record, in_shape):
        """Return ``params`` from a ``qmodel.json`` record (the inverse of :meth:`record`).

        Raise ``KeyError`` or ``ValueError`` when a field is missing or malformed; golden/
        turns that into a :class:`golden.QModelError` naming the layer."""
        return {}

    def __repr__(self):
        return f"<layer kind {self.name!r}>"


def _window_out(check, prefix, in_shape, size):
    _, height, width = in_shape
    if height % size or width % size:
        check.fail(f"{prefix}size={size} does not divide its {height}x{width} input; change "
                   f"the pool size or the padding")


class Conv(LayerKind):
    name = "conv"
    keys = frozenset({"out_channels", "kernel", "padding", "activation", "connections"})
    mac = True
    weighted = True
    requantizes = True
    spatial = True
    roles = ("weight", "bias", "lut", "connections")

    def parse(self, check, table, prefix, in_shape):
        channels, height, width = in_shape
        out_channels = check.integer(table, "out_channels", prefix, None, 1, 4096)
        kernel = check.integer(table, "kernel", prefix, None, 1, 15)
        padding = check.integer(table, "padding", prefix, 0, 0, kernel - 1)
        activation = check.choice(table, "activation", prefix, ACTIVATIONS, "none")
        if height + 2 * padding < kernel or width + 2 * padding < kernel:
            check.fail(f"{prefix}kernel={kernel} is larger than its {height}x{width} input "
                       f"(padding {padding}); use a smaller kernel or more padding")
        connections = self._connections(check, table, prefix, channels, out_channels)
        return ({"out_channels": out_channels, "kernel": kernel, "padding": padding,
                 "connections": connections}, activation)

    @staticmethod
    def _connections(check, table, prefix, in_channels, out_channels):
        value = table.get("connections", "full")
        if value == "full":
            return full_connections(in_channels, out_channels)
        if value == "lecun1998":
            if (in_channels, out_channels) != (6, 16):
                check.fail(f"{prefix}connections='lecun1998' is the 6→16 C3 table, but this "
                           f"layer maps {in_channels}→{out_channels} channels")
            return LECUN_1998_C3
        if not isinstance(value, list):
            check.fail(f"{prefix}connections={value!r}: use 'full', 'lecun1998' or a list per "
                       f"output channel of input channel indices")
        if len(value) != out_channels:
            check.fail(f"{prefix}connections has {len(value)} rows but out_channels="
                       f"{out_channels}; give one list of input channels per output channel")
        rows = []
        for o, row in enumerate(value):
            ok = isinstance(row, list) and row and all(
                isinstance(c, int) and not isinstance(c, bool) and 0 <= c < in_channels
                for c in row)
            if not ok or len(set(row)) != len(row):
                check.fail(f"{prefix}connections[{o}]={row!r}: list distinct input channels "
                           f"0..{in_channels - 1}")
            rows.append(tuple(sorted(row)))
        return tuple(rows)

    def out_shape(self, params, in_shape):
        _, height, width = in_shape
        k, p = params["kernel"], params["padding"]
        return (params["out_channels"], height + 2 * p - k + 1, width + 2 * p - k + 1)

    def mac_window(self, params, in_shape):
        return params["out_channels"], params["kernel"] ** 2 * in_shape[0]

    def macs(self, params, in_shape):
        _, oh, ow = self.out_shape(params, in_shape)
        pairs = sum(len(row) for row in params["connections"])
        return pairs * params["kernel"] ** 2 * oh * ow

    def fan_in(self, params, in_shape):
        return max(len(row) for row in params["connections"]) * params["kernel"] ** 2

    def record(self, params, in_shape):
        return {"kernel": params["kernel"], "padding": params["padding"],
                "out_shape": list(self.out_shape(params, in_shape))}

    def read_record(self, record, in_shape):
        out_channels = int(record["out_shape"][0])
        return {"out_channels": out_channels, "kernel": int(record["kernel"]),
                "padding": int(record.get("padding", 0)),
                "connections": full_connections(in_shape[0], out_channels)}


class Pool(LayerKind):
    name = "pool"
    keys = frozenset({"mode", "size"})
    spatial = True
    modes = ("max", "avg")

    def parse(self, check, table, prefix, in_shape):
        if table.get("mode") == "subsample":
            check.fail(f"{prefix}mode='subsample' is its own kind now; write kind='subsample' "
                       f"(and drop mode)")
        mode = check.choice(table, "mode", prefix, self.modes)
        size = check.integer(table, "size", prefix, 2, 2, 8)
        if mode == "avg" and size & (size - 1):
            check.fail(f"{prefix}size={size}: average pooling needs a power-of-two size (the "
                       f"division is a shift)")
        _window_out(check, prefix, in_shape, size)
        return {"mode": mode, "size": size}, "none"

    def out_shape(self, params, in_shape):
        c, h, w = in_shape
        s = params["size"]
        return (c, h // s, w // s)

    def record(self, params, in_shape):
        return {"mode": params["mode"], "size": params["size"],
                "out_shape": list(self.out_shape(params, in_shape))}

    def read_record(self, record, in_shape):
        return {"mode": record["mode"], "size": int(record["size"])}


class Subsample(LayerKind):
    name = "subsample"
    keys = frozenset({"size", "activation"})
    spatial = True
    weighted = True
    requantizes = True
    roles = ("weight", "bias", "lut")

    def parse(self, check, table, prefix, in_shape):
        size = check.integer(table, "size", prefix, 2, 2, 8)
        activation = check.choice(table, "activation", prefix, ACTIVATIONS, "none")
        _window_out(check, prefix, in_shape, size)
        return {"size": size}, activation

    out_shape = Pool.out_shape

    def fan_in(self, params, in_shape):
        return params["size"] ** 2

    def record(self, params, in_shape):
        return {"size": params["size"], "out_shape": list(self.out_shape(params, in_shape))}

    def read_record(self, record, in_shape):
        return {"size": int(record["size"])}


class GlobalAvgPool(LayerKind):
    """Each channel's mean over the whole map, ``(C, H, W) → (C, 1, 1)``.

    The integer rule (golden/README.md): the sum of the ``H·W`` codes times ``mul``, rounded
    half up by ``shift`` bits, saturated to the input format. ``mul``/``2^shift`` is
    :func:`gap_scale` of ``H·W``: exactly ``1/(H·W)`` when it is a power of two."""

    name = "gap"
    keys = frozenset()
    spatial = True

    def parse(self, check, table, prefix, in_shape):
        c, h, w = in_shape
        if h * w < 2:
            check.fail(f"{prefix}global average pooling of a {h}x{w} map does nothing; "
                       f"remove the layer")
        return {}, "none"

    def out_shape(self, params, in_shape):
        return (in_shape[0], 1, 1)

    def record(self, params, in_shape):
        mul, shift = gap_scale(in_shape[1] * in_shape[2])
        return {"out_shape": [in_shape[0], 1, 1], "mul": mul, "shift": shift}

    def read_record(self, record, in_shape):
        return {}


#: Bits of the reciprocal multiplier of a global average pool whose area is not a power of two.
GAP_MUL_BITS = 16


def gap_scale(area):
    """Return ``(mul, shift)`` with ``mul / 2^shift`` ≈ ``1 / area``: ``(1, log2 area)`` for a
    power of two, else the nearest ``GAP_MUL_BITS``-bit multiplier."""
    if area & (area - 1) == 0:
        return 1, area.bit_length() - 1
    shift = GAP_MUL_BITS - 1 + math.ceil(math.log2(area))
    return round(2 ** shift / area), shift


class Dense(LayerKind):
    name = "dense"
    keys = frozenset({"out_features", "activation"})
    mac = True
    flat = True
    weighted = True
    requantizes = True
    final = "allowed"
    output = "softmax"
    roles = ("weight", "bias", "lut")

    def parse(self, check, table, prefix, in_shape):
        out_features = check.integer(table, "out_features", prefix, None, 1, 65536)
        activation = check.choice(table, "activation", prefix, ACTIVATIONS, "none")
        return {"out_features": out_features,
                "connections": full_connections(math.prod(in_shape), out_features)}, activation

    def out_shape(self, params, in_shape):
        return (params["out_features"], 1, 1)

    def mac_window(self, params, in_shape):
        return params["out_features"], math.prod(in_shape)

    def macs(self, params, in_shape):
        return math.prod(in_shape) * params["out_features"]

    def fan_in(self, params, in_shape):
        return math.prod(in_shape)

    def record(self, params, in_shape):
        return {"in_features": math.prod(in_shape), "out_features": params["out_features"]}

    def read_record(self, record, in_shape):
        out_features = int(record["out_features"])
        return {"out_features": out_features,
                "connections": full_connections(math.prod(in_shape), out_features)}


class Rbf(Dense):
    name = "rbf"
    keys = frozenset({"out_features"})
    final = "only"
    output = "rbf"
    roles = ("centers",)
    weighted = False                    # the centers are codes of the input's format
    requantizes = False

    def bits_noop(self, key, final):
        if key == "wbits":
            return "the centers of an rbf layer take its input's format"
        return super().bits_noop(key, final)

    def parse(self, check, table, prefix, in_shape):
        params, _ = Dense.parse(self, check, {**table, "activation": "none"}, prefix, in_shape)
        return params, "none"


class BatchNorm(LayerKind):
    """Batch normalization, folded at export into the conv or dense layer before it:
    ``w' = w·γ/√(σ²+ε)``, ``b' = (b − μ)·γ/√(σ²+ε) + β``; that layer then takes the
    batchnorm's activation. The layer before must have ``activation = "none"``."""

    name = "batchnorm"
    keys = frozenset({"activation", "eps"})
    exported = False
    folds_into = ("conv", "dense")

    def parse(self, check, table, prefix, in_shape):
        activation = check.choice(table, "activation", prefix, ACTIVATIONS, "none")
        eps = check.number({"eps": table.get("eps", 1e-5)}, "eps", prefix, 1e-12, 1.0)
        return {"eps": float(eps)}, activation

    def check_order(self, check, prefix, previous):
        if previous is None or previous.kind not in self.folds_into:
            what = "nothing" if previous is None else f"a {previous.kind} layer"
            check.fail(f"{prefix}batchnorm follows {what}; it is folded into the conv or dense "
                       f"layer before it, so put it right after one")
        if previous.activation != "none":
            check.fail(f"{prefix}batchnorm after {previous.name!r}, whose activation is "
                       f"{previous.activation!r}; set that layer's activation='none' and give "
                       f"the batchnorm the activation")


#: Every layer kind by name. The registries of the subsystems are keyed by these names.
KINDS = {k.name: k for k in (Conv(), Pool(), Subsample(), GlobalAvgPool(), Dense(), Rbf(),
                             BatchNorm())}


def kind_of(name):
    """Return the :class:`LayerKind` called ``name``; ``KeyError`` names the known kinds."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown layer kind {name!r}; known: {', '.join(KINDS)}") from None


def exported_kinds():
    """Return the names of the kinds with a record in ``qmodel.json``."""
    return tuple(name for name, k in KINDS.items() if k.exported)


def mac_kinds():
    """Return the names of the kinds computed on the MAC array (one folding entry each)."""
    return tuple(name for name, k in KINDS.items() if k.mac)


def record_shape(record, in_shape):
    """Return the output shape of a ``qmodel.json`` layer record given its input shape."""
    kind = kind_of(record["kind"])
    return kind.out_shape(kind.read_record(record, in_shape), in_shape)
