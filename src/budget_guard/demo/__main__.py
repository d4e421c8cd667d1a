import sys

from budget_guard.demo.run import main

sys.exit(main())
