"""`nbdev_export`, with the `__all__` lines it generates kept within the library's 120 columns.

nbdev 2 wraps the text of `__all__` at 120 characters and then puts `__all__ = ` in front of the first line, so that
line can reach 130 and fail ruff's E501. This runs nbdev's own exporter with the wrap narrowed by those 10
characters; everything else is nbdev_export unchanged (same arguments). scripts/test exports with it.

    python tools/export.py [nbdev_export arguments]
"""
import textwrap

import nbdev.maker

PREFIX = len('__all__ = ')


class _AllWrapper(textwrap.TextWrapper):
    "nbdev's TextWrapper(width=120, ...) for `__all__`, narrowed so that the prefixed first line fits too."
    def __init__(self, *args, width: int = 120, **kwargs):
        super().__init__(*args, width=width - PREFIX, **kwargs)


nbdev.maker.TextWrapper = _AllWrapper

if __name__ == '__main__':
    from nbdev.doclinks import nbdev_export
    nbdev_export()
