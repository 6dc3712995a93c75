r"""ResNet-18 backbone fwd+bwd on CPU: JAX conv_impl='xla' vs 'auto' vs PyTorch eager.

    python benchmarks/conv_cpu.py                      # cifar32, in64 at batch 128
    python benchmarks/conv_cpu.py --settings in224 --batch 64 --reps 3
    python benchmarks/conv_cpu.py \
        --xla-flags=--xla_cpu_experimental_ynn_fusion_type=-individual_convolution
    python benchmarks/conv_cpu.py --per-conv --batch 32 --xla-flags=...   # one 3x3 conv at a time

Each step is the gradient of ``backbone(x).sum()`` w.r.t. the parameters, train-mode
BatchNorm, as in a training step without head/optimizer. JAX and torch use the same
number of threads (all cores). The implementations are timed interleaved, one step
each per round, and the median over rounds is reported, since a shared machine is noisy.

--per-conv times, for each ResNet-18 stage whose 3x3 stride-1 convs stay on XLA:CPU's convolution
(maps of 4x4 and more; see effssl_jax/models/cpu_conv.py), one such conv alone: JAX forward, input
gradient and weight gradient as separate jitted functions, against torch's forward and
forward+backward (both gradients).
"""

import argparse
import os
import statistics
import time

import numpy as np

SETTINGS = {  # name: (input side, cifar_stem)
    'cifar32': (32, True),
    'in64': (64, False),
    'in224': (224, False),
}


def jax_step(impl, side, cifar_stem, batch):
    import jax
    import jax.numpy as jnp

    from effssl_jax.models import resnet

    net = resnet.resnet18(cifar_stem=cifar_stem, conv_impl=impl)
    x = jnp.asarray(np.random.RandomState(0).randn(batch, side, side, 3), jnp.float32)
    variables = jax.jit(lambda k: net.init(k, x[:2], train=False))(jax.random.key(0))

    def loss(params, batch_stats):
        out, _ = net.apply({'params': params, 'batch_stats': batch_stats}, x, train=True,
                           mutable=['batch_stats'])
        return out.sum()

    grad = jax.jit(jax.grad(loss))
    t = time.perf_counter()
    jax.block_until_ready(grad(variables['params'], variables['batch_stats']))
    compile_s = time.perf_counter() - t
    step = lambda: jax.block_until_ready(grad(variables['params'], variables['batch_stats']))
    return step, compile_s


def torch_step(side, cifar_stem, batch):
    import torch
    import torchvision
    torch.set_num_threads(os.cpu_count())
    model = torchvision.models.resnet18()
    model.fc = torch.nn.Identity()
    if cifar_stem:
        model.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        model.maxpool = torch.nn.Identity()
    model.train()
    x = torch.from_numpy(np.random.RandomState(0).randn(batch, 3, side, side).astype(np.float32))

    def step():
        model.zero_grad(set_to_none=True)
        model(x).sum().backward()

    step()
    return step, 0.0


