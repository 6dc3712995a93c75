"""What the step benchmarks share: the flags that pick the step measured."""
import argparse


def step_parser(doc: str) -> argparse.ArgumentParser:
    """A parser with --arch, --batch and --resolutions (comma-separated, px)."""
    ap = argparse.ArgumentParser(description=doc,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--arch', default='resnet18')
    ap.add_argument('--batch', type=int, default=32)
    ap.add_argument('--resolutions', default='96,128,160,192,224')
    return ap
