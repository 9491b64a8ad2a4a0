"""`python -m switchboard.chat_cli`: a terminal chat with the gateway."""

import sys

from .client import main

if __name__ == "__main__":
    sys.exit(main())
