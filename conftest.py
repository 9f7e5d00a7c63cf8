# `python -m fastsurface` entry: importing it for doctests would run the CLI.
collect_ignore = ["fastsurface/__main__.py"]
