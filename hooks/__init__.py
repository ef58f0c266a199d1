"""CDS Hooks protocol layer: the FastAPI service, prefetch, cards, authentication, stores and the
command line.

`__version__` is the one place the release version is written: the package metadata
(`pyproject.toml` reads it), `calcinosis-cds --version`, the OpenAPI document and the build
information metric take it from here; the image tags in deploy/ are checked against it by the tests.
"""

__version__ = "0.1.0"
