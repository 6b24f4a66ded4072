"""callbridge: connect phone calls to AI voice agents."""

from callbridge import native

__version__ = "0.1.0"

# Before any other module of the package: the media path's modules load compiled when their
# build matches the sources (callbridge.native), interpreted otherwise.
native.install()
