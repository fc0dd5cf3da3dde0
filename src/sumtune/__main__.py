import sys

from sumtune.cli.main import main

sys.exit(main())
