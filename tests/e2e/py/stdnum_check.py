"""Prints 1 or 0 per line of FILE: is it a valid isikukood according to python-stdnum."""
import sys

from stdnum.ee import ik

for line in open(sys.argv[1]):
    print(1 if ik.is_valid(line.strip()) else 0)
