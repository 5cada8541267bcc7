import sys

from anomgen.cli import main

sys.exit(main())
