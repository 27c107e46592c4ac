"""Command-line entry points (the ``[project.scripts]`` of pyproject.toml); ``train/*.py`` and ``infer/*.py``
are thin wrappers around them. The only modules of the package that hold a ``main()``."""
