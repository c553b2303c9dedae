import sys

from eventbook.cli import main

sys.exit(main())
