"""`python -m server.cosigner`: the same as `witness-cosigner`."""

import sys

from .serve import main

sys.exit(main())
