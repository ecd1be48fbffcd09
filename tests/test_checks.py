"""One rule for numbers in configs: ``True`` is an int to Python, never a count or a rate."""

import pytest

from lightning_rect.checks import check_non_negative, check_positive, check_positive_int
from lightning_rect.errors import ConfigError


@pytest.mark.parametrize("check, good", [(check_positive_int, 3), (check_positive, 0.5), (check_non_negative, 0.0)])
def test_a_bool_is_not_a_number_for_any_check(check, good):
    check("field", good)
    for bad in (True, False):
        with pytest.raises(ConfigError, match=rf"field must be .*, got {bad}"):
            check("field", bad)
