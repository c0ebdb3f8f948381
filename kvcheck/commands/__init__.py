"""Sub-commands of the ``kvcheck`` CLI: each module has ``add_arguments(parser)`` and ``run(args)``."""
