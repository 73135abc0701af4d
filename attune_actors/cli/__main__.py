import sys

from attune_actors.cli import main

sys.exit(main())
