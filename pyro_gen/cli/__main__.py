"""``python -m pyro_gen.cli``: the ``pyro-gen`` command."""

import sys

from pyro_gen.cli import main

sys.exit(main())
