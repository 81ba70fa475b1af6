"""The example analysis plugin of the guide (docs/examples/eeghub-alpha-asymmetry).

Unit: synthetic windows with a known alpha power ratio, settings validation,
the contract check and the package's entry point. End to end: the plugin
registered in a real server (PostgreSQL, RabbitMQ), simulated packets posted
to ``/api/v1/data``, its result read back from the results API.
"""

from __future__ import annotations

import base64
import importlib
import math
import sys
import tomllib
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eeghub.core.errors import ConfigurationError
from eeghub.core.packet import compress_frame, encode_payload
from eeghub.core.simulator import SimulatedDevice
from eeghub.plugins.analyzer.contract import AnalysisWindow, check_plugin
from tests.e2e.helpers import user, wait_for

EXAMPLE_DIR = Path(__file__).resolve().parents[2] / "docs" / "examples" / "eeghub-alpha-asymmetry"
if str(EXAMPLE_DIR) not in sys.path:
    sys.path.insert(0, str(EXAMPLE_DIR))

import eeghub_alpha_asymmetry as example  # noqa: E402  (after the path change)

SFREQ = 250.0
LN4 = math.log(4.0)
SUBJECT = "subject-faa"


# ---------------------------------------------------------------- synthetic windows
def synthetic_window(
    seconds: float = 10.0,
    *,
    left_amplitude: float = 10e-6,
    right_amplitude: float = 20e-6,
    noise: float = 0.5e-6,
    bad: tuple[str, ...] = (),
    channels: int = 8,
    seed: int = 0,
) -> AnalysisWindow:
    """8 EEG channels in volts: a 10 Hz rhythm (CH1 ``left_amplitude``, CH2
    ``right_amplitude``, the others 10 µV) plus white noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SFREQ)
    t = np.arange(n) / SFREQ
    amplitudes = np.full(channels, 10e-6)
    amplitudes[0], amplitudes[1] = left_amplitude, right_amplitude
    phases = rng.uniform(0, 2 * np.pi, channels)
    data = amplitudes[:, None] * np.sin(2 * np.pi * 10.0 * t[None, :] + phases[:, None])
    data += rng.normal(0.0, noise, data.shape)
    return AnalysisWindow(
        user_id="u",
        device_id="d",
        session_id=None,
        data=data,
        channel_names=tuple(f"CH{i + 1}" for i in range(channels)),
        channel_types=("eeg",) * channels,
        sampling_rate=SFREQ,
        start_us=0,
        end_us=round((n - 1) * 1e6 / SFREQ),
        bad_channels=bad,
    )


def test_right_channel_with_four_times_the_alpha_power_gives_ln4() -> None:
    plugin = example.AlphaAsymmetryAnalysis()
    # Twice the amplitude is four times the power.
    result = plugin.analyze(synthetic_window(left_amplitude=10e-6, right_amplitude=20e-6))
    assert result is not None and result.note is None
    assert (result.left, result.right, result.band) == ("CH1", "CH2", [8.0, 13.0])
    assert result.asymmetry == pytest.approx(LN4, abs=0.05)
    assert result.right_power / result.left_power == pytest.approx(4.0, rel=0.05)
    # A sine of amplitude A carries A²/2 of power, all of it inside the band.
    assert result.left_power == pytest.approx((10e-6) ** 2 / 2, rel=0.05)


def test_the_sign_follows_the_configured_sides() -> None:
    swapped = example.AlphaAsymmetryAnalysis(example.load_settings({"left": "CH2", "right": "CH1"}))
    result = swapped.analyze(synthetic_window())
    assert result.asymmetry == pytest.approx(-LN4, abs=0.05)
    equal = example.AlphaAsymmetryAnalysis().analyze(synthetic_window(right_amplitude=10e-6, seed=3))
    assert equal.asymmetry == pytest.approx(0.0, abs=0.05)


def test_power_outside_the_band_does_not_count() -> None:
    window = synthetic_window(left_amplitude=10e-6, right_amplitude=10e-6)
    t = np.arange(window.data.shape[1]) / SFREQ
    window.data[1] += 50e-6 * np.sin(2 * np.pi * 20.0 * t)  # strong beta on the right only
    assert example.AlphaAsymmetryAnalysis().analyze(window).asymmetry == pytest.approx(0.0, abs=0.05)


def test_bad_flat_or_missing_channels() -> None:
    plugin = example.AlphaAsymmetryAnalysis()
    bad = plugin.analyze(synthetic_window(bad=("CH2",)))
    assert bad.asymmetry is None and bad.note == "bad channel(s): CH2"
    flat = synthetic_window(left_amplitude=0.0, noise=0.0)
    flat_result = plugin.analyze(flat)
    assert flat_result.asymmetry is None and "no alpha power" in flat_result.note
    # A stream without the configured channels has nothing to show.
    assert example.AlphaAsymmetryAnalysis(example.load_settings({"left": "F3", "right": "F4"})).analyze(synthetic_window()) is None


def test_the_plugin_meets_the_contract_and_is_stateless() -> None:
    plugin = example.AlphaAsymmetryAnalysis()
    assert check_plugin(plugin) == []
    assert plugin.id == "alpha_asymmetry" and plugin.channel_types == ("eeg",)
    window = synthetic_window(seed=7)
    first, second = plugin.analyze(window), plugin.analyze(window)
    assert first == second  # same window, same answer: no state kept between calls


def test_settings_from_the_lab_configuration() -> None:
    ctx = types.SimpleNamespace(
        settings=types.SimpleNamespace(
            # what EEGHUB_PLUGIN__ALPHA_ASYMMETRY__... variables produce: strings
            plugin={"alpha_asymmetry": {"left": "CH3", "right": "CH4", "window_seconds": "4", "interval_seconds": "1"}}
        )
    )
    (plugin,) = example.eeghub_analyses(ctx)
    assert (plugin.settings.left, plugin.settings.right) == ("CH3", "CH4")
    assert (plugin.window_seconds, plugin.interval_seconds) == (4.0, 1.0)
    (default,) = example.eeghub_analyses(types.SimpleNamespace(settings=types.SimpleNamespace(plugin={})))
    assert (default.settings.left, default.settings.right, default.window_seconds) == ("CH1", "CH2", 10.0)

    for table, message in (
        ({"left": "CH1", "right": "CH1"}, "two different channel names"),
        ({"fmin": 13, "fmax": 8}, "fmin must be below fmax"),
        ({"window_seconds": -1}, "window_seconds"),
        ({"segment_seconds": 20}, "must not exceed window_seconds"),
        ({"lfet": "F3"}, "lfet"),
    ):
        with pytest.raises(ConfigurationError, match=message):
            example.load_settings(table)


def test_the_package_declares_its_entry_point(tmp_path: Path) -> None:
    """pyproject.toml's entry point resolves to this module, and eeghub's plugin
    discovery finds it once the distribution's metadata is on the path (what
    ``pip install`` leaves behind)."""
    from eeghub.core.host import ENTRY_POINT_GROUP, discover

    project = tomllib.loads((EXAMPLE_DIR / "pyproject.toml").read_text())
    points = project["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert points == {"alpha_asymmetry": "eeghub_alpha_asymmetry"}
    assert importlib.import_module(points["alpha_asymmetry"]) is example
    assert project["tool"]["setuptools"]["py-modules"] == ["eeghub_alpha_asymmetry"]

    dist = tmp_path / f"eeghub_alpha_asymmetry-{project['project']['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['project']['name']}\nVersion: {project['project']['version']}\n"
    )
    (dist / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
    )
    sys.path.insert(0, str(tmp_path))
    try:
        found = discover()["alpha_asymmetry"]
        assert found.source == "entry-point (eeghub-alpha-asymmetry)" and found.version == "0.1.0"
        assert found.load.load() is example
    finally:
        sys.path.remove(str(tmp_path))


# ---------------------------------------------------------------- end to end
FAST = {
    "EEGHUB_ANALYZER__INTERVAL_SECONDS": "0.3",
    "EEGHUB_ANALYZER__WINDOW_SECONDS": "2",
    "EEGHUB_ANALYZER__COHERENCE_WINDOW_SECONDS": "4",
    "EEGHUB_ANALYZER__QUALITY_WINDOW_SECONDS": "4",
    "EEGHUB_ANALYZER__BUFFER_SECONDS": "10",
    "EEGHUB_PLUGIN__ALPHA_ASYMMETRY__WINDOW_SECONDS": "4",
    "EEGHUB_PLUGIN__ALPHA_ASYMMETRY__INTERVAL_SECONDS": "0.3",
}


@pytest.fixture
def env(local_env: dict[str, str], rabbitmq_url: str, unique_name: str) -> dict[str, str]:
    # As in test_analyzer_flow.py: the real broker; PostgreSQL and the filesystem store.
    queues = ("raw_data_exchange", "processing_queue", "data_linker_queue", "event_correction_queue",
              "media_processing_queue", "stimulus_asset_queue", "export_queue")
    return {**local_env, **FAST, "EEGHUB_BROKER__URL": rabbitmq_url,
            **{f"EEGHUB_BROKER__QUEUES__{q.upper()}": f"{unique_name}.{q}" for q in queues}}


def packet_body(device: SimulatedDevice, index: int, start_ms: int, right_gain: int = 2) -> dict[str, Any]:
    """A ``POST /api/v1/data`` body whose CH2 is ``right_gain`` × the simulator's signal."""
    first = index * device.samples_per_packet
    signals = device.eeg(first, device.samples_per_packet)
    signals[1] = np.clip(signals[1].astype(np.int32) * right_gain, -32768, 32767).astype(np.int16)
    trigger = device.trigger(first, device.samples_per_packet)
    payload = encode_payload(np.vstack([signals, trigger[None, :]]), device.channel_names, device.channel_types)
    return {**device.envelope(index, start_ms), "payload_base64": base64.b64encode(compress_frame(payload)).decode()}


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_the_example_runs_in_the_live_analyzer(app_client: Any, env: dict[str, str]) -> None:
    device = SimulatedDevice(user_id=SUBJECT, device_id="faa-dev", alpha_amplitude_counts=600, noise_counts=60, seed=11)
    async with app_client(env, extra_plugins={"alpha_asymmetry": example}) as (client, _):
        listed = (await client.get("/api/v1/analysis/plugins")).json()["plugins"]
        mine = next(p for p in listed if p["id"] == "alpha_asymmetry")
        assert mine["display_name"] == "Frontal alpha asymmetry"
        assert (mine["window_seconds"], mine["interval_seconds"], mine["channel_types"]) == (4.0, 0.3, ["eeg"])
        assert {p["id"] for p in listed} == {"psd", "coherence", "channel_quality", "alpha_asymmetry"}
        loaded = {p["name"]: p for p in (await client.get("/api/v1/plugins")).json()["plugins"]}
        assert loaded["alpha_asymmetry"]["hooks"] == ["eeghub_analyses"]

        for i in range(6):  # 6 s of data: more than the plugin's 4 s window
            r = await client.post("/api/v1/data", json=packet_body(device, i, 1_760_000_000_000), headers=user(SUBJECT))
            assert r.status_code == 202, r.text

        async def ready() -> Any:
            r = await client.get(f"/api/v1/users/{SUBJECT}/analysis?format=json", headers=user(SUBJECT))
            body = r.json() if r.status_code == 200 else {}
            return body if "alpha_asymmetry" in body.get("applications", {}) else None

        body = await wait_for(ready, timeout=30)
        value = body["applications"]["alpha_asymmetry"]
        assert (value["left"], value["right"], value["note"]) == ("CH1", "CH2", None)
        assert value["asymmetry"] == pytest.approx(LN4, abs=0.1)
        entry = body["results"]["alpha_asymmetry"]
        assert entry["plugin"] == "alpha_asymmetry" and entry["device_id"] == "faa-dev"
        assert entry["result"] == value and entry["timestamp"].endswith("+00:00")
        assert "alpha_asymmetry" in {a["id"] for a in body["available_applications"]}
        assert "alpha_asymmetry" in body["streams"][0]["plugins"]

        stats = next(p for p in (await client.get("/api/v1/analysis/plugins")).json()["plugins"] if p["id"] == "alpha_asymmetry")["stats"]
        assert stats["runs"] >= 1 and stats["failures"] == 0 and stats["timeouts"] == 0


