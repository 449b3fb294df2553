"""`nbdev_export`, with the `__all__` lines it generates kept within the library's 120 columns, and a notebook's
second module written fresh.

nbdev 2 wraps the text of `__all__` at 120 characters and then puts `__all__ = ` in front of the first line, so that
line can reach 130 and fail ruff's E501. This runs nbdev's own exporter with the wrap narrowed by those 10
characters.

A notebook may export some cells to a second module (`#| export NAME`, e.g. 25_sweep's `sweep_summary`, which keeps
`sweep` under the library's 600 lines). nbdev 2 only appends such cells to a module another notebook made with
`#| default_exp NAME`; a module that no notebook makes that way is written fresh here instead, so exporting twice
gives the same file. Everything else is nbdev_export unchanged (same arguments). scripts/test exports with it.

    python tools/export.py [nbdev_export arguments]
"""
import functools
import re
import textwrap

import nbdev.export
import nbdev.maker
from nbdev.config import get_config

PREFIX = len('__all__ = ')


class _AllWrapper(textwrap.TextWrapper):
    "nbdev's TextWrapper(width=120, ...) for `__all__`, narrowed so that the prefixed first line fits too."
    def __init__(self, *args, width: int = 120, **kwargs):
        super().__init__(*args, width=width - PREFIX, **kwargs)


@functools.cache
def _default_exps() -> frozenset:
    "The modules that notebooks make with `#| default_exp NAME`."
    pat = re.compile(r'#\s*\|\s*default_exp\s+([\w.]+)')
    return frozenset(m for p in get_config().nbs_path.rglob('*.ipynb') for m in pat.findall(p.read_text()))


class _ModuleMaker(nbdev.maker.ModuleMaker):
    "nbdev's ModuleMaker; a module that only `#| export NAME` cells make is written fresh, not appended to."
    def __init__(self, dest, name, nb_path, is_new=True, **kwargs):
        super().__init__(dest, name, nb_path, is_new=is_new or name not in _default_exps(), **kwargs)


nbdev.maker.TextWrapper = _AllWrapper
_defaults = nbdev.export.nb_export.__defaults__   # (lib_path, procs, name, mod_maker, debug, solo_nb)
nbdev.export.nb_export.__defaults__ = tuple(_ModuleMaker if d is nbdev.maker.ModuleMaker else d for d in _defaults)

if __name__ == '__main__':
    from nbdev.doclinks import nbdev_export
    nbdev_export()
