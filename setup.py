"""Only the optional C extension lives here; all other metadata is in pyproject.toml.

`danqing_assets._html` speeds up page extraction (see `danqing_assets/lib/html.py`). It is optional: without a
C compiler the install still succeeds and the numpy implementation, which gives identical output, is used.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("danqing_assets._html", ["danqing_assets/_html.c"], optional=True,
                             extra_compile_args=["-O3"])])
