"""``python -m realtime ...`` = ``python run_camera.py ...``."""

import sys

from run_camera import main

sys.exit(main())
