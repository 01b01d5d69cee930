import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci": derandomized and bounded, so a CI run is deterministic and fast; "dev" explores more.
settings.register_profile("ci", derandomize=True, max_examples=12, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


# The tests' programs are tiny and run once or twice: XLA's optimisation passes cost far more than they save
# (JAX's documented use of this flag). It changes no result the tests compare (XLA's passes keep float
# semantics; fast math is off either way). The commands the tests start as processes compile as users' do,
# except where a test sets JAX_DISABLE_MOST_OPTIMIZATIONS for them (the multi-process, 8-device and bench ones).
try:
    import jax
except ImportError:  # the reference's tests run without it
    pass
else:
    jax.config.update("jax_disable_most_optimizations", True)


# The longest tests first, so that neither worker (pytest-xdist) is left with one of them at the end while the
# other idles; the order within and after them is unchanged.
LONGEST_FIRST = ("test_distributed.py", "test_bench.py", "test_jax_agreement.py")


def pytest_collection_modifyitems(items):
    order = {name: rank for rank, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: order.get(item.path.name, len(order)))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny tensors: one torch thread is faster, and immune to a busy second core."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session", autouse=True)
def compile_cache_of_the_session(tmp_path_factory):
    """The commands' JAX compilation cache (seq2seq_lab/compile_cache.py) in a folder of the session, not the
    user's ~/.cache."""
    # one folder for the session's workers (pytest-xdist): a program one worker's commands compiled, the
    # other's load (JAX writes each entry atomically)
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder = shared / "xdg-cache"
    folder.mkdir(exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(folder))
        yield
