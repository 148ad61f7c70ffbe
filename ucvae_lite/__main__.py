import sys

from ucvae_lite.cli import main

sys.exit(main())
