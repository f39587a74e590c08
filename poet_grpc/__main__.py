import sys

from poet_grpc.cli import main

sys.exit(main())
