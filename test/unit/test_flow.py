"""The flow schedule and Euler sampler against the official timestep tables and trajectories."""
import json

import pytest
import torch

from pixel_perfect_ros.model.flow import euler_step, next_timesteps, sampling_timesteps


@pytest.fixture(scope="module")
def sampler(fixtures_dir):
    return json.loads((fixtures_dir / "sampler_trajectory.json").read_text())


def test_timestep_tables_match_official(sampler):
    for steps, table in sampler["timestep_table"].items():
        assert sampling_timesteps(int(steps)) == table, steps


def test_float32_quirk_adds_minus_one_step(sampler):
    anomalies = sampler["length_anomalies_steps_1_to_1000"]
    assert len(anomalies) == 71
    for steps, info in anomalies.items():
        timesteps = sampling_timesteps(int(steps))
        assert len(timesteps) == info["len"] == int(steps) + 1
        assert timesteps[-3:] == info["last3"]
    regular = [s for s in range(1, 1001) if str(s) not in anomalies]
    assert all(len(sampling_timesteps(s)) == s for s in regular)


@pytest.mark.parametrize("steps", ["4", "10", "29"])
def test_trajectory_is_bit_exact(sampler, steps):
    case = sampler["trajectories"][steps]
    timesteps = sampling_timesteps(int(steps))
    assert timesteps == case["timesteps"]
    assert next_timesteps(timesteps) == case["next_timesteps"]
    x = torch.tensor(case["x_init"], dtype=torch.float32).reshape(case["x_shape"])
    for t, t_next, expected in zip(timesteps, next_timesteps(timesteps), case["trajectory"][1:]):
        x = euler_step(0.1 * x + 0.05, x, t, t_next)  # the fixture's fake velocity
        assert torch.equal(x.flatten(), torch.tensor(expected, dtype=torch.float32)), (t, t_next)
    assert torch.equal((x + 0.5).flatten(), torch.tensor(case["final_plus_0.5"], dtype=torch.float32))


def test_last_step_lands_on_x0_prediction():
    x0, noise = torch.randn(1, 1, 4, 4), torch.randn(1, 1, 4, 4)
    t = 249
    x_t = (1 - t / 1000) * x0 + (t / 1000) * noise
    torch.testing.assert_close(euler_step(noise - x0, x_t, t, -1), x0, atol=1e-6, rtol=0)


def test_velocity_is_upcast_to_float32():
    out = euler_step(torch.ones(1, 1, 2, 2, dtype=torch.bfloat16), torch.zeros(1, 1, 2, 2), 1000, 750)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((1, 1, 2, 2), -0.25))


@pytest.mark.parametrize("steps", [0, -3, 2.5, True])
def test_bad_step_count_is_rejected(steps):
    with pytest.raises(ValueError, match="positive integer"):
        sampling_timesteps(steps)
