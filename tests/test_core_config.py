import copy
import pickle

import pytest

from core.config import LECUN_1998_C3, ConfigError, load_config, parse_config

PRESETS = ["lenet5", "lenet5-tanh", "lenet5-1998"]

BASE = """
[model]
name = "t"
input_size = 28
input_pad = 2

[[layers]]
name = "c1"
kind = "conv"
out_channels = 6
kernel = 5
activation = "relu"

[[layers]]
name = "s2"
kind = "pool"
mode = "max"
size = 2

[[layers]]
name = "out"
kind = "dense"
out_features = 10
"""


def test_base_parses():
    config = parse_config(BASE)
    assert [layer.out_shape for layer in config.layers] == [(6, 28, 28), (6, 14, 14), (10, 1, 1)]
    assert config.train["seed"] == 0 and config.quant["wbits"] == 8


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load(preset):
    config = load_config(preset)
    assert config.name == preset
    assert config.num_classes == 10
    assert config.layers[-1].final


def test_mac_counts_match_design():
    assert load_config("lenet5").macs == 416_520
    assert load_config("lenet5-tanh").macs == 416_520
    assert load_config("lenet5-1998").macs == 326_520


def test_lecun_table_has_60_pairs():
    assert sum(len(row) for row in LECUN_1998_C3) == 60
    c3 = load_config("lenet5-1998").layers[2]
    assert c3.connections == LECUN_1998_C3 and not c3.full


def test_tanh_same_padding():
    c1 = load_config("lenet5-tanh").layers[0]
    assert c1.in_shape == (1, 28, 28) and c1.out_shape == (6, 28, 28)


