"""`python -m value_harms.estimate`: kept as a command alias; the code is in value_harms.tools.estimate."""

from value_harms.tools.estimate import main

if __name__ == "__main__":
    raise SystemExit(main())
