"""Time to get each bucket's compiled train step, with cold and warm caches.

    python benchmarks/compile_time.py                                 # ResNet-18, 96..224 px
    python benchmarks/compile_time.py --arch resnet50 --hard-augment

Runs the trainer's own `CompiledSteps.get` for every bucket, twice, each in a fresh process:
(1) cold: an empty cache, so it traces, lowers and compiles (with Hard Augment also the
selection-free lowering used for its FLOP share); (2) warm XLA cache: the persistent compilation
cache the first process filled, as a resumed or sibling run with the same shapes sees it (traces
and lowers, loads the executable). Prints seconds per bucket.

A third process measures what a run waits for at each bucket switch, as train.run does it:
with new (cold) caches, each bucket's step is traced while the previous bucket's first step runs
and compiled on the compile thread while that bucket trains (here: runs its step for --bucket-s
seconds). It prints what `get` waited at the switch, and the cost: that wait plus what tracing
and compiling added to the previous bucket's steps (their sum less steps x median step). On a CPU
they compete with training for the cores, so the cost stays near the compile time; on a GPU/TPU
host they run on otherwise idle host cores. The first bucket has nothing to hide behind here; in
a run it compiles during the kNN evaluation at initialisation.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import step_parser  # noqa: E402


def child(args):
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()
    import jax
    import numpy as np

    from effssl_jax import config_schema, experiment
    from effssl_jax.compile import enable_persistent_cache
    from effssl_jax.data.canvas import Images
    from effssl_jax.step import data_mesh

    # As train.run: XLA's persistent cache, here under args.cache/.jax_cache.
    enable_persistent_cache(os.path.join(args.cache, 'run'))
    c = config_schema.default_config()
    c.model.arch, c.batch_size = args.arch, args.batch
    resolutions = [int(r) for r in args.resolutions.split(',')]
    c.progressive.r_max = max(resolutions)
    c.hard_augment.update(enabled=args.hard_augment, num_views=6, r_sel=64)
    exp = experiment.build(c, 10 * args.batch, data_mesh(jax.devices()[:1]))
    steps = exp.compiled_steps()
    specs = [exp.spec(r, max(resolutions)) for r in resolutions]
    out = {}
    if args.ahead:
        state = exp.init(jax.random.key(0))
        images = jax.device_put(Images.full(np.zeros(
            (args.batch, max(resolutions), max(resolutions), 3), np.uint8)))
    overlap_s = 0.0  # compile-ahead: what tracing and compiling a step added to the bucket before
    for i, (r, spec) in enumerate(zip(resolutions, specs)):
        t = time.perf_counter()
        step = steps.get(spec)
        out[r] = {'get_s': time.perf_counter() - t}
        out[r]['cost_s'] = out[r]['get_s'] + overlap_s
        if args.ahead:  # as train.run: trace the next bucket's step while this one's first runs
            times, start = [], time.perf_counter()
            while not times or time.perf_counter() - start < args.bucket_s:
                t = time.perf_counter()
                state, metrics = step(state, images, np.float32(5.0))
                if len(times) == 0 and i + 1 < len(specs):
                    steps.prefetch(specs[i + 1])
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - t)
            median = sorted(times)[len(times) // 2]
            overlap_s = max(sum(times) - len(times) * median, 0.0)
            out[r]['steps'] = len(times)
    steps.close()
    print('RESULT ' + json.dumps(out), flush=True)


def main():
    ap = step_parser(__doc__)
    ap.add_argument('--hard-augment', action='store_true', help='6 views scored at 64 px')
    ap.add_argument('--cache', default=None, help='cache folder (default: a new temporary one)')
    ap.add_argument('--bucket-s', type=float, default=60.0,
                    help='seconds each bucket trains in the compile-ahead measurement')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--ahead', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        argv = lambda cache: [
            sys.executable, os.path.abspath(__file__), '--child', '--cache', cache, '--arch',
            args.arch, '--batch', str(args.batch), '--resolutions', args.resolutions,
            '--bucket-s', str(args.bucket_s)] + (['--hard-augment'] if args.hard_augment else [])
        cache = args.cache or tmp
        runs = {}
        for name, cmd in (('cold', argv(cache)), ('warm XLA cache', argv(cache)),
                          ('compile-ahead wait', argv(tempfile.mkdtemp(dir=tmp))  # a new cache
                           + ['--ahead'])):
            t = time.perf_counter()
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f'{name} run failed:\n{res.stderr[-3000:]}')
            line = [s for s in res.stdout.splitlines() if s.startswith('RESULT ')][-1]
            runs[name] = json.loads(line[7:])
            print(f'{name}: process {time.perf_counter() - t:.1f} s', flush=True)
    views = '6 views (HA, r_sel 64)' if args.hard_augment else '2 views'
    print(f"\n{args.arch}, batch {args.batch}, {views}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(cpu_flags default)')!r}\n")
    print(f'| res | cold s | warm XLA cache s | compile-ahead: wait s | '
          f'compile-ahead: cost s (cold; previous bucket trains {args.bucket_s:g} s) |')
    print('|---|---|---|---|---|')
    for r in runs['cold']:
        c, x, a = (runs[k][r] for k in runs)
        print(f"| {r} | {c['get_s']:.2f} | {x['get_s']:.2f} | "
              f"{a['get_s']:.2f} | {a['cost_s']:.2f} ({a['steps']} steps) |")


if __name__ == '__main__':
    main()
