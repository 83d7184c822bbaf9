"""`python -m value_harms.status`: kept as a command alias; the code is in value_harms.tools.status."""

from value_harms.tools.status import main

if __name__ == "__main__":
    raise SystemExit(main())
