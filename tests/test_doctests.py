"""The examples in the docstrings of the runtime (and of the RIFE weights converter) run."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["vsdsfn.engine", "vsdsfn.transfer", "vsdsfn.tiling", "vsdsfn.nets.dsfn",
                                  "vsdsfn.nets.espcn", "vsdsfn.nets.rife", "vsdsfn.nets.fusion", "vsdsfn.weights",
                                  "training.import_rife"])
def test_doctests(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0 and res.attempted > 0
