"""SMVM's shared library: settings, logging, interceptors, server bootstrap, channels, ids,
errors, the launcher and CLI, and (under smvm.v1, made by `make proto`) the generated stubs."""

__version__ = "0.1.0"
