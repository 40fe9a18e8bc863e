"""``python -m vlprompt``: the same as the ``vlprompt`` command."""

import sys

from vlprompt.cli.main import main

sys.exit(main())
