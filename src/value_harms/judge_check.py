"""`python -m value_harms.judge_check`: kept as a command alias; the code is in value_harms.tools.judge_check."""

from value_harms.tools.judge_check import main

if __name__ == "__main__":
    raise SystemExit(main())
