"""The examples in the runtime's docstrings run."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["vsdsfn.engine", "vsdsfn.nets.dsfn", "vsdsfn.nets.espcn",
                                  "vsdsfn.nets.flowinterp", "vsdsfn.nets.costflow", "vsdsfn.nets.fusion",
                                  "vsdsfn.weights"])
def test_doctests(name):
    mod = importlib.import_module(name)
    res = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert res.failed == 0
