"""``python -m harness STUDY.yaml ...`` is the same as ``python -m harness.run STUDY.yaml ...``."""

from harness.run import exit_now, main

exit_now(main())
