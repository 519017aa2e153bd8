"""``python -m harness STUDY.yaml ...`` is the same as ``python -m harness.run STUDY.yaml ...``."""

import sys

from harness.run import main

sys.exit(main())
