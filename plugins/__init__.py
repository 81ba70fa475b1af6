"""The built-in plugins. Each is an ordinary eeghub plugin: it imports
``eeghub.core`` (and reads ``eeghub.config``), never an adapter and never
another plugin's internals."""
