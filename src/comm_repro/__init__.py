"""CoMM reproduction library: data, models, methods, trainer and probes."""

__version__ = "0.1.0"
