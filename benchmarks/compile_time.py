"""Time to get each bucket's compiled train step, with cold and warm caches.

    python benchmarks/compile_time.py                                 # ResNet-18, 96..224 px
    python benchmarks/compile_time.py --arch resnet50 --hard-augment

Runs the trainer's own `CompiledSteps.get` for every bucket, three times, each in a fresh
process: (1) cold: empty caches, so it traces, lowers and compiles (with Hard Augment also the
selection-free lowering used for its FLOP share); (2) warm XLA cache: the persistent compilation
cache the first process filled, as a sibling run with the same shapes sees it (traces and lowers,
loads the executable); (3) warm step cache: the serialised steps the first process wrote, as a
resumed run sees them (loads, no tracing). Prints seconds per bucket.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def child(args):
    from effssl_jax import cpu_flags
    cpu_flags.set_default_xla_flags()
    import jax
    from effssl_jax import config_schema
    from effssl_jax.train import build_state, compute_dtype, enable_compilation_cache
    from effssl_jax.train_step import CompiledSteps, StepSpec, data_mesh, make_step_fn

    # As train.run: XLA's persistent cache and the step cache, here under args.cache/.jax_cache.
    step_cache = enable_compilation_cache(os.path.join(args.cache, 'run'))
    c = config_schema.default_config()
    c.model.arch, c.batch_size = args.arch, args.batch
    resolutions = [int(r) for r in args.resolutions.split(',')]
    c.progressive.r_max = max(resolutions)
    dtype = compute_dtype('auto')
    mesh = data_mesh(jax.devices()[:1])
    _, method, tx, _, abstract = build_state(c, mesh, dtype, 10 * args.batch)
    steps = CompiledSteps(lambda spec: make_step_fn(method, tx, spec, dtype), mesh, abstract,
                          step_cache if args.step_cache else None, 'benchmark')
    n = 6 if args.hard_augment else 2
    out = {}
    for r in resolutions:
        spec = StepSpec(r, n, 64, max(resolutions), args.batch)
        t = time.perf_counter()
        steps.get(spec)
        out[r] = {'get_s': time.perf_counter() - t, 'loaded': spec in steps.loaded}
    print('RESULT ' + json.dumps(out), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--resolutions', default='96,128,160,192,224')
    ap.add_argument('--hard-augment', action='store_true', help='6 views scored at 64 px')
    ap.add_argument('--cache', default=None, help='cache folder (default: a new temporary one)')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    ap.add_argument('--step-cache', action='store_true', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache or tmp
        argv = [sys.executable, os.path.abspath(__file__), '--child', '--cache', cache,
                '--arch', args.arch, '--batch', str(args.batch), '--resolutions',
                args.resolutions] + (['--hard-augment'] if args.hard_augment else [])
        runs = {}
        for name, flag in (('cold', ['--step-cache']), ('warm XLA cache', []),
                           ('warm step cache', ['--step-cache'])):
            t = time.perf_counter()
            res = subprocess.run(argv + flag, capture_output=True, text=True)
            if res.returncode:
                sys.exit(f'{name} run failed:\n{res.stderr[-3000:]}')
            line = [l for l in res.stdout.splitlines() if l.startswith('RESULT ')][-1]
            runs[name] = json.loads(line[7:])
            print(f'{name}: process {time.perf_counter() - t:.1f} s', flush=True)
    print(f"\n{args.arch}, batch {args.batch}, {'6 views (HA, r_sel 64)' if args.hard_augment else '2 views'}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(cpu_flags default)')!r}\n")
    print('| res | cold s | warm XLA cache s | warm step cache s |')
    print('|---|---|---|---|')
    for r in runs['cold']:
        c, x, w = (runs[k][r] for k in runs)
        assert w['loaded'] and not c['loaded'] and not x['loaded'], (c, x, w)
        print(f"| {r} | {c['get_s']:.2f} | {x['get_s']:.2f} | {w['get_s']:.2f} |")


if __name__ == '__main__':
    main()
