"""`python -m value_harms.profiles rebuild|compare|export`: kept as a command alias; the code is in
value_harms.core.ess."""

from value_harms.core.ess import main

if __name__ == "__main__":
    raise SystemExit(main())
