"""The examples in the docstrings of every module of the runtime and of training/ run."""

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


#: modules whose docstrings must hold examples (the core of the runtime and the converter)
WITH_EXAMPLES = {"vsdsfn.engine", "vsdsfn.transfer", "vsdsfn.tiling", "vsdsfn.nets.dsfn", "vsdsfn.nets.espcn",
                 "vsdsfn.nets.rife", "vsdsfn.nets.fusion", "vsdsfn.weights", "vsdsfn.options",
                 "training.import_rife"}


@pytest.mark.parametrize("name", _modules())
def test_doctests(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
    if name in WITH_EXAMPLES:
        assert res.attempted > 0


def test_every_module_is_collected():
    assert WITH_EXAMPLES <= set(_modules())
