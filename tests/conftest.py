import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# "ci": derandomized and bounded, so a CI run is deterministic and fast; "dev" explores more.
settings.register_profile("ci", derandomize=True, max_examples=15, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
