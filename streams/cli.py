"""Commands of the streams stage: ``citybrain nab`` and ``citybrain nab-score``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from citybrain.settings import Settings
from citybrain.shared import nab_data


def _nab(args: argparse.Namespace, settings: Settings) -> int:
    from streams.nab import runner

    r = runner.run(args.data or nab_data(), args.out)
    print(f"{r['points']} points in {r['seconds']:.2f} s ({r['points_per_s']:.0f} points/s) -> {args.out}")
    for e in r["rejected"]:
        print(f"not scored: {e}", file=sys.stderr)
    if r["rejected"]:
        print(f"{len(r['rejected'])} file(s) not scored, listed in {args.out / runner.REJECTED}", file=sys.stderr)
        return 1
    return 0


def _nab_score(args: argparse.Namespace, settings: Settings) -> int:
    from streams.nab import scoring

    data = args.data or nab_data()
    for profile, row in scoring.report(args.results, data).items():
        cats = "  ".join(f"{k}={v:.1f}" for k, v in row.items() if k not in ("threshold", "all"))
        print(f"{profile:14s} score={row['all']:.1f} (threshold {row['threshold']:.3f})  {cats}")
    if args.cross_validate:
        from streams.nab import crossval

        print("held out (threshold chosen on the other files / categories):")
        for profile, cv in crossval.report(args.results, data).items():
            cats = "  ".join(f"{k}={v:.1f}" for k, v in cv["category"].groups.items())
            print(f"{profile:14s} leave-one-file-out={cv['file'].score:.1f}  "
                  f"leave-one-category-out={cv['category'].score:.1f}  {cats}")
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("nab", help="run the detectors over NAB CSV files, one point at a time")
    p.add_argument("--data", type=Path, help="NAB data dir (<category>/<file>.csv); default: the shared NAB subset")
    p.add_argument("--out", type=Path, required=True, help="results dir (<category>/<detector>_<file>.csv)")
    p.set_defaults(handler=_nab)
    s = sub.add_parser("nab-score", help="NAB score of a results dir, by profile and category")
    s.add_argument("--results", type=Path, required=True)
    s.add_argument("--data", type=Path, help="NAB data dir; labels from ../combined_windows.json; default: the shared NAB subset")
    s.add_argument("--cross-validate", action="store_true",
                   help="also the held-out scores: threshold chosen without the scored file / category")
    s.set_defaults(handler=_nab_score)