BAD = [
    ("[model\nname='x'", "not valid TOML"),
    (BASE.replace('[model]', '[modle]'), "unknown key 'modle'"),
    (BASE.replace('kernel = 5', 'kernal = 5'), "unknown key layers[0].'kernal'"),
    (BASE.replace('kernel = 5', 'kernel = "5"'), "layers[0].kernel must be an integer"),
    (BASE.replace('kernel = 5', 'kernel = 40'), "layers[0].kernel=40 is out of range"),
    (BASE.replace('input_pad = 2', 'input_pad = 0').replace("kernel = 5", "kernel = 15")
     .replace("\nsize = 2", "\nsize = 4"), "size=4 does not divide its 14x14 input"),
    (BASE.replace('activation = "relu"', 'activation = "gelu"'),
     "layers[0].activation='gelu' is not one of"),
    (BASE.replace('mode = "max"', 'mode = "median"'), "layers[1].mode='median' is not one of"),
    (BASE.replace('name = "s2"', 'name = "c1"'), "layers[1].name='c1' is used twice"),
    (BASE.split("[[layers]]")[0], "missing [[layers]]"),
    (BASE + '\n[train]\nepochs = 0\n', "train.epochs=0 is out of range"),
    (BASE + '\n[quant]\nwbits = 1\n', "quant.wbits=1 is out of range; use 2..16"),
    (BASE + '\n[quant.layers.c9]\nwbits = 4\n', "quant.layers.c9: no layer named 'c9'"),
    (BASE + '\n[hardware]\nfolding = "target"\n', "needs hardware.target_cycles > 0"),
    (BASE.replace('out_features = 10', 'out_features = 10\nactivation = "relu"'),
     "the output layer gives raw scores"),
    (BASE.replace('activation = "relu"', 'activation = "relu"\nconnections = [[0]]'),
     "connections has 1 rows but out_channels=6"),
    (BASE.replace('activation = "relu"', 'activation = "relu"\nconnections = "lecun1998"'),
     "'lecun1998' is the 6→16 C3 table"),
    (BASE.replace('[model]', '[model]\noutput = "rbf"'),
     "model.output='rbf' but the last layer is kind='dense', which gives 'softmax' scores; set "
     "model.output='softmax' or change the last layer"),
    (BASE.replace('mode = "max"', 'mode = "subsample"'),
     "layers[1].mode='subsample' is its own kind now; write kind='subsample' (and drop mode)"),
    (BASE.replace('kind = "dense"', 'kind = "pool"\nmode = "max"').replace(
        "out_features = 10", ""), "the last layer 'out' is a pool layer; end with one of: "
     "dense, rbf"),
    (BASE.replace('[[layers]]\nname = "out"', '[[layers]]\nname = "r"\nkind = "rbf"\n'
                  'out_features = 3\n\n[[layers]]\nname = "out"'),
     "layers[2].kind='rbf' is an output layer; it must be the last layer"),
    (BASE.replace('name = "s2"\nkind = "pool"\nmode = "max"\nsize = 2',
                  'name = "bn"\nkind = "batchnorm"'),
     "layers[1].batchnorm after 'c1', whose activation is 'relu'; set that layer's "
     "activation='none' and give the batchnorm the activation"),
    (BASE.replace('name = "c1"\nkind = "conv"', 'name = "bn"\nkind = "batchnorm"\n'
                  '[[layers]]\nname = "c1"\nkind = "conv"'),
     "layers[0].batchnorm follows nothing; it is folded into the conv or dense layer before "
     "it, so put it right after one"),
    (BASE.replace('mode = "max"\nsize = 2', 'mode = "max"\nsize = 2\n[[layers]]\nname = "b"\n'
                  'kind = "batchnorm"'),
     "layers[2].batchnorm follows a pool layer"),
    (BASE.replace('mode = "max"\nsize = 2', 'mode = "max"\nsize = 2\n[[layers]]\nname = "g"\n'
                  'kind = "gap"\nsize = 2'), "unknown key layers[2].'size'"),
    (BASE.replace('name = "s2"', 'name = "s2"\neps = 0.1'), "unknown key layers[1].'eps'"),
    (BASE.replace('mode = "max"\nsize = 2', 'mode = "avg"\nsize = 3'),
     "average pooling needs a power-of-two size"),
    (BASE.replace('name = "t"', 'name = ""'), "model.name must be a non-empty string"),
    (BASE + '\n[hardware.devices.up5K]\nfolding = "minimal"\n',
     "hardware.devices.up5K: unknown device; expected one of: up5k"),
    (BASE + '\n[hardware.devices.up5k]\nfolding = "target"\n',
     "needs hardware.devices.up5k.target_cycles > 0"),
    (BASE + '\n[hardware.devices.up5k]\nload = ["f9"]\n',
     "hardware.devices.up5k.load=['f9'] must be a list of layer names"),
    (BASE + '\n[hardware.devices.up5k]\nfolding = "minimal"\nspeed = 3\n',
     "unknown key hardware.devices.up5k.'speed'"),
    (BASE + '\n[hardware.layers.c1]\nmul = "dsp48"\n',
     "hardware.layers.c1.mul='dsp48' must be 'dsp' or 'lut'"),
    (BASE + '\n[hardware.devices.up5k.devices.hx8k]\nfolding = "minimal"\n',
     "unknown key hardware.devices.up5k.'devices'"),
]


@pytest.mark.parametrize("text,message", BAD, ids=[m for _, m in BAD])
def test_bad_configs(text, message):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    text = str(info.value)
    assert message in text
    assert "\n" not in text and text.startswith("config ")


BN_GAP = BASE.replace('activation = "relu"', 'activation = "none"').replace(
    '[[layers]]\nname = "s2"', '[[layers]]\nname = "bn1"\nkind = "batchnorm"\n'
    'activation = "relu"\neps = 0.001\n\n[[layers]]\nname = "s2"').replace(
    '[[layers]]\nname = "out"', '[[layers]]\nname = "g"\nkind = "gap"\n\n[[layers]]\n'
    'name = "out"')


