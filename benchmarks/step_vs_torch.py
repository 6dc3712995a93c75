"""ResNet-18 SimSiam train step on CPU, JAX vs PyTorch eager, per bucket resolution.

    python benchmarks/step_vs_torch.py                              # 32..224 px, batch 32
    python benchmarks/step_vs_torch.py --resolutions 64,224 --batch 128 --reps 3
    python benchmarks/step_vs_torch.py --xla-flags=''               # without the CPU flags

One step = both views of a batch through the online network (per-view train-mode BatchNorm,
as in `step.make_step_fn`), SimSiam's symmetric negative cosine, backward, SGD with
momentum 0.9 and weight decay 5e-4 on every parameter. Both frameworks get the same
already-augmented views (augmentation is not timed) and the same thread count (all cores);
JAX's step donates the state as the trainer's does. The two are timed interleaved, one step
each per round, and the median over rounds is reported, since a shared machine is noisy.
GFLOP/step is XLA's cost analysis of the JAX step (`compile.flops_of`).

XLA_FLAGS: unless set in the environment or with --xla-flags, the benchmark uses
`effssl_jax.cpu_flags.DEFAULT` (what launch.py sets on CPU).
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def simsiam_config(cifar_stem: bool, conv_impl: str):
    from effssl_jax import config_schema
    c = config_schema.default_config()
    c.method = 'simsiam'
    c.model.arch, c.model.width, c.model.cifar_stem = 'resnet18', 64, cifar_stem
    c.model.conv_impl = conv_impl
    return c


def jax_step(views_np, cifar_stem, conv_impl='auto', dtype_name='float32'):
    """A compiled JAX SimSiam step on fixed views [2, B, r, r, 3]: (run, gflops, compile_s)."""
    import jax
    import jax.numpy as jnp
    import optax

    from effssl_jax import experiment
    from effssl_jax.compile import flops_of
    from effssl_jax.step import apply_train

    dtype = experiment.compute_dtype(dtype_name)
    method = experiment.build_method(simsiam_config(cifar_stem, conv_impl), dtype, 100, 10000)
    net = method.net
    tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.05, momentum=0.9))
    views = jnp.asarray(views_np, dtype)
    variables = jax.jit(lambda k: net.init(k, views[0, :2], train=False))(jax.random.key(0))
    state = (variables['params'], variables['batch_stats'], tx.init(variables['params']))

    def step(state, views):
        params, batch_stats, opt_state = state

        def loss_fn(params):
            out_a, stats = apply_train(net, params, batch_stats, views[0])
            out_b, stats = apply_train(net, params, stats, views[1])
            return method.pair_loss(out_a, out_b, None, None, {}, 0).mean(), stats

        (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), stats, opt_state), loss

    t = time.perf_counter()
    lowered = jax.jit(step, donate_argnums=(0,)).lower(state, views)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t
    jax_step.last_compiled = compiled  # for profiling scripts: its HLO, cost analysis
    box = [state]

    def run():
        box[0], loss = compiled(box[0], views)
        return float(loss)

    run()
    return run, flops_of(lowered) / 1e9, compile_s


def torch_step(views_np, cifar_stem, channels_last=False):
    import torch
    import torchvision
    from torch import nn
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    backbone = torchvision.models.resnet18()
    backbone.fc = nn.Identity()
    if cifar_stem:
        backbone.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        backbone.maxpool = nn.Identity()
    d, p = 512, 2048
    projector = nn.Sequential(
        nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(),
        nn.Linear(d, d, bias=False), nn.BatchNorm1d(d), nn.ReLU(),
        nn.Linear(d, p, bias=False), nn.BatchNorm1d(p, affine=False))
    predictor = nn.Sequential(nn.Linear(p, 512, bias=False), nn.BatchNorm1d(512), nn.ReLU(),
                              nn.Linear(512, p))
    model = nn.ModuleDict(dict(backbone=backbone, projector=projector, predictor=predictor)).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    views = torch.from_numpy(np.ascontiguousarray(views_np.transpose(0, 1, 4, 2, 3)))
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = [v.contiguous(memory_format=torch.channels_last) for v in views]

    def D(p, z):
        return -nn.functional.cosine_similarity(p, z.detach(), dim=-1).mean()

    def run():
        z1 = projector(backbone(views[0]))
        z2 = projector(backbone(views[1]))
        loss = 0.5 * (D(predictor(z1), z2) + D(predictor(z2), z1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    run()
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--resolutions', default='32,64,96,128,160,192,224')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--reps', type=int, default=5,
                    help='interleaved rounds; the median is reported')
    ap.add_argument('--cifar-stem', action='store_true', help='3x3 stem without max-pool')
    ap.add_argument('--impls', default='auto', help="JAX conv_impls ('auto,xla,matmul')")
    ap.add_argument('--torch-channels-last', action='store_true',
                    help='also time torch with channels_last tensors')
    ap.add_argument('--xla-flags', default=None,
                    help='XLA_FLAGS for this run (default: $XLA_FLAGS, else cpu_flags.DEFAULT)')
    args = ap.parse_args()
    from effssl_jax import cpu_flags
    if args.xla_flags is not None:
        os.environ['XLA_FLAGS'] = args.xla_flags
    else:
        cpu_flags.set_default_xla_flags()
    import jax

    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} threads, "
          f"batch {args.batch} x 2 views, {'cifar' if args.cifar_stem else 'imagenet'} stem, "
          f"median of {args.reps} interleaved rounds; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}",
          flush=True)
    impls = args.impls.split(',')
    torch_names = ['torch'] + (['torch cl'] if args.torch_channels_last else [])
    header = ('res', *[f'jax {i} ms' for i in impls], *[f'{t} ms' for t in torch_names],
              *[f'{i}/torch' for i in impls], 'GFLOP/step', 'compile s')
    rows = []
    for r in map(int, args.resolutions.split(',')):
        views = np.random.RandomState(r).randn(2, args.batch, r, r, 3).astype(np.float32)
        steps, gflops, compile_s = {}, None, []
        for impl in impls:
            steps[f'jax {impl}'], gflops, c = jax_step(views, args.cifar_stem, impl)
            compile_s.append(c)
        steps['torch'] = torch_step(views, args.cifar_stem)
        if args.torch_channels_last:
            steps['torch cl'] = torch_step(views, args.cifar_stem, channels_last=True)
        times = {k: [] for k in steps}
        for _ in range(args.reps):
            for k, run in steps.items():
                t = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        base = min(med[t] for t in torch_names)
        row = (r, *[f"{med[f'jax {i}']:.0f}" for i in impls],
               *[f'{med[t]:.0f}' for t in torch_names],
               *[f"{med[f'jax {i}'] / base:.2f}x" for i in impls], f'{gflops:.1f}',
               '/'.join(f'{c:.1f}' for c in compile_s))
        rows.append(row)
        print('  ' + ' | '.join(f'{h} {v}' for h, v in zip(header, row))
              + f' | load avg {os.getloadavg()[0]:.1f}', flush=True)
        del steps
    print('\n| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(map(str, row)) + ' |')


if __name__ == '__main__':
    main()
