import sys

from budget_guard.cli import main

sys.exit(main())
