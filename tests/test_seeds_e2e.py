"""The seed documents' scenarios (topologies/seeds/) on the shared lab."""
import pytest

from lab_helpers import converge
from topologies import seedlab

pytestmark = pytest.mark.mininet


@pytest.mark.parametrize("seed", sorted(seedlab.SEEDS))
def test_seed_scenario(lab, seed):
    undo = seedlab.apply(lab, seed)
    try:
        converge(lab)
        assert seedlab.CHECKS[seed](lab)
    finally:
        undo()
        converge(lab)
