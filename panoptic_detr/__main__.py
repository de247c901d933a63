import sys

from panoptic_detr.cli import main

sys.exit(main())
