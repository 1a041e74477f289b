"""The CPU thread policy of the training and evaluation entry points (aes_lib/threads.py)."""

import pytest

from aes_lib.threads import ENV_VAR, apply_thread_policy, policy_threads


def test_auto_takes_half_the_cores_and_at_least_one():
    assert policy_threads("auto", cores=2) == 1
    assert policy_threads("auto", cores=1) == 1
    assert policy_threads("auto", cores=8) == 4
    assert policy_threads("3", cores=8) == 3
    assert policy_threads("torch", cores=8) is None


def test_environment_chooses_and_omp_num_threads_is_respected(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert policy_threads() is None                 # the user's OMP choice stands
    monkeypatch.setenv(ENV_VAR, "2")
    assert policy_threads() == 2                    # an explicit policy wins
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.delenv(ENV_VAR)
    assert policy_threads() == policy_threads("auto")


@pytest.mark.parametrize("bad", ["0", "-1", "many"])
def test_a_bad_setting_is_an_error_naming_the_variable(bad):
    with pytest.raises(ValueError, match=ENV_VAR):
        policy_threads(bad)


def test_apply_sets_torch_threads():
    import torch

    before = torch.get_num_threads()
    try:
        assert apply_thread_policy("1") == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
