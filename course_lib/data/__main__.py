"""``python -m course_lib.data list`` / ``fetch NAME``: see :func:`course_lib.data.loader.main`."""
import sys

from .loader import main

sys.exit(main())
