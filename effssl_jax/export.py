"""The pretrained backbone of a run as a torchvision ResNet or timm ViT state_dict (.pt) and as a
.npz.

    python -m effssl_jax.export --workdir DIR --out backbone.pt [--step N]
        [--format torchvision|timm]

writes backbone.pt (torch needed only for this file; `--out x.npz` writes the .npz alone),
backbone.npz (the same arrays under the same torchvision names, for users without torch) and
backbone.json (arch, width, stem, checkpoint step). Load it with

    model = torchvision.models.resnet50()          # or resnet18; see torchvision_resnet below
    model.fc = torch.nn.Identity()                 # the backbone has no classifier
    model.load_state_dict(torch.load("backbone.pt"), strict=False)  # missing: fc.*

A width-64 ImageNet-stem backbone is exactly torchvision's resnet18/resnet50 (resnet10:
`torchvision.models.ResNet(BasicBlock, [1, 1, 1, 1])`). The CIFAR stem
(3x3 stride-1 conv1, no max-pool) is torchvision's with conv1 and maxpool replaced, as
`torchvision_resnet(meta)` builds; torchvision cannot express other widths, whose weights still
export with the same names and transposed shapes.

ViTs (the default for them, `--format timm`) export timm's state_dict (vit.to_timm), and
backbone.json holds what builds the matching timm model (`timm_model`, `timm_kwargs`: patch size,
img_size the position embedding is stored for, widths, no classifier, `dynamic_img_size` so that
any side that is a multiple of the patch size runs, as in training); `timm_vit(meta)` does it:

    model = timm.create_model(meta["timm_model"], pretrained=False, **meta["timm_kwargs"])
    model.load_state_dict(torch.load("backbone.pt"))   # features: model(x), the class token's
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import flags

from effssl_jax import cli, config_schema, experiment, storage
from effssl_jax.errors import UserError
from effssl_jax.models import backbones, convert, resnet, vit

FORMATS = ("torchvision", "timm")  # the families they hold: ResNets, ViTs


def backbone_variables(variables: dict) -> dict:
    """The backbone's sub-trees of an SSLNet's {'params', 'batch_stats'}."""
    return {"params": variables["params"]["backbone"],
            "batch_stats": variables.get("batch_stats", {}).get("backbone", {})}


def backbone_state_dict(variables: dict) -> dict[str, np.ndarray]:
    """torchvision state_dict (numpy arrays) of a backbone's {'params', 'batch_stats'}."""
    import jax
    return convert.to_torchvision(jax.device_get(variables))


def torchvision_resnet(meta: dict):
    """A torchvision ResNet matching backbone.json's meta (fc replaced by Identity)."""
    import torch
    import torchvision

    if meta["width"] != 64:
        raise UserError(f"torchvision's {meta['arch']} has width 64; this backbone has width "
                         f"{meta['width']} (load the .npz into your own module instead)")
    stage_sizes, block = resnet.ARCHS[meta["arch"]]
    block = {"basic": torchvision.models.resnet.BasicBlock,
             "bottleneck": torchvision.models.resnet.Bottleneck}[block]
    model = torchvision.models.ResNet(block, list(stage_sizes))  # resnet18/50 for their sizes
    if meta["cifar_stem"]:
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.fc = torch.nn.Identity()
    return model


def timm_vit(meta: dict):
    """The timm VisionTransformer matching backbone.json's meta of a ViT (no classifier)."""
    import timm
    return timm.create_model(meta["timm_model"], pretrained=False, **meta["timm_kwargs"])


def export_workdir(workdir: str, out: str, step: int | None = None,
                   format: str | None = None) -> dict:
    """Writes OUT (.pt or .npz), the .npz next to it and a .json of its meta; returns the meta.
    format: 'torchvision' (ResNets) or 'timm' (ViTs); None: the backbone's own."""
    config = config_schema.from_workdir(workdir)
    m = config.model
    own = backbones.export_format(m.arch)
    format = format or own
    if format not in FORMATS:
        raise UserError(f"--format {format} is unknown; valid: {', '.join(FORMATS)}")
    if format != own:
        raise UserError(f"{m.arch} exports in the {own} format, not {format}; use --format {own}")
    exp, state, ckpt_step = experiment.restore(workdir, step)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    meta = {"arch": m.arch, "format": format, "checkpoint_step": ckpt_step,
            "workdir": storage.absolute(workdir), "method": config.method,
            "feature_dim": backbones.feature_dim(m),
            "input": "RGB in [0, 1] normalised with the ImageNet mean/std, NCHW for torch"}
    if format == "timm":
        state_dict = vit.to_timm(backbone_variables(variables)["params"])
        img_size = backbones.vit_img_size(config)
        meta["timm_model"], meta["timm_kwargs"] = vit.timm_spec(m.arch, m.patch_size, img_size)
        meta.update(patch_size=m.patch_size, img_size=img_size, dynamic_img_size=True)
    else:
        state_dict = backbone_state_dict(backbone_variables(variables))
        meta.update(width=m.width, cifar_stem=bool(m.cifar_stem),
                    torchvision_compatible=m.width == 64)
    stem, ext = os.path.splitext(out)
    if storage.dirname(out):
        storage.makedirs(storage.dirname(out))
    with storage.open_for_writing(stem + ".npz") as f:
        np.savez(f, **state_dict)
    if ext != ".npz":
        import torch
        with storage.open_for_writing(out) as f:
            torch.save({k: torch.from_numpy(np.ascontiguousarray(v))
                        for k, v in state_dict.items()}, f)
    storage.write_text(stem + ".json", json.dumps(meta, indent=2))
    return meta


_FORMAT = flags.DEFINE_enum("format", None, FORMATS, "state_dict layout: torchvision (ResNets) "
                            "or timm (ViTs); default: the backbone's.")


def _command(positional: list[str]) -> dict:
    """The command on the parsed flags (cli.py: --workdir, --out, --step)."""
    cli.flags_only(positional)
    out = cli.OUT.value or "backbone.pt"
    meta = export_workdir(cli.workdir(), out, cli.STEP.value, _FORMAT.value)
    stem = os.path.splitext(out)[0]
    written = [out] if out.endswith(".npz") else [out, stem + ".npz"]
    what = (f"patch {meta['patch_size']}, img_size {meta['img_size']}, timm {meta['timm_model']}"
            if meta["format"] == "timm" else
            f"width {meta['width']}, {'CIFAR' if meta['cifar_stem'] else 'ImageNet'} stem")
    print(f"{meta['arch']} ({what}) from step {meta['checkpoint_step']}: wrote "
          f"{', '.join(written)}, {stem}.json", flush=True)
    if meta["format"] == "torchvision" and not meta["torchvision_compatible"]:
        print("note: width != 64 does not fit torchvision's resnet; the names and layouts are "
              "torchvision's", flush=True)
    return meta


def main(argv: list[str]) -> dict:
    """The command from Python: main(["--workdir", DIR, "--out", FILE])."""
    return _command(cli.parse(["effssl-export", *argv]))


def console_main():
    cli.run_app(_command, __name__, (cli.WORKDIR, cli.OUT, cli.STEP))


if __name__ == "__main__":
    console_main()
