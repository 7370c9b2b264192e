"""Compares two runs of the MCP conformance suite's server scenarios: one
against an MCP server directly, one against the same server through
Mandate's MCP gateway (scripts/mcp-conformance.sh).

usage: report.py REVISION REQUIREMENTS_YAML DIRECT_DIR MANDATE_DIR [--strict] [--via TEXT]

Each DIR is a suite run's `--output-dir`: one `server-SCENARIO-TIMESTAMP`
directory per scenario, holding `checks.json`. A scenario passes when no
check failed and at least one succeeded (warnings do not fail; one with
nothing but warnings and skips, which the suite's summary shows as passed,
does not pass here). A scenario with no result failed. Scores count the
scenarios the revision's requirements score; the table shows every server
scenario the suite ran (`-` in the scored column: run, not scored).

Prints the table, both scores, and each scenario that passes directly and
fails through Mandate with the failed checks' messages (its warnings if
none failed). With --strict, exits 1 if there is any such scenario. Exits
2 if either run saved no result at all (the suite did not run). --via says
how Mandate reached the server, in the title (e.g. "a remote upstream").
"""
import json
import os
import re
import sys

import yaml

STAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")


def results(run_dir):
    """scenario -> list of checks, for every scenario the run saved."""
    out = {}
    if not os.path.isdir(run_dir):
        return out
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name, "checks.json")
        if not name.startswith("server-") or not os.path.isfile(path):
            continue
        scenario = STAMP.sub("", name[len("server-"):])
        try:
            with open(path) as f:
                out[scenario] = json.load(f)
        except (OSError, ValueError):
            out[scenario] = None
    return out


def passed(checks):
    if not checks:
        return False
    statuses = [c.get("status") for c in checks]
    return "FAILURE" not in statuses and "SUCCESS" in statuses


def failures(checks):
    if checks is None:
        return ["no result (the scenario did not finish)"]
    failed = ["%s: %s" % (c.get("id"), c.get("errorMessage") or "(no message)")
              for c in checks if c.get("status") == "FAILURE"]
    if failed:
        return failed
    # Nothing failed and nothing succeeded: what was said instead.
    return ["no check succeeded"] + [
        "%s (%s): %s" % (c.get("id"), c.get("status").lower(), c.get("errorMessage") or "")
        for c in checks if c.get("status") in ("WARNING", "SKIPPED")]


def main():
    args = sys.argv[1:]
    strict = "--strict" in args
    args = [a for a in args if a != "--strict"]
    via = ""
    if "--via" in args:
        i = args.index("--via")
        via = f" (to {args[i + 1]})"
        del args[i:i + 2]
    revision, requirements, direct_dir, mandate_dir = args
    with open(requirements) as f:
        req = yaml.safe_load(f)
    scored = list(req.get("server") or [])
    unscored = [e["scenario"] for e in req.get("not_scored") or [] if e.get("leg") == "server"]
    direct, mandate = results(direct_dir), results(mandate_dir)
    for run_dir, found in ((direct_dir, direct), (mandate_dir, mandate)):
        if not found:
            print(f"error: the suite saved no results in {run_dir} (see {run_dir}.log)",
                  file=sys.stderr)
            sys.exit(2)
    names = scored + unscored
    width = max(len(n) for n in names)
    print(f"MCP {revision}: the server scenarios, against the server directly and through Mandate{via}")
    print(f"  {'scenario':<{width}}  scored  direct  through Mandate")
    regressions = []
    score_direct = score_mandate = 0
    for name in names:
        d, m = passed(direct.get(name)), passed(mandate.get(name))
        is_scored = name in scored
        if is_scored:
            score_direct += d
            score_mandate += m
        mark = ""
        if d and not m:
            regressions.append(name)
            mark = "  <- fails only through Mandate"
        elif m and not d:
            mark = "  (passes only through Mandate)"
        print(f"  {name:<{width}}  {'yes' if is_scored else '-':<6}  "
              f"{'pass' if d else 'FAIL':<6}  {'pass' if m else 'FAIL'}{mark}")
    print(f"  score {revision}: directly {score_direct}/{len(scored)}, "
          f"through Mandate {score_mandate}/{len(scored)}")
    if regressions:
        print(f"  {len(regressions)} scenario(s) pass directly and fail through Mandate:")
        for name in regressions:
            print(f"  - {name}")
            for msg in failures(mandate.get(name)):
                print(f"      {msg}")
    else:
        print("  every scenario that passes directly passes through Mandate")
    # The gate is the scored scenarios (the revision's requirements); the
    # others are reported.
    if strict and any(name in scored for name in regressions):
        sys.exit(1)


if __name__ == "__main__":
    main()
