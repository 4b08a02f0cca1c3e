"""The examples in the docstrings of the runtime and of training/ run, and the core
modules have examples."""

import doctest
import importlib
import pkgutil

import pytest

import training
import vsdsfn


def _modules() -> list[str]:
    names = []
    for pkg in (vsdsfn, training):
        names.append(pkg.__name__)
        names += [m.name for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")
                  if m.name != "vsdsfn.__main__"]
    return sorted(names)


def _with_examples() -> list[str]:
    """The modules whose docstrings hold examples (collected, so each is a test that runs them)."""
    finder = doctest.DocTestFinder()
    return [name for name in _modules()
            if any(t.examples for t in finder.find(importlib.import_module(name)))]


#: modules whose docstrings must hold examples (the core of the runtime and the converter)
WITH_EXAMPLES = {"vsdsfn.engine", "vsdsfn.transfer", "vsdsfn.tiling", "vsdsfn.nets.dsfn", "vsdsfn.nets.espcn",
                 "vsdsfn.nets.rife", "vsdsfn.nets.fusion", "vsdsfn.weights", "vsdsfn.options",
                 "training.import_rife"}


@pytest.mark.parametrize("name", _with_examples())
def test_doctests(name):
    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0


def test_core_modules_have_examples():
    assert WITH_EXAMPLES <= set(_with_examples())
