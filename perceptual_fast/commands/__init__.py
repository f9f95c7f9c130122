"""One module per CLI command, each with ``add_parser(subparsers)`` that sets ``func``.

To add a command: write ``commands/<name>.py`` and list it in ``COMMANDS``.
"""

from . import demo, export, score

COMMANDS = (score, demo, export)
