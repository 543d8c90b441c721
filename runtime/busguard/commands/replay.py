"""`busguard replay FILE [--site SITE]`: re-run the blocks over a recording."""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone

from busguard.replay import replay


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="re-run the logic over a recorded input trace",
                       description=(
        "Feed the input snapshots recorded by `busguard run --record FILE` to freshly built "
        "blocks and print the output trace (cycles where an output or alarm changed). Exit 0 "
        "when every output equals what the live run produced, 1 otherwise."))
    p.add_argument("recording", help="file written by busguard run --record")
    p.add_argument("--site", help="site file (default: the one named in the recording)")
    p.add_argument("--all", action="store_true", help="print every cycle, not only changes")
    p.add_argument("--json", action="store_true", help="one JSON object per printed cycle, "
                   "then a summary object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report, steps = replay(args.recording, args.site)
    for step in steps:
        if not (args.all or step.changed or step.edges or not step.matches):
            continue
        if args.json:
            print(json.dumps({"cycle": step.cycle, "t_utc": step.t_utc, "outputs": step.outputs,
                              "changed": step.changed, "alarms": step.edges,
                              "matches": step.matches}))
        else:
            ts = datetime.fromtimestamp(step.t_utc, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
            parts = [f"{k}={v:g}" for k, v in sorted(step.changed.items())] + step.edges
            flag = "" if step.matches else "  MISMATCH recorded=" + json.dumps(step.recorded)
            print(f"cycle {step.cycle:7d} {ts}Z  {'  '.join(parts)}{flag}")
    ok = not report.mismatches
    summary = {"cycles": report.cycles, "mismatches": len(report.mismatches),
               "first_mismatch": report.mismatches[0] if report.mismatches else None,
               "site_hash_matches": report.site_hash_matches, "identical": ok}
    if args.json:
        print(json.dumps({"summary": summary}))
    else:
        note = "" if report.site_hash_matches else " (site file differs from the recorded one)"
        verdict = ("outputs identical to the live run" if ok else
                   f"{len(report.mismatches)} cycles differ, first at cycle "
                   f"{report.mismatches[0]}")
        print(f"replayed {report.cycles} cycles: {verdict}{note}")
    return 0 if ok else 1
