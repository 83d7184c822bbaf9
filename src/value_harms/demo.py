"""`python -m value_harms.demo`: kept as a command alias; the code is in value_harms.tools.demo."""

from value_harms.tools.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
