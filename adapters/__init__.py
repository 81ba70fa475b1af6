"""Adapters: implementations of the ports in ``eeghub.core.ports``.

Each module imports ``eeghub.core`` only. The composition root
(``eeghub.bootstrap``) is the one place that chooses and builds them.
"""
