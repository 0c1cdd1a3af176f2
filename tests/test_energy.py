"""Energy and cost per audio-hour (issue 17, part 1): the arithmetic over NVML counter readings, and what bench
reports where there is no NVML (this CPU machine): empty fields with the reason, never zero."""
import json

import pytest

from core.energy import (COUNTER_MODULUS, MIN_WINDOW_S, EnergyMeter, integrate, per_audio_hour, price_for)
from tests.test_cli import cli


def _steady(watts: float, seconds: float, start_mj: int = 10_000_000, step_s: float = 0.1):
    """Counter readings of a GPU drawing `watts` for `seconds`, one every step_s (millijoules, integers)."""
    n = round(seconds / step_s)
    return [(i * step_s, start_mj + round(watts * i * step_s * 1e3)) for i in range(n + 1)]


def test_steady_power_integrates_to_power_times_time():
    e = integrate(_steady(300, 5))
    assert e["joules"] == pytest.approx(1500) and e["window_s"] == pytest.approx(5) and e["reason"] is None
    assert e["resets"] == 0


def test_readings_out_of_order_are_sorted():
    readings = _steady(200, 3)
    assert integrate(readings[::-1])["joules"] == pytest.approx(600)


def test_counter_wrap_is_unwrapped():
    # the 64-bit counter passes its top mid-window: the step across it is still 300 W x 0.1 s
    readings = _steady(300, 4, start_mj=COUNTER_MODULUS - 500_000)
    readings = [(t, e % COUNTER_MODULUS) for t, e in readings]
    assert any(b[1] < a[1] for a, b in zip(readings, readings[1:]))   # the raw readings do go down
    e = integrate(readings)
    assert e["joules"] == pytest.approx(1200) and e["resets"] == 0


def test_counter_reset_is_left_out_and_scaled():
    # the driver reloads at 2 s: the counter restarts near zero; that one interval's energy is unknown
    before = _steady(250, 2)
    after = [(2.1 + t, e) for t, e in _steady(250, 2.9, start_mj=40)]
    e = integrate(before + after)
    assert e["resets"] == 1 and e["reason"] is None
    assert e["joules"] == pytest.approx(250 * 5.0, rel=1e-6)   # mean power of the rest over the whole window


def test_too_short_windows_are_refused():
    for readings in ([(0.0, 1000)], _steady(300, 0.5), []):
        e = integrate(readings)
        assert e["joules"] is None and "shorter than" in e["reason"]
    assert integrate(_steady(300, MIN_WINDOW_S))["joules"] == pytest.approx(300 * MIN_WINDOW_S)


def test_a_counter_that_never_moves_is_not_zero_joules():
    e = integrate([(t / 10, 5_000) for t in range(40)])
    assert e["joules"] is None and "did not advance" in e["reason"]


def test_mostly_resets_is_refused():
    # every other step goes backwards: too little of the window is left to integrate
    readings = [(i * 0.1, (10**9 if i % 2 else 10**6) + i) for i in range(40)]
    e = integrate(readings)
    assert e["joules"] is None and "reset" in e["reason"]


def test_per_audio_hour_and_cost():
    # 1500 J over 5 s while processing 50 s of audio; the GPU rents at $3.60/h
    out = per_audio_hour(1500.0, 5.0, 50.0, 3.60)
    assert out["energy_j_per_audio_h"] == pytest.approx(1500 / 50 * 3600)   # 108 kJ per audio-hour
    assert out["avg_power_w"] == pytest.approx(300)
    assert out["usd_per_audio_h"] == pytest.approx(3.60 * 5 / 50)           # 0.1 GPU-hours per audio-hour
    empty = per_audio_hour(None, 5.0, 50.0, None)
    assert empty == {"energy_j_per_audio_h": None, "avg_power_w": None, "usd_per_audio_h": None}
    with pytest.raises(ValueError):
        per_audio_hour(1.0, 5.0, 0.0, 1.0)


def test_price_table_and_user_price():
    price, source = price_for("NVIDIA H200")
    assert price > 0 and "2026" in source           # the default price states its date
    assert price_for("NVIDIA H200", 2.5) == (2.5, "set by the user (--gpu-price)")
    price, why = price_for("Tesla T4")
    assert price is None and "no default price" in why


def test_meter_without_nvml_says_why():
    with EnergyMeter("cpu") as m:
        pass
    r = m.result(10.0)
    assert r["energy_j_per_audio_h"] is None and r["usd_per_audio_h"] is None
    assert "cpu backend" in r["energy_reason"] and "GPU backends" in r["usd_reason"]
    with EnergyMeter("cuda") as m:   # a GPU backend on this machine: no NVIDIA driver, so no NVML
        pass
    if m.available:
        pytest.skip("this machine has NVML")
    r = m.result(10.0)
    assert r["energy_j_per_audio_h"] is None and "NVML" in r["energy_reason"]


def test_bench_json_has_empty_energy_fields_with_a_reason():
    rows = json.loads(cli("bench", "--model", "random:wav2vec2-tiny", "--backend", "torch:fp32:cpu", "--seconds", "1",
                          "--batch", "1", "--repeats", "3", "--warmup", "0", "--windows", "3", "--scope", "compute",
                          "--gpu-price", "2.5", "--json", "--no-save").stdout)
    lat = [r for r in rows if r["kind"] == "latency"]
    assert lat
    for r in lat:
        assert r["energy_j_per_audio_h"] is None and r["usd_per_audio_h"] is None   # never 0 without a counter
        assert r["energy_reason"] and r["usd_reason"]


def test_gpu_price_is_validated():
    out = cli("bench", "--gpu-price", "-1", check=False)
    assert out.returncode == 2 and "the GPU price in $/hour must be between 0.01 and 1000" in out.stderr
