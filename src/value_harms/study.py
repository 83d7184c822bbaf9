"""`python -m value_harms.study`: kept as a command alias; the code is in value_harms.tools.study."""

from value_harms.tools.study import main

if __name__ == "__main__":
    raise SystemExit(main())
