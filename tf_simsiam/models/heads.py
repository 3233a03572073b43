"""The methods' MLP heads: SimSiam's projector and predictor (paper Sec. 4 and the official code), SimCLR's
projection head, the projector of Barlow Twins and VICReg, and BYOL's MLPs.

projector (proj_layers=3, the ImageNet recipe; 2 for CIFAR):
    [Linear(no bias) -> BN -> ReLU] x (proj_layers - 1) -> Linear(no bias) -> BN(no affine)
predictor (a bottleneck):
    Linear(dim, pred_dim, no bias) -> BN -> ReLU -> Linear(pred_dim, dim)     (no BN at its output)

`bn` selects where BatchNormalization stands (the paper's Table 3): "all" (hidden layers and the output),
"hidden" (hidden layers only) or "none". A Linear keeps its bias only where no BN follows it.
`affine_output=True` gives the projector's output BN a learned scale and shift (gamma, beta), PyTorch's default
BatchNorm1d, as the paper's text reads ("BN applied to each fc layer, including its output fc"); the official code
has none (affine=False), which keeps every channel of z at zero mean over the batch.
"""

import keras

from tf_simsiam.models.batch_norm import batch_norm

BN_PLACEMENTS = ("none", "hidden", "all")


def torch_linear_initializer():
    """PyTorch's default nn.Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), used by the official code."""
    return keras.initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_in", distribution="uniform")


def _check_positive(**values):
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_bn(name, bn):
    if bn not in BN_PLACEMENTS:
        raise ValueError(f"{name} must be one of {BN_PLACEMENTS}, got {bn!r}")


def _linear(units, use_bias, name):
    return keras.layers.Dense(
        units, use_bias=use_bias, kernel_initializer=torch_linear_initializer(),
        bias_initializer=torch_linear_initializer() if use_bias else "zeros", name=name)


def projector(proj_dim=2048, proj_layers=3, bn="all", sync_bn="auto", affine_output=False, name="projector"):
    """The projection MLP g: backbone features -> z."""
    _check_positive(proj_dim=proj_dim, proj_layers=proj_layers)
    _check_bn("proj_bn", bn)
    if affine_output and bn != "all":
        raise ValueError(f"proj_bn_affine needs proj_bn='all' (a BN at the projector output), got {bn!r}")
    layers = []
    for i in range(proj_layers - 1):
        layers.append(_linear(proj_dim, use_bias=bn == "none", name=f"linear{i + 1}"))
        if bn != "none":
            layers.append(batch_norm(sync_bn, name=f"bn{i + 1}"))
        layers.append(keras.layers.ReLU(name=f"relu{i + 1}"))
    layers.append(_linear(proj_dim, use_bias=bn != "all", name=f"linear{proj_layers}"))
    if bn == "all":
        layers.append(batch_norm(sync_bn, affine=bool(affine_output), name=f"bn{proj_layers}"))
    return keras.Sequential(layers, name=name)


def predictor(proj_dim=2048, pred_dim=512, bn="hidden", sync_bn="auto", affine_output=False, name="predictor"):
    """The prediction MLP h: z -> p, a bottleneck of width pred_dim. With bn="all" (Table 3's "unstable" variant,
    not in the official code) `affine_output` gives the output BN a scale and shift, PyTorch's default."""
    _check_positive(proj_dim=proj_dim, pred_dim=pred_dim)
    _check_bn("pred_bn", bn)
    if affine_output and bn != "all":
        raise ValueError(f"pred_bn_affine needs pred_bn='all' (a BN at the predictor output), got {bn!r}")
    layers = [_linear(pred_dim, use_bias=bn == "none", name="linear1")]
    if bn != "none":
        layers.append(batch_norm(sync_bn, name="bn1"))
    layers.append(keras.layers.ReLU(name="relu1"))
    layers.append(_linear(proj_dim, use_bias=bn != "all", name="linear2"))
    if bn == "all":
        layers.append(batch_norm(sync_bn, affine=bool(affine_output), name="bn2"))
    return keras.Sequential(layers, name=name)


def simclr_projector(hidden_dim, out_dim=128, layers=2, sync_bn="auto", name="projector"):
    """SimCLR's projection head g (v2 form): [Linear(no bias) -> BN -> ReLU] x (layers - 1) -> Linear(out_dim,
    no bias) -> BN without centring (no bias, no ReLU). The hidden width is the backbone's feature width."""
    _check_positive(hidden_dim=hidden_dim, out_dim=out_dim, layers=layers)
    stack = []
    for i in range(layers - 1):
        stack += [_linear(hidden_dim, use_bias=False, name=f"linear{i + 1}"), batch_norm(sync_bn, name=f"bn{i + 1}"),
                  keras.layers.ReLU(name=f"relu{i + 1}")]
    stack += [_linear(out_dim, use_bias=False, name=f"linear{layers}"),
              batch_norm(sync_bn, center=False, name=f"bn{layers}")]
    return keras.Sequential(stack, name=name)


def mlp_projector(proj_dim=8192, proj_layers=3, sync_bn="auto", name="projector"):
    """The projector of Barlow Twins and VICReg (VICReg's "expander"): [Linear(no bias) -> BN -> ReLU] x
    (proj_layers - 1) -> Linear(proj_dim, no bias), every layer proj_dim wide (3 x 8192 in both papers). VICReg's
    official hidden layers keep a bias, which the BN after them cancels."""
    _check_positive(proj_dim=proj_dim, proj_layers=proj_layers)
    stack = []
    for i in range(proj_layers - 1):
        stack += [_linear(proj_dim, use_bias=False, name=f"linear{i + 1}"), batch_norm(sync_bn, name=f"bn{i + 1}"),
                  keras.layers.ReLU(name=f"relu{i + 1}")]
    stack.append(_linear(proj_dim, use_bias=False, name=f"linear{proj_layers}"))
    return keras.Sequential(stack, name=name)


def byol_mlp(hidden_dim=4096, out_dim=256, sync_bn="auto", name="projector"):
    """BYOL's projector and predictor: Linear(hidden_dim, no bias) -> BN -> ReLU -> Linear(out_dim) (4096 and 256
    in the paper; the bias the first Linear has there is cancelled by the BN after it)."""
    _check_positive(hidden_dim=hidden_dim, out_dim=out_dim)
    return keras.Sequential([_linear(hidden_dim, use_bias=False, name="linear1"), batch_norm(sync_bn, name="bn1"),
                             keras.layers.ReLU(name="relu1"), _linear(out_dim, use_bias=True, name="linear2")],
                            name=name)


def mocov2_head(hidden_dim=2048, out_dim=128, name="projector"):
    """MoCo v2's MLP head: Linear(hidden_dim) -> ReLU -> Linear(out_dim), with biases and no BN (the hidden width
    is the backbone's feature width, 2048 for a ResNet-50)."""
    _check_positive(hidden_dim=hidden_dim, out_dim=out_dim)
    return keras.Sequential([_linear(hidden_dim, use_bias=True, name="linear1"), keras.layers.ReLU(name="relu1"),
                             _linear(out_dim, use_bias=True, name="linear2")], name=name)
