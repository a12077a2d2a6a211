"""Summarise py-spy collapsed stacks (`--format raw`): where the service's samples land.

    python -m bench.profile_summary /tmp/profile.txt

Prints the share of samples by the frame at the top of the stack ("self"), grouped
by function, and the share of samples whose stack passes through a few functions
of interest ("inclusive"), so a change's effect on the cost per delivery can be
compared run against run.
"""

from __future__ import annotations

import sys
from collections import Counter

INTERESTING = (
    "_dispatch",
    "frames",
    "send_text",
    "websocket_sansio_impl.py",
    "send (",
    "write (",
    "offer (",
    "take (",
    "_read_loop",
    "from_entry",
)


def main() -> None:
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    with open(sys.argv[1]) as handle:
        for row in handle:
            stack, _, count_text = row.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            self_counts[frames[-1]] += count
            for name in INTERESTING:
                if any(name in frame for frame in frames):
                    inclusive[name] += count
    print(f"{total} samples")
    print("top frames (self):")
    for frame, count in self_counts.most_common(15):
        print(f"  {count / total:6.1%}  {frame}")
    print("stacks passing through (inclusive):")
    for name, count in inclusive.most_common():
        print(f"  {count / total:6.1%}  {name}")


if __name__ == "__main__":
    main()
