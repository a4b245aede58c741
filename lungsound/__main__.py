import sys

from lungsound.cli import main

sys.exit(main())
