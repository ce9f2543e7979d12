import sys

from yolo4.cli import main

sys.exit(main())
