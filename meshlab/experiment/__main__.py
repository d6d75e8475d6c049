import sys

from meshlab.experiment.engine import main

sys.exit(main())
