"""Convert ResNet variables between Flax (``resnet.py``) and torchvision state_dicts.

Naming: flax module ``layer1_0`` <-> torch ``layer1.0``; ``downsample_conv`` /
``downsample_bn`` <-> ``downsample.0`` / ``downsample.1``; every other module
name is shared. Leaves: conv ``kernel`` (HWIO) <-> ``weight`` (OIHW), dense
``kernel`` (in, out) <-> ``weight`` (out, in), BN ``scale``/``bias`` <->
``weight``/``bias``, batch_stats ``mean``/``var`` <-> ``running_mean``/``running_var``.

Only numpy is needed; torch tensors are accepted as input.
"""

import re
from typing import Any, Mapping

import numpy as np

_MODULE_TO_TORCH = {'downsample_conv': 'downsample.0', 'downsample_bn': 'downsample.1'}
_MODULE_FROM_TORCH = {v: k for k, v in _MODULE_TO_TORCH.items()}


def _module_to_torch(name: str) -> str:
    if name in _MODULE_TO_TORCH:
        return _MODULE_TO_TORCH[name]
    return re.sub(r'^(layer\d+)_(\d+)$', r'\1.\2', name)


def _flatten(tree: Mapping, prefix: tuple = ()):
    for k, v in tree.items():
        if isinstance(v, Mapping):
            yield from _flatten(v, prefix + (k,))
        else:
            yield prefix + (k,), v


def to_torchvision(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Flax ``{'params', 'batch_stats'}`` -> torchvision ``state_dict`` (numpy arrays)."""
    out = {}
    for path, value in _flatten(variables['params']):
        value = np.asarray(value)
        prefix = '.'.join(_module_to_torch(m) for m in path[:-1])
        leaf = path[-1]
        if leaf == 'kernel' and value.ndim == 4:
            out[f'{prefix}.weight'] = value.transpose(3, 2, 0, 1)
        elif leaf == 'kernel' and value.ndim == 2:
            out[f'{prefix}.weight'] = value.T
        elif leaf == 'scale':
            out[f'{prefix}.weight'] = value
        elif leaf == 'bias':
            out[f'{prefix}.bias'] = value
        else:
            raise ValueError(f'unexpected parameter {"/".join(path)}')
    for path, value in _flatten(variables.get('batch_stats', {})):
        prefix = '.'.join(_module_to_torch(m) for m in path[:-1])
        leaf = {'mean': 'running_mean', 'var': 'running_var'}[path[-1]]
        out[f'{prefix}.{leaf}'] = np.asarray(value)
        # Flax keeps no step counter; torch only uses it when momentum=None.
        out[f'{prefix}.num_batches_tracked'] = np.array(0, dtype=np.int64)
    return {k: np.array(v, order="C") for k, v in out.items()}  # writable copies


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, 'detach'):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _set(tree: dict, path: list, value):
    for k in path[:-1]:
        tree = tree.setdefault(k, {})
    tree[path[-1]] = value


def from_torchvision(state_dict: Mapping[str, Any]) -> dict[str, dict]:
    """torchvision ResNet ``state_dict`` -> Flax ``{'params': ..., 'batch_stats': ...}``."""
    keys = set(state_dict)
    params, batch_stats = {}, {}
    for key, value in state_dict.items():
        if key.endswith('num_batches_tracked'):
            continue
        value = _to_numpy(value)
        prefix, leaf = key.rsplit('.', 1)
        # Re-join torch's split module names: 'layer1.0.downsample.1' -> layer1_0/downsample_bn.
        modules = []
        for part in prefix.split('.'):
            if part.isdigit() and modules:
                joined = f'{modules.pop()}.{part}'
                modules.append(_MODULE_FROM_TORCH.get(joined, joined.replace('.', '_')))
            else:
                modules.append(part)
        is_bn = f'{prefix}.running_mean' in keys
        if leaf == 'weight' and value.ndim == 4:
            _set(params, modules + ['kernel'], value.transpose(2, 3, 1, 0))
        elif leaf == 'weight' and value.ndim == 2:
            _set(params, modules + ['kernel'], value.T)
        elif leaf == 'weight' and is_bn:
            _set(params, modules + ['scale'], value)
        elif leaf == 'bias':
            _set(params, modules + ['bias'], value)
        elif leaf in ('running_mean', 'running_var'):
            _set(batch_stats, modules + [leaf[len('running_'):]], value)
        else:
            raise ValueError(f'unexpected state_dict entry {key!r}')
    return {'params': _contiguous(params), 'batch_stats': _contiguous(batch_stats)}


def _contiguous(tree: dict) -> dict:
    return {k: _contiguous(v) if isinstance(v, dict) else np.ascontiguousarray(v)
            for k, v in tree.items()}
