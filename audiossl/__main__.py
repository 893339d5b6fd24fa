import sys

from audiossl.cli import main

sys.exit(main())
