"""``linklab report``: one self-contained HTML page from a saved results directory
(:mod:`linklab.report`), or with ``--history DIR`` the key figures across runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from linklab.bench.compare import FailOnError, parse_fail_on
from linklab.report import history
from linklab.report.aggregate import ReportError, Rules, load_results
from linklab.report.render import link_latest, render


def cli_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", metavar="RESULTS_DIR", type=Path, nargs="?",
                        help="a results/<run-id> directory written by the test suite")
    parser.add_argument("--history", metavar="DIR", type=Path,
                        help="instead of one run: every run under DIR (e.g. results/) as time "
                             "series of the key figures, kernel and machine changes marked "
                             "(default output reports/history/index.html)")
    parser.add_argument("--baseline", metavar="RESULTS_DIR", type=Path,
                        help="an earlier results directory to compare every figure with")
    parser.add_argument("-o", "--output", type=Path,
                        help="HTML file to write (default: reports/<run-id>/index.html, "
                             "and reports/latest points at it)")
    parser.add_argument("--threshold", type=float, default=5.0, metavar="PERCENT",
                        help="with --baseline: smallest change that counts, in percent "
                             "(default 5); the 95%% confidence intervals must also be apart")
    parser.add_argument("--fail-on", default="", metavar="METRIC:PCT%,...",
                        help="with --baseline: per-metric thresholds overriding --threshold, "
                             "as for pytest --bench-fail-on (e.g. throughput:5%%,latency_p99:10%%)")


def cli_main(args: argparse.Namespace) -> int:
    if args.history is not None:
        return history_main(args)
    if args.results_dir is None:
        print("linklab report: give a RESULTS_DIR (results/<run-id>) or --history DIR",
              file=sys.stderr)
        return 2
    try:
        if args.threshold < 0:
            raise ReportError(f"--threshold {args.threshold}: must be a percentage >= 0")
        try:
            rules = Rules(args.threshold, tuple(parse_fail_on(args.fail_on)))
        except FailOnError as exc:
            raise ReportError(str(exc).replace("--bench-fail-on", "--fail-on")) from None
        results = load_results(args.results_dir)
        baseline = load_results(args.baseline) if args.baseline else None
        output = args.output or Path("reports") / results.path.resolve().name / "index.html"
        if output.exists() and output.is_dir():
            raise ReportError(f"-o {output}: is a directory; give the HTML file name, "
                              f"e.g. {output / 'index.html'}")
        done = render(results, output, baseline, rules)
        latest = link_latest(output) if args.output is None else None
    except (ReportError, OSError) as exc:
        return _failed(exc, args.output)
    for note in results.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"rendered {len(done.sections)} sections, {done.charts} charts in {done.seconds:.2f} s")
    if latest is not None:
        print(f"{latest} -> {output.parent.name}")
    print(output)
    return 0


def history_main(args: argparse.Namespace) -> int:
    output = args.output or Path("reports") / "history" / "index.html"
    try:
        view = history.build(args.history)
        charts = history.render(view, output)
    except (ReportError, OSError) as exc:
        return _failed(exc, output)
    for note in view.skipped:
        print(f"note: not in the history: {note}", file=sys.stderr)
    marks = len(view.changes)
    print(f"history: {len(view.runs)} runs, {charts} charts, {marks} kernel/machine change(s) "
          "marked")
    print(output)
    return 0


def _failed(exc: ReportError | OSError, output: Path | None) -> int:
    """Say what went wrong (a bad input, or the file that could not be written); status 2."""
    if isinstance(exc, OSError):
        print(f"linklab report: cannot write {exc.filename or output}: {exc.strerror}",
              file=sys.stderr)
    else:
        print(f"linklab report: {exc}", file=sys.stderr)
    return 2
