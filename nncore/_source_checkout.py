"""Find the compiled core when nncore is imported from a source checkout.

Running ``python -m nncore`` (or ``python -c 'import nncore'``) from the
repository root imports the source tree's ``nncore/``, which holds no compiled
``_core`` module; the one ``pip install .`` built lives in site-packages. This
loads that module under its own name, so the rest of the package (pure Python,
identical after an install) works from the checkout.
"""
import importlib.machinery
import importlib.util
import os
import sys


def load_installed_core():
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        candidate = os.path.join(os.path.abspath(entry or "."), "nncore")
        if not os.path.isdir(candidate) or os.path.samefile(candidate, here):
            continue
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(candidate, "_core" + suffix)
            if os.path.exists(path):
                spec = importlib.util.spec_from_file_location("nncore._core", path)
                module = importlib.util.module_from_spec(spec)
                sys.modules["nncore._core"] = module
                spec.loader.exec_module(module)
                return module
    raise ImportError("nncore's compiled core (_core) was not found: install the package "
                      "first with `pip install .`")
