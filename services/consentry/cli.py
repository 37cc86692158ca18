"""The `consentry` command."""

import sys


def main() -> int:
    sys.stderr.write("consentry: the command line arrives with the embedded platform\n")
    return 2
