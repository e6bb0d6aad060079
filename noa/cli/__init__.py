"""The ``noa`` command line: ``main.py`` (the command and its subcommands), ``keys.py``."""
