"""Exported backbones loaded into torchvision give the Flax features (to 1e-4); the command
writes matching .pt / .npz files from a workdir's checkpoint."""
import json

import jax
import numpy as np
import pytest
import torch
from runs import tiny_run

from effssl_jax import experiment, export
from effssl_jax.errors import UserError
from effssl_jax.models import convert, resnet


def _randomised_backbone(arch, cifar_stem, size, seed=0):
    """A backbone with torchvision's random init (a CPU initialises it in a fraction of Flax's
    compile time) and non-trivial running statistics, as after training."""
    net = resnet.get_backbone(arch, cifar_stem=cifar_stem)
    torch.manual_seed(seed)
    meta = {"arch": arch, "width": 64, "cifar_stem": cifar_stem}
    variables = convert.from_torchvision(export.torchvision_resnet(meta).state_dict())
    rng = np.random.default_rng(seed)
    stats = jax.tree.map(lambda v: np.asarray(v) + rng.uniform(0.1, 0.5, v.shape).astype(v.dtype),
                         variables["batch_stats"])
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), np.zeros((1, size, size, 3)),
                                             train=False))
    assert jax.tree.map(np.shape, shapes) == jax.tree.map(np.shape, variables)
    return net, {"params": variables["params"], "batch_stats": stats}


@pytest.mark.parametrize("arch,cifar_stem,size", [("resnet18", False, 64),
                                                  ("resnet10", True, 16),
                                                  ("resnet50", False, 32)])
def test_torchvision_features_equal_flax_features(arch, cifar_stem, size):
    net, variables = _randomised_backbone(arch, cifar_stem, size)
    state_dict = export.backbone_state_dict(
        export.backbone_variables({"params": {"backbone": variables["params"]},
                                   "batch_stats": {"backbone": variables["batch_stats"]}}))
    model = export.torchvision_resnet({"arch": arch, "width": 64, "cifar_stem": cifar_stem})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)
    model.eval()
    images = np.random.default_rng(1).normal(size=(4, size, size, 3)).astype(np.float32)
    flax_features = np.asarray(jax.jit(lambda v, x: net.apply(v, x, train=False))(variables,
                                                                                  images))
    with torch.no_grad():
        torch_features = model(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    assert torch_features.shape == flax_features.shape == (4, resnet.feature_dim(arch))
    np.testing.assert_allclose(torch_features, flax_features, atol=1e-4, rtol=1e-4)


def test_export_command_writes_pt_npz_and_meta(tmp_path):
    workdir = tiny_run(tmp_path / "run", epochs=1)
    out = tmp_path / "export" / "backbone.pt"
    meta = export.main(["--workdir", workdir, "--out", str(out)])
    assert meta["arch"] == "resnet10" and meta["width"] == 8 and meta["cifar_stem"]
    assert json.loads((tmp_path / "export" / "backbone.json").read_text()) == meta
    pt = torch.load(out)
    npz = np.load(tmp_path / "export" / "backbone.npz")
    assert set(pt) == set(npz.files) and "conv1.weight" in pt and "layer4.0.bn2.running_var" in pt
    for k in npz.files:
        np.testing.assert_array_equal(pt[k].numpy(), npz[k])
    # Back to Flax: the checkpoint's backbone, exactly.
    _, state, step = experiment.restore(workdir)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    assert meta["checkpoint_step"] == step
    back = convert.from_torchvision(dict(npz))
    ref = jax.device_get(export.backbone_variables(variables))
    jax.tree.map(np.testing.assert_array_equal, back, ref)
    with pytest.raises(UserError, match="width"):
        export.torchvision_resnet(meta)
