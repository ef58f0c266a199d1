"""`python -m calcinosis_tools`: see calcinosis_tools/cli.py."""

from calcinosis_tools.cli import main

raise SystemExit(main())
