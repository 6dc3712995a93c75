"""Hard Augment's cost per bucket: a train step with n=6 views scored at r_sel vs the plain step.

    python benchmarks/hard_augment_overhead.py                        # ResNet-18, 96..224 px
    python benchmarks/hard_augment_overhead.py --arch resnet50 --resolutions 224 --batch 16
    python benchmarks/hard_augment_overhead.py --arch resnet50 --resolutions 224,96 --flops-only

For every resolution the trainer's own step (`step.make_step_fn`: on-device augmentation,
SimSiam, SGD) is compiled with 2 views and with n views plus selection; both are timed
interleaved (one step each per round, median over rounds) and their FLOPs taken from XLA's cost
analysis (`--flops-only`: lowered, not compiled or timed). The batch holds whole images in the
canvas the host would send at that resolution for SimSiam's views (data/canvas.py). Overhead =
(with selection - without) / without. The paper's setting is n=6 at
r_sel=64 with full-resolution training at 224 px, where it reports 6-8%; eq. 11 predicts the
FLOP share from resolutions alone (`hard_augment.speed_factor`).
"""

import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import step_parser  # noqa: E402


def main():
    ap = step_parser(__doc__)
    ap.add_argument('--views', type=int, default=6)
    ap.add_argument('--r-sel', type=int, default=64)
    ap.add_argument('--reps', type=int, default=5)
    ap.add_argument('--dtype', default='auto')
    ap.add_argument('--flops-only', action='store_true', help='lower the steps, do not time them')
    args = ap.parse_args()
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from effssl_jax import config_schema, experiment, hard_augment
    from effssl_jax.compile import flops_of
    from effssl_jax.data.canvas import Images
    from effssl_jax.step import StepSpec, data_mesh

    resolutions = [int(r) for r in args.resolutions.split(',')]
    c = config_schema.default_config()
    c.model.arch, c.batch_size = args.arch, args.batch
    c.progressive.r_max = max(resolutions)
    c.dtype = args.dtype
    exp = experiment.build(c, 10 * args.batch, data_mesh(jax.devices()[:1]))
    mesh, dtype, steps = exp.mesh, exp.dtype, exp.compiled_steps()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {args.arch} SimSiam, batch "
          f"{args.batch}, {args.views} views scored at {args.r_sel} px vs 2 views, dtype "
          f"{jnp.dtype(dtype).name}, median of {args.reps} interleaved rounds; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    header = ('res', 'plain ms', 'HA ms', 'time overhead', 'plain GFLOP', 'HA GFLOP',
              'FLOP overhead', 'eq. 11')
    rows = []
    for r in resolutions:
        host = exp.host_size(r).canvas
        specs = {'plain': StepSpec(r, 2, args.r_sel, host, args.batch),
                 'ha': StepSpec(r, args.views, args.r_sel, host, args.batch)}
        eq11 = 1 / hard_augment.speed_factor(r, args.r_sel, args.views) - 1
        if args.flops_only:
            flops = {k: flops_of(steps.lower(s)) / 1e9 for k, s in specs.items()}
            rows.append((r, '-', '-', '-', f"{flops['plain']:.1f}", f"{flops['ha']:.1f}",
                         f"{flops['ha'] / flops['plain'] - 1:+.1%}", f'{eq11:+.1%}'))
            continue
        images = jax.device_put(Images.full(np.random.default_rng(0).integers(
            0, 256, (args.batch, host, host, 3), dtype=np.uint8)), NamedSharding(mesh, P('data')))
        states = {k: exp.init(jax.random.key(0)) for k in specs}
        compiled = {k: steps.get(s) for k, s in specs.items()}
        for k in specs:  # warm-up
            states[k], m = compiled[k](states[k], images, np.float32(5.0))
            jax.block_until_ready(m)
        times = {k: [] for k in specs}
        for _ in range(args.reps):
            for k in specs:
                t = time.perf_counter()
                states[k], m = compiled[k](states[k], images, np.float32(5.0))
                jax.block_until_ready(m)
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        flops = {k: steps.flops[s] / 1e9 for k, s in specs.items()}
        row = (r, f"{med['plain']:.0f}", f"{med['ha']:.0f}", f"{med['ha'] / med['plain'] - 1:+.1%}",
               f"{flops['plain']:.1f}", f"{flops['ha']:.1f}",
               f"{flops['ha'] / flops['plain'] - 1:+.1%}", f'{eq11:+.1%}')
        rows.append(row)
        print('  ' + ' | '.join(f'{h} {v}' for h, v in zip(header, row))
              + f' | load avg {os.getloadavg()[0]:.1f}', flush=True)
        del states, compiled
    print('\n| ' + ' | '.join(header) + ' |\n|' + '---|' * len(header))
    for row in rows:
        print('| ' + ' | '.join(map(str, row)) + ' |')


if __name__ == '__main__':
    main()
