"""Read an ONNX model (as ``torch.onnx.export`` and tf2onnx write it) with the ``onnx`` package.

The graph's nodes are walked from the input: each must take the previous one's output (a
chain; ``Shape`` and the small nodes that compute a reshape's target shape are side branches
and skipped), and each is fed to the :class:`importers.network.Network` by the table
:data:`OPERATORS`. Weights are the graph's initializers (or ``Constant`` nodes). A ``Transpose``
to channels last right before a flatten makes it a channels-last flatten; one to channels first
right after an NHWC input is the layout change tf2onnx adds.
"""


from .network import ModelImportError, Network

__all__ = ["read_onnx", "OPERATORS"]

#: Nodes that only compute shapes for a Reshape (side branches of the chain).
SHAPE_OPS = ("Shape", "Gather", "Unsqueeze", "Concat", "Constant", "Cast", "Slice", "Squeeze")


def _attrs(node, onnx):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _conv(net, node, a, get):
    pads = list(a.get("pads", [0, 0, 0, 0]))
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", b"VALID"):
        net.unsupported(f"auto_pad={a['auto_pad'].decode()}: give explicit pads")
    top, left, bottom, right = pads
    net.conv(get(node.input[1]), get(node.input[2]) if len(node.input) > 2 else None,
             padding=(top, bottom, left, right), stride=tuple(a.get("strides", (1, 1))),
             dilation=tuple(a.get("dilations", (1, 1))), groups=a.get("group", 1))


def _pool(mode):
    def read(net, node, a, get):
        if mode == "avg" and any(a.get("pads", ())) and a.get("count_include_pad", 0):
            net.unsupported("a padded average pooling")
        net.pool(mode, tuple(a["kernel_shape"]), stride=tuple(a.get("strides", a["kernel_shape"])),
                 padding=tuple(a.get("pads", (0,))), ceil_mode=bool(a.get("ceil_mode", 0)))
    return read


def _gemm(net, node, a, get):
    if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
        net.unsupported("a Gemm with alpha, beta or transA")
    weight = get(node.input[1])
    weight = weight if a.get("transB", 0) else weight.T
    net.dense(weight, get(node.input[2]) if len(node.input) > 2 and node.input[2] else None)


def _matmul(net, node, a, get):
    net.dense(get(node.input[1]).T, None)


def _add(net, node, a, get):
    net.bias(get(node.input[1]))


def _batchnorm(net, node, a, get):
    gamma, beta, mean, var = (get(name) for name in node.input[1:5])
    net.batchnorm(gamma, beta, mean, var, a.get("epsilon", 1e-5))


def _flatten(net, node, a, get):
    if a.get("axis", 1) != 1:
        net.unsupported(f"Flatten axis={a['axis']}: only axis 1")
    net.flatten(net.order)


def _reshape(net, node, a, get):
    shape = get(node.input[1], required=False)
    if shape is not None and len(shape) != 2:
        net.unsupported(f"a reshape to {tuple(shape)}: only a flatten to (batch, features)")
    net.flatten(net.order)


def _transpose(net, node, a, get):
    perm = tuple(a.get("perm", ()))
    if perm == (0, 2, 3, 1):
        net.order = "nhwc"          # the flatten after it reads channels last
    elif perm == (0, 3, 1, 2) and net.order == "nhwc_input":
        net.order = "nchw"
    else:
        net.unsupported(f"Transpose perm={perm}: only the NHWC layout changes around a "
                        f"flatten")
    net.dropout_like("layout change")


def _act(name):
    return lambda net, node, a, get: net.activation(name)


def _nothing(net, node, a, get):
    net.dropout()


#: ONNX operator → how it enters the network.
OPERATORS = {
    "Conv": _conv, "Gemm": _gemm, "MatMul": _matmul, "Add": _add,
    "MaxPool": _pool("max"), "AveragePool": _pool("avg"),
    "Relu": _act("relu"), "Tanh": _act("tanh"), "Sigmoid": _act("sigmoid"),
    "Softmax": _act("softmax"), "LogSoftmax": _act("log_softmax"),
    "Flatten": _flatten, "Reshape": _reshape, "Transpose": _transpose,
    "Dropout": _nothing, "Identity": _nothing, "BatchNormalization": _batchnorm,
}


class _OnnxNetwork(Network):
    """A :class:`Network` that also tracks the layout ONNX's Transposes set."""

    order = "nchw"

    def dropout_like(self, what):
        self._note(f"nothing ({what})")


def read_onnx(path, source):
    """Return the :class:`Network` of an ``.onnx`` file."""
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError:
        raise ModelImportError("reading .onnx files needs the onnx package; run `make setup` "
                               "(it installs the importers extra)") from None
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own types for a bad file
        raise ModelImportError(f"{source}: not an ONNX model ({type(exc).__name__}); give a "
                               f"file written by torch.onnx.export or tf2onnx") from None
    graph = model.graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            values[node.output[0]] = numpy_helper.to_array(_attrs(node, onnx)["value"])
    inputs = [i for i in graph.input if i.name not in values]
    if len(inputs) != 1:
        raise ModelImportError(f"{source}: the graph takes {len(inputs)} inputs; give a model "
                               f"of one image batch")
    dims = [d.dim_value if d.HasField("dim_value") else None
            for d in inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or None in dims[1:]:
        raise ModelImportError(f"{source}: the input has shape {dims}; give a model of (batch, "
                               f"1, height, width) images (or (batch, height, width, 1))")
    nhwc = dims[3] == 1 and dims[1] != 1
    shape = (dims[3], dims[1], dims[2]) if nhwc else tuple(dims[1:])
    net = _OnnxNetwork(source=source, input_shape=shape)
    if nhwc:
        net.order = "nhwc_input"

    def get(name, required=True):
        if name in values:
            return values[name]
        if required:
            net.unsupported(f"its input {name!r} is computed, not a stored weight")
        return None

    current = inputs[0].name
    chain = [n for n in graph.node if n.op_type not in SHAPE_OPS]
    for position, node in enumerate(chain):
        net.at(position, node.name or f"{node.op_type}_{position}", node.op_type)
        if node.op_type not in OPERATORS:
            net.unsupported()
        if not node.input or node.input[0] != current:
            net.unsupported("its input is not the previous layer's output: only a chain of "
                            "layers")
        OPERATORS[node.op_type](net, node, _attrs(node, onnx), get)
        current = node.output[0]
    if [o.name for o in graph.output] != [current]:
        raise ModelImportError(f"{source}: the graph's output is not its last layer's; give a "
                               f"model with one output, the scores")
    return net
