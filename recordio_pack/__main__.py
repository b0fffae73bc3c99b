import sys

from recordio_pack.cli import main

sys.exit(main())
