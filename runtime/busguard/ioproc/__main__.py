"""``python -m busguard.ioproc SITE --fd N``: the I/O process (started by ``busguard run``)."""

import sys

from busguard.ioproc.process import main

sys.exit(main())
