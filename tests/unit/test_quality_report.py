"""``QualityReport.channel_report`` gives what ``dataclasses.asdict`` gives,
as a copy the caller may change."""

from __future__ import annotations

from dataclasses import asdict

from eeghub.core.quality import ChannelQuality, QualityReport


def test_channel_report_is_asdict_and_a_copy() -> None:
    report = QualityReport(
        channels={
            "CH1": ChannelQuality("good", [], 0.0, 0.0, 0.1, False, "eeg", False),
            "CH2": ChannelQuality("bad", ["flatline", "zeros"], 0.9, 0.5, 0.0, True, "eeg", True),
        },
        bad_channels=["CH2"],
        samples=1250,
    )
    out = report.channel_report()
    assert out == {name: asdict(entry) for name, entry in report.channels.items()}
    assert [list(entry) for entry in out.values()] == [list(asdict(entry)) for entry in report.channels.values()]
    out["CH2"]["reasons"].append("changed")
    out["CH2"]["status"] = "good"
    assert report.channels["CH2"].reasons == ["flatline", "zeros"]
    assert report.channels["CH2"].status == "bad"
    assert report.as_dict() == {"channels": {n: asdict(e) for n, e in report.channels.items()}, "bad_channels": ["CH2"], "samples": 1250}