def _median_ms(fns, reps):
    """{name: median ms}, the callables timed interleaved, one call each per round. Each timed
    call follows an untimed one of its own: the other library's threads still spin for a while
    after their last call and would be charged to a short kernel timed right after it."""
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            f()
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def per_conv(side, cifar_stem, batch, reps):
    import jax
    import jax.numpy as jnp
    import torch
    from jax import lax
    torch.set_num_threads(os.cpu_count())

    def conv(x, w):
        return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)),
                                        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))

    hw = side if cifar_stem else side // 4
    for stage in range(4):
        h, c = hw >> stage, 64 << stage
        if h < 4:
            break
        r = np.random.RandomState(stage)
        x, g = (r.randn(batch, h, h, c).astype(np.float32) for _ in range(2))
        w = (r.randn(3, 3, c, c) * (2 / (9 * c)) ** 0.5).astype(np.float32)
        jx, jw, jg = map(jnp.asarray, (x, w, g))
        fwd = jax.jit(conv)
        dx = jax.jit(lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0])
        dw = jax.jit(lambda x, w, g: jax.vjp(lambda w: conv(x, w), w)[1](g)[0])
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
        tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()
        tg = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

        with torch.no_grad():  # the same convolution in both
            same = torch.nn.functional.conv2d(tx, tw, padding=1).numpy().transpose(0, 2, 3, 1)
        np.testing.assert_allclose(np.asarray(fwd(jx, jw)), same, rtol=1e-4, atol=1e-4)

        def torch_fwd():
            with torch.no_grad():
                torch.nn.functional.conv2d(tx, tw, padding=1)

        def torch_fwd_bwd():
            tx.grad = tw.grad = None
            torch.nn.functional.conv2d(tx, tw, padding=1).backward(tg)

        ms = _median_ms({'fwd': lambda: jax.block_until_ready(fwd(jx, jw)),
                         'dx': lambda: jax.block_until_ready(dx(jx, jw, jg)),
                         'dw': lambda: jax.block_until_ready(dw(jx, jw, jg)),
                         'torch fwd': torch_fwd, 'torch fwd+bwd': torch_fwd_bwd}, reps)
        gflop = 2 * batch * h * h * 9 * c * c / 1e9
        jax_all = ms['fwd'] + ms['dx'] + ms['dw']
        print(f'  {h}x{h}x{c}, {gflop:.2f} GFLOP per pass: jax fwd {ms["fwd"]:.1f} '
              f'({gflop / ms["fwd"] * 1e3:.0f} GFLOP/s), dx {ms["dx"]:.1f}, dw {ms["dw"]:.1f}, '
              f'sum {jax_all:.1f} ms | torch fwd {ms["torch fwd"]:.1f} '
              f'({gflop / ms["torch fwd"] * 1e3:.0f} GFLOP/s), fwd+bwd {ms["torch fwd+bwd"]:.1f} ms'
              f' | jax/torch {jax_all / ms["torch fwd+bwd"]:.2f}x', flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--settings', default='cifar32,in64', help=f'comma list of {sorted(SETTINGS)}')
    ap.add_argument('--batch', type=int, default=128)
    ap.add_argument('--reps', type=int, default=5,
                    help='interleaved rounds; the median is reported')
    ap.add_argument('--impls', default='xla,auto',
                    help="JAX conv_impls to time ('xla,auto,matmul')")
    ap.add_argument('--no-torch', action='store_true')
    ap.add_argument('--xla-flags', default='', help='appended to XLA_FLAGS before JAX starts')
    ap.add_argument('--per-conv', action='store_true',
                    help="time single 3x3 convs (fwd, dx, dw) against torch's instead")
    args = ap.parse_args()
    if args.xla_flags:
        os.environ['XLA_FLAGS'] = f"{os.environ.get('XLA_FLAGS', '')} {args.xla_flags}".strip()
    import jax

    print(f'jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} threads, '
          f'batch {args.batch}, median of {args.reps} interleaved rounds; '
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    for name in args.settings.split(','):
        side, cifar_stem = SETTINGS[name]
        if args.per_conv:
            print(f'{name}: one 3x3 stride-1 conv per stage, batch {args.batch}', flush=True)
            per_conv(side, cifar_stem, args.batch, args.reps)
            continue
        steps = {}
        for impl in args.impls.split(','):
            steps[f'jax {impl}'], compile_s = jax_step(impl, side, cifar_stem, args.batch)
            print(f'  {name}: compiled jax {impl} in {compile_s:.1f} s', flush=True)
        if not args.no_torch:
            steps['torch'], _ = torch_step(side, cifar_stem, args.batch)
        times = {k: [] for k in steps}
        cpu = {k: [] for k in steps}  # process CPU time: less sensitive to other load
        for _ in range(args.reps):
            for k, step in steps.items():
                t, c = time.perf_counter(), time.process_time()
                step()
                times[k].append(time.perf_counter() - t)
                cpu[k].append(time.process_time() - c)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        best = {k: min(v) * 1e3 for k, v in times.items()}
        row = ', '.join(f'{k} {v:7.0f} ms' for k, v in med.items())
        base = med.get('torch')
        if base:
            row += ' | vs torch: ' + ', '.join(f'{k} {v / base:.2f}x' for k, v in med.items()
                                               if k != 'torch')
        if 'jax xla' in med and 'jax auto' in med:
            row += f" | xla/auto {med['jax xla'] / med['jax auto']:.2f}x"
        print(f'resnet18 {name} (side {side}, {"cifar" if cifar_stem else "imagenet"} stem): {row}',
              flush=True)
        print(f'  {name} fastest round ms: '
              + ', '.join(f'{k} {v:.0f}' for k, v in best.items())
              + (f" | jax auto / torch {best['jax auto'] / best['torch']:.2f}x"
                 if 'jax auto' in best and 'torch' in best else ''), flush=True)
        print(f'  {name} process CPU ms (torch counts its spinning threads too): '
              + ', '.join(f'{k} {statistics.median(v) * 1e3:.0f}' for k, v in cpu.items())
              + f' | load avg {os.getloadavg()[0]:.1f}', flush=True)


if __name__ == '__main__':
    main()
