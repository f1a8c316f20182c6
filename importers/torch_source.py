"""Read a PyTorch model: an ``nn.Module`` or a ``torch.export`` program saved as ``.pt2``.

Both become a :class:`torch.export.ExportedProgram` (a module is exported here, in eval mode, on
a zero image of the given side): a torch.fx graph of ATen operators with each tensor's shape.
Its operators are walked from the input to the output; each one must take the previous one's
output (a chain), and each is fed to the :class:`importers.network.Network` by the table
:data:`OPERATORS`. Parameters and buffers come from the program's state dict.
"""

import torch

from .network import ModelImportError, Network

__all__ = ["read_module", "read_pt2", "OPERATORS"]

_aten = torch.ops.aten


def _tensor(program, node):
    """Return the parameter, buffer or constant a placeholder node stands for."""
    sig = program.graph_signature
    for table in (sig.inputs_to_parameters, sig.inputs_to_buffers,
                  getattr(sig, "inputs_to_lifted_tensor_constants", {})):
        if node.name in table:
            key = table[node.name]
            value = program.state_dict.get(key)
            return program.constants[key] if value is None else value
    raise KeyError(node.name)


def _arg(node, i, name, default):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(name, default)


def _conv(net, node, get):
    net.conv(get(node.args[1]), get(_arg(node, 2, "bias", None)),
             padding=_pad(_arg(node, 4, "padding", 0)), stride=_pair(_arg(node, 3, "stride", 1)),
             dilation=_pair(_arg(node, 5, "dilation", 1)), groups=_arg(node, 6, "groups", 1))


def _pair(value):
    return tuple(value) * (2 // len(value)) if isinstance(value, (list, tuple)) else (value,) * 2


def _pad(value):
    top, left = _pair(value)
    return (top, top, left, left)


def _pool(mode):
    def read(net, node, get):
        padding = _pair(_arg(node, 3, "padding", 0))
        if mode == "max" and _pair(_arg(node, 4, "dilation", 1)) != (1, 1):
            net.unsupported("a dilated pooling")
        net.pool(mode, _pair(node.args[1]), stride=_pair(_arg(node, 2, "stride", []) or
                                                        node.args[1]),
                 padding=padding, ceil_mode=bool(_arg(node, 5 if mode == "max" else 4,
                                                      "ceil_mode", False)))
    return read


def _linear(net, node, get):
    net.dense(get(node.args[1]), get(_arg(node, 2, "bias", None)))


def _batchnorm(net, node, get):
    gamma, beta, mean, var = (get(a) for a in node.args[1:5])
    eps = node.args[7] if node.target == _aten.batch_norm.default else node.args[6]
    channels = len(mean)
    net.batchnorm(torch.ones(channels) if gamma is None else gamma,
                  torch.zeros(channels) if beta is None else beta, mean, var, eps)


def _flatten(net, node, get):
    shape = node.meta["val"].shape
    if len(shape) != 2:
        net.unsupported(f"a reshape to {tuple(shape)}: only a flatten to (batch, features)")
    net.flatten("nchw")


def _act(name):
    return lambda net, node, get: net.activation(name)


#: ATen operator → how it enters the network.
OPERATORS = {
    _aten.conv2d.default: _conv,
    _aten.linear.default: _linear,
    _aten.max_pool2d.default: _pool("max"),
    _aten.avg_pool2d.default: _pool("avg"),
    _aten.relu.default: _act("relu"),
    _aten.relu_.default: _act("relu"),
    _aten.tanh.default: _act("tanh"),
    _aten.sigmoid.default: _act("sigmoid"),
    _aten.softmax.int: _act("softmax"),
    _aten._softmax.default: _act("softmax"),
    _aten.log_softmax.int: _act("log_softmax"),
    _aten._log_softmax.default: _act("log_softmax"),
    _aten.view.default: _flatten,
    _aten.reshape.default: _flatten,
    _aten.flatten.using_ints: _flatten,
    _aten.dropout.default: lambda net, node, get: net.dropout(),
    _aten.clone.default: lambda net, node, get: net.dropout(),
    _aten.batch_norm.default: _batchnorm,
    _aten._native_batch_norm_legit_no_training.default: _batchnorm,
}


def _source_name(node):
    stack = node.meta.get("nn_module_stack") or {}
    path = list(stack.values())[-1][0] if stack else ""
    return path or node.name


def _walk(program, source):
    graph = program.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"
              and n.name in program.graph_signature.user_inputs]
    if len(inputs) != 1:
        raise ModelImportError(f"{source}: the program takes {len(inputs)} inputs; give a "
                               f"model of one image batch")
    shape = tuple(inputs[0].meta["val"].shape)
    if len(shape) != 4:
        raise ModelImportError(f"{source}: the input has shape {shape}; give a model of "
                               f"(batch, 1, height, width) images")
    net = Network(source=source, input_shape=shape[1:])
    ops = [n for n in graph.nodes if n.op == "call_function"]
    current = inputs[0]

    def get(arg):
        return None if arg is None else _tensor(program, arg).detach()

    for position, node in enumerate(ops):
        what = getattr(node.target, "__name__", str(node.target))
        net.at(position, _source_name(node), what)
        if node.target not in OPERATORS:
            net.unsupported()
        if not node.args or node.args[0] is not current:
            net.unsupported("its input is not the previous layer's output: only a chain of "
                            "layers")
        OPERATORS[node.target](net, node, get)
        current = node
    outputs = [a for n in graph.nodes if n.op == "output" for a in n.args[0]]
    if outputs != [current]:
        raise ModelImportError(f"{source}: the program's output is not its last layer's; give "
                               f"a model with one output, the scores")
    return net


def read_pt2(path, source):
    """Return the :class:`Network` of a ``torch.export.save`` file."""
    try:
        program = torch.export.load(path)
    except Exception as exc:  # torch raises many types for a bad archive
        raise ModelImportError(f"{source}: not a torch.export program ({type(exc).__name__}); "
                               f"save one with torch.export.save(torch.export.export(model, "
                               f"(x,)), 'model.pt2')") from None
    return _walk(program, source)


def read_module(module, input_size, source):
    """Return the :class:`Network` of an ``nn.Module`` taking ``(N, 1, input_size,
    input_size)`` images (exported here in eval mode)."""
    if not isinstance(module, torch.nn.Module):
        raise ModelImportError(f"{source}: {type(module).__name__} is not a torch.nn.Module; "
                               f"give the model object")
    was_training = module.training
    module.eval()
    try:
        program = torch.export.export(module, (torch.zeros(1, 1, input_size, input_size),))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelImportError(f"{source}: torch.export cannot trace the module ({first}); "
                               f"give a module of (N, 1, {input_size}, {input_size}) images "
                               f"with a traceable forward") from None
    finally:
        module.train(was_training)
    return _walk(program, source)