@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_lab_can_disable_it_and_bad_settings_stop_start_up(app_client: Any, env: dict[str, str]) -> None:
    async with app_client(env, extra_plugins={"alpha_asymmetry": example}, EEGHUB_PLUGINS__DISABLED="alpha_asymmetry") as (client, _):
        listed = (await client.get("/api/v1/analysis/plugins")).json()["plugins"]
        assert "alpha_asymmetry" not in {p["id"] for p in listed}
    # right = left: start-up stops, naming the settings table (the test client
    # wraps the lifespan's error in an exception group).
    with pytest.raises(BaseException) as caught:
        async with app_client(env, extra_plugins={"alpha_asymmetry": example}, EEGHUB_PLUGIN__ALPHA_ASYMMETRY__RIGHT="CH1"):
            pass
    assert "invalid [plugin.alpha_asymmetry] settings" in " ".join(leaf_messages(caught.value))


def leaf_messages(error: BaseException) -> list[str]:
    if isinstance(error, BaseExceptionGroup):
        return [m for inner in error.exceptions for m in leaf_messages(inner)]
    return [str(error)]



@pytest.mark.postgres
@pytest.mark.rabbitmq
async def test_a_result_that_cannot_be_encoded_counts_as_a_failure(app_client: Any, env: dict[str, str]) -> None:
    """The guide's warning: numpy scalars in a result are not JSON. The host
    must count that as the plugin's failure, not serve a 500 for the user's
    whole analysis (as it did before the check in ``host._timed``)."""
    import msgspec

    from eeghub.core.hookspecs import hookimpl

    class Mean(msgspec.Struct):
        value: float

    careless = types.SimpleNamespace(
        id="careless", display_name="careless", description="returns a numpy scalar", window_seconds=1.0,
        channel_types=("eeg",), interval_seconds=0.3, analyze=lambda window: Mean(value=np.mean(window.data)),
    )
    lab = types.SimpleNamespace(eeghub_analyses=hookimpl(lambda ctx: [careless]))
    device = SimulatedDevice(user_id=SUBJECT, device_id="careless-dev", seed=1)
    async with app_client(env, extra_plugins={"lab": lab, "alpha_asymmetry": example}) as (client, _):
        for i in range(6):
            r = await client.post("/api/v1/data", json=packet_body(device, i, 1_760_000_000_000), headers=user(SUBJECT))
            assert r.status_code == 202, r.text

        async def failing() -> Any:
            plugins = (await client.get("/api/v1/analysis/plugins")).json()["plugins"]
            stats = {p["id"]: p["stats"] for p in plugins}
            return stats if stats["careless"]["failures"] >= 2 and stats["alpha_asymmetry"]["runs"] >= 1 else None

        stats = await wait_for(failing, timeout=30)
        assert stats["careless"]["runs"] == 0 and "numpy.float64" in stats["careless"]["last_error"]
        r = await client.get(f"/api/v1/users/{SUBJECT}/analysis?format=json", headers=user(SUBJECT))
        assert r.status_code == 200, r.text
        assert "careless" not in r.json()["applications"] and "alpha_asymmetry" in r.json()["applications"]
