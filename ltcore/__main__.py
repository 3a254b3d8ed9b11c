"""``python -m ltcore``: the ``ltrun`` command."""

from .cli import main

main()
