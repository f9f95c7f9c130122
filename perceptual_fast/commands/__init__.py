"""One module per CLI command, each with ``add_parser(subparsers)`` that sets ``func``.

To add a command: write ``commands/<name>.py`` and list it in ``COMMANDS``.
"""

from . import bapps, demo, export, make_bapps, pack, plot, score, sweep, train, train_lin

COMMANDS = (score, demo, export, make_bapps, pack, bapps, train, sweep, plot, train_lin)
