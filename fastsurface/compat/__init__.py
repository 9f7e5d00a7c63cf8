"""Drop-in replacements for other tools' public APIs, computed by fastsurface's engine.

- ``fastsurface.compat.loss_landscapes``: the ``loss-landscapes`` 3.0.6 package.
"""
