"""`python app.py` is `studio serve`: start the studio in the browser (flags as for `studio serve`)."""

import sys

from studio.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
