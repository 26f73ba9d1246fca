import sys

from pysedd.cli import main

sys.exit(main())
