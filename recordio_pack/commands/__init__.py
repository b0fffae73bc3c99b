"""CLI subcommands. Each module: ``register(subparsers)`` adds its parser and sets ``run``.

Keep module-level imports to argparse and ``_common``: the library is imported inside ``run`` so that
``recordio-pack --help`` stays fast.
"""
