"""Check a run directory written by `mdiqkd run`: summary and report present, keys delivered and
identical.

Usage: check_run_dir.py PATH [--exact]. PATH is the run directory itself with --exact, otherwise
a folder holding exactly one run directory (the default `runs/` of `mdiqkd run`).
"""

import json
import sqlite3
import sys
from pathlib import Path

path = Path(sys.argv[1])
if "--exact" not in sys.argv:
    found = [p for p in path.glob("*") if (p / "summary.json").exists()] if path.is_dir() else []
    if len(found) != 1:
        sys.exit(f"ci: expected one run directory under {path}/, found {len(found)}")
    path = found[0]
summary_file = path / "summary.json"
if not summary_file.exists():
    sys.exit(f"ci: {summary_file} is missing")
summary = json.loads(summary_file.read_text())


def keys(user: str) -> list[tuple]:
    with sqlite3.connect(path / user / "keys.sqlite") as db:
        return db.execute("SELECT key_id, bits, packed FROM keys ORDER BY key_id").fetchall()


alice, bob = keys("alice"), keys("bob")
problems = []
if not summary.get("keys_match"):
    problems.append("summary.json says keys_match is not true")
if summary.get("secure_bits", 0) <= 0 or not alice:
    problems.append("no key was delivered")
if alice != bob:
    problems.append(f"key stores differ ({len(alice)} keys at alice, {len(bob)} at bob)")
if not (path / "report.html").is_file():
    problems.append("report.html is missing")
if problems:
    sys.exit(f"ci: {path}: " + "; ".join(problems))
print(f"ci: {path}: {len(alice)} keys, {summary['secure_bits']} secure bits, identical at both "
      f"users, real-time factor {summary.get('realtime_factor', float('nan')):.2f}")
