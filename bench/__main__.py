"""`make bench`: the benchmark suite (issue 5 fills it in)."""

import sys


def main() -> int:
    sys.stderr.write("no benchmarks yet: see issue 5\n")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
