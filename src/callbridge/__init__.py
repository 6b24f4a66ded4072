"""callbridge: connect phone calls to AI voice agents."""

__version__ = "0.1.0"
