"""World.agree_on under mpiexec: a rank that leaves a start-up step any way at all leaves no
other rank waiting; every rank ends the same step together."""
import pytest
from mpi4py import MPI

from mtcmpi.errors import UsageError
from mtcmpi.world import World

pytestmark = [pytest.mark.mpi(min_size=2), pytest.mark.timeout(60)]


def last_rank_leaves(exc):
    def step():
        if MPI.COMM_WORLD.rank == MPI.COMM_WORLD.size - 1:
            raise exc
        return "fine"
    return step


@pytest.mark.parametrize("exc, words", [(SystemExit("bye"), "SystemExit: bye"),
                                        (KeyboardInterrupt(), "KeyboardInterrupt"),
                                        (UsageError("bad row"), "bad row")])
def test_a_rank_leaving_a_step_is_one_usage_error_everywhere(exc, words):
    world = World.of()
    with pytest.raises(UsageError, match=words):
        world.agree_on(last_rank_leaves(exc))


def test_an_unexpected_error_is_agreed_and_raised_as_itself_on_its_rank():
    world = World.of()
    mine = world.rank == world.size - 1
    with pytest.raises(ValueError if mine else UsageError, match="broken"):
        world.agree_on(last_rank_leaves(ValueError("broken")))
    assert world.agree_on(None) is None and world.agree_on(lambda: 5) == 5
