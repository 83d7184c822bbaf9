"""`python -m value_harms.power`: kept as a command alias; the code is in value_harms.tools.power."""

from value_harms.tools.power import main

if __name__ == "__main__":
    raise SystemExit(main())
