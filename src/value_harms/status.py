"""`python -m value_harms.status`: kept as a command alias; the sweep table is value_harms.tools.status,
a study's output folder is handed to value_harms.tools.study (which owns studies)."""

from value_harms.tools.study import status_main as main

if __name__ == "__main__":
    raise SystemExit(main())
