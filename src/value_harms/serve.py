"""`python -m value_harms.serve`: a command alias; the code is in value_harms.tools.serve."""

from value_harms.tools.serve import main

if __name__ == "__main__":
    raise SystemExit(main())