def test_batchnorm_and_gap_parse_and_fold():
    config = parse_config(BN_GAP)
    kinds = [layer.kind for layer in config.layers]
    assert kinds == ["conv", "batchnorm", "pool", "gap", "dense"]
    assert [layer.out_shape for layer in config.layers] == [
        (6, 28, 28), (6, 28, 28), (6, 14, 14), (6, 1, 1), (10, 1, 1)]
    assert config.layers[1].eps == 0.001 and config.layers[1].macs == 0
    exported = config.exported
    assert [layer.name for layer in exported] == ["c1", "s2", "g", "out"]
    c1 = exported[0]
    assert c1.activation == "relu" and [f.name for f in c1.folded] == ["bn1"]
    assert config.layers[0].activation == "none" and config.layers[0].folded == ()
    assert config.macs == 6 * 25 * 28 * 28 + 6 * 10


def test_subsample_kind():
    config = load_config("lenet5-1998")
    s2 = config.layers[1]
    assert (s2.kind, s2.size, s2.activation, s2.fan_in) == ("subsample", 2, "scaled_tanh", 4)


def test_layer_params_as_attributes():
    c1 = parse_config(BASE).layers[0]
    assert (c1.kernel, c1.padding, c1.fan_in) == (5, 0, 25)
    with pytest.raises(AttributeError, match="conv layer 'c1' has no 'size'"):
        _ = c1.size


def test_device_sections():
    config = parse_config(BASE + '\n[hardware]\nfolding = "target"\ntarget_cycles = 9000\n'
                          '\n[hardware.devices.up5k]\nfolding = "explicit"\nload = ["out"]\n'
                          '[hardware.devices.up5k.layers.c1]\npe = 2\nmul = "lut"\n')
    assert config.hardware["target_cycles"] == 9000 and config.hardware["load"] == []
    up5k = config.hardware["devices"]["up5k"]
    assert up5k["folding"] == "explicit" and up5k["load"] == ["out"]
    assert up5k["layers"] == {"c1": {"pe": 2, "mul": "lut"}}


def test_device_names_match_synthesis():
    from core.config import DEVICE_NAMES
    from fpga.devices import DEVICES
    assert set(DEVICE_NAMES) == set(DEVICES)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset 'lenet6'.*known presets: lenet5"):
        load_config("lenet6")


def test_weights_hash_ignores_quant_and_hardware():
    a = parse_config(BASE)
    b = parse_config(BASE + "\n[quant]\nwbits = 4\n[hardware]\nfolding = 'minimal'\n")
    c = parse_config(BASE.replace("kernel = 5", "kernel = 3"))
    assert a.weights_sha256 == b.weights_sha256 != c.weights_sha256


def test_layers_copy_and_pickle():
    config = load_config("lenet5-1998")
    assert copy.deepcopy(config.layers) == config.layers
    assert pickle.loads(pickle.dumps(config.layers[2])).connections == LECUN_1998_C3


FOLD_BAD = [
    ('\n[hardware.layers.c1]\npe = 4\n',
     "hardware.layers.c1.pe=4 does not divide the 6 outputs of 'c1'; use a divisor of 6"),
    ('\n[hardware.layers.c1]\nsimd = 7\n',
     "hardware.layers.c1.simd=7 does not divide the window of 'c1' (25 products per output); "
     "use a divisor of 25"),
    ('\n[hardware.devices.up5k.layers.out]\nsimd = 5\n',
     "hardware.devices.up5k.layers.out.simd=5 does not divide the window of 'out' (1176 "
     "products per output); use a divisor of 1176"),
    ('\n[hardware.layers.s2]\npe = 2\n',
     "hardware.layers.s2: pool layer 's2' has no MAC array, so pe/simd/mul change nothing; "
     "fold one of: c1, out"),
]


