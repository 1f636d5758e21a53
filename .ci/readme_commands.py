"""Print the commands of README.md's quick start, one per line (the first fenced block under
the "Quick start" heading), so that CI runs exactly what a newcomer reads."""

import re
import sys
from pathlib import Path

text = Path(sys.argv[1]).read_text()
section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, re.S | re.M)
if section is None:
    sys.exit("ci: README.md has no '## Quick start' section")
block = re.search(r"^```(?:bash|sh|console)?\n(.*?)^```", section.group(1), re.S | re.M)
if block is None:
    sys.exit("ci: README.md's quick start has no code block")
for line in block.group(1).splitlines():
    line = line.strip()
    if line and not line.startswith("#"):
        print(line)
