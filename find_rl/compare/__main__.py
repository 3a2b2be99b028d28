import sys

from find_rl.compare.cli import main

sys.exit(main())
