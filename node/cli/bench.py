"""`asi-node bench stage`: zero-shot benchmark files -> a staged folder a campaign names.

The files are the user's own copies of the datasets lm-evaluation-harness reads, in its
row format (JSON Lines or a JSON array); nothing is downloaded. The tokenizer must be
the campaign shard's (`python -m loop.tasks.shards build ... --tokenizer`); `campaign
create` and every run check that it is.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_bench(args: argparse.Namespace) -> int:
    from loop.benchmarks.stage import Source, stage

    sources = [Source.parse(text) for text in args.benchmarks]
    manifest = stage(args.out_dir, sources, tokenizer=args.tokenizer, limit=args.limit)
    for entry in manifest.benchmarks:
        print(
            f"{entry.name:<16} {entry.items:>6} items {entry.requests:>7} requests  "
            f"longest {entry.max_request_tokens} tokens  ({entry.source})"
        )
    print(
        f"staged in {args.out_dir} (tokenizer {manifest.tokenizer}, vocab {manifest.vocab_size}); "
        f'name it in the campaign config: benchmarks = "{args.out_dir.resolve()}"'
    )
    return 0


def add_parsers(sub: Any) -> None:
    """The `bench` command (sub is the top-level subparsers)."""
    from loop.benchmarks.formats import TASKS

    p = sub.add_parser("bench", help="zero-shot benchmarks for LM campaigns: stage local files")
    bsub = p.add_subparsers(dest="action", required=True)
    s = bsub.add_parser(
        "stage",
        help="tokenise benchmark files (lm-evaluation-harness rows) into a staged folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument("out_dir", type=Path, help="the staged folder (outside the shard's folder)")
    s.add_argument(
        "benchmarks",
        nargs="+",
        metavar="NAME=FILE",
        help="; ".join(f"{t.name}: {{{t.fields}}}" for t in TASKS.values()),
    )
    s.add_argument(
        "--tokenizer", default="bytes", help='"bytes" (default) or the shard\'s tokenizer.json'
    )
    s.add_argument("--limit", type=int, help="stage only the first N rows of each file")
    p.set_defaults(func=cmd_bench)