@pytest.mark.parametrize("extra,message", FOLD_BAD, ids=[m for _, m in FOLD_BAD])
def test_folding_tables_checked_against_the_layers(extra, message):
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + extra)
    assert str(info.value) == f"config <string>: {message}"
    assert parse_config(BASE + '\n[hardware.layers.c1]\npe = 3\nsimd = 5\n')


@pytest.mark.parametrize("kind", ["conv", "pool", "gap"])
def test_no_map_layer_after_a_dense_one(kind):
    extra = {"conv": 'out_channels = 2\nkernel = 1', "pool": 'mode = "max"\nsize = 2',
             "gap": ""}[kind]
    text = BASE.replace('[[layers]]\nname = "out"',
                        '[[layers]]\nname = "f"\nkind = "dense"\nout_features = 16\n\n'
                        '[[layers]]\nname = "bn"\nkind = "batchnorm"\n\n'
                        f'[[layers]]\nname = "x"\nkind = "{kind}"\n{extra}\n\n'
                        '[[layers]]\nname = "out"')
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert str(info.value) == (f"config <string>: layers[4].a {kind} layer after the dense "
                               f"layer 'f', whose output is a flat vector; put {kind} layers "
                               f"before the first dense layer")


BN_GAP_PRESET = load_config("lenet5-bn-gap").path.read_text()
RBF_PRESET = load_config("lenet5-1998").path.read_text()
OVERRIDE_BAD = [
    (BASE, "[quant.layers.s2]\nabits = 3\nwbits = 2\n",
     "quant.layers.s2.abits=3 changes nothing: a pool layer keeps its input's format; remove it"),
    (BASE, "[quant.layers.s2]\nwbits = 2\n",
     "quant.layers.s2.wbits=2 changes nothing: a pool layer has no weights; remove it"),
    (BASE, "[quant.layers.out]\nabits = 4\n",
     "quant.layers.out.abits=4 changes nothing: the final layer's scores keep their "
     "accumulator's width (not requantized); remove it"),
    (BN_GAP_PRESET, "[quant.layers.gap]\nabits = 4\n",
     "quant.layers.gap.abits=4 changes nothing: a gap layer keeps its input's format; remove it"),
    (BN_GAP_PRESET, "[quant.layers.bn3]\nwbits = 4\n",
     "quant.layers.bn3.wbits=4 changes nothing: a batchnorm layer is folded into the layer "
     "before it at export; set it in [quant.layers.c3]"),
    (RBF_PRESET, "[quant.layers.out]\nwbits = 4\n",
     "quant.layers.out.wbits=4 changes nothing: the centers of an rbf layer take its input's "
     "format; remove it"),
]


@pytest.mark.parametrize("text, extra, message", OVERRIDE_BAD,
                         ids=[m.split(":")[0] for _, _, m in OVERRIDE_BAD])
def test_overrides_that_change_nothing_are_refused(text, extra, message):
    """An override on a pool (or abits on the final layer) was accepted and ignored."""
    with pytest.raises(ConfigError) as info:
        parse_config(text.replace("[quant]", extra + "[quant]") if "[quant]" in text
                     else text + "\n" + extra)
    assert str(info.value) == f"config <string>: {message}"


def test_overrides_say_where_each_width_comes_from():
    config = parse_config(RBF_PRESET + "\n[quant.layers.s2]\nabits = 4\nwbits = 3\n"
                          "[quant.layers.c5]\nwbits = 6\n")
    sources = {layer.name: (config.bits_source(layer, "wbits"),
                            config.bits_source(layer, "abits"),
                            config.layer_bits(layer.name, "wbits"),
                            config.layer_bits(layer.name, "abits"))
               for layer in config.exported}
    wbits, abits = config.quant["wbits"], config.quant["abits"]
    assert sources["s2"] == ("override", "override", 3, 4)
    assert sources["c5"] == ("override", "default", 6, abits)
    assert sources["c1"] == ("default", "default", wbits, abits)
    assert sources["out"][:2] == ("automatic", "automatic")
