"""`python -m charterm.worker`: the model worker the app starts."""

import sys

from charterm.worker.server import main

sys.exit(main())
