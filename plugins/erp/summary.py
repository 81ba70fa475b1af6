"""The summary sentence, built from the numbers (no external service), in
English or Japanese."""

from __future__ import annotations

import re
from typing import Any

JAPANESE_MISSING = [
    (r"the experiment has no sessions", "実験にセッションがありません"),
    (r"no calibration session", "キャリブレーションセッションがありません"),
    (r"no main session", "本番セッションがありません"),
    (r"no (calibration|main) session with data", lambda m: ("キャリブレーション" if m[1] == "calibration" else "本番") + "セッションにデータがありません"),
    (r"no stimuli.*", "刺激(製品)が登録されていません"),
    (r"no session has completed event correction", "イベント補正が完了したセッションがありません"),
    (r"session (.+) \(([\w-]*)\) has not ended yet", lambda m: f"セッション{m[1]}({m[2]})はまだ終了していません"),
    (r"session (.+) \(([\w-]*)\) is being linked or corrected \(link_status (\w+), event_correction_status (\w+)\): "
     r"ask again when it is done",
     lambda m: f"セッション{m[1]}({m[2]})はデータの紐付けまたはイベント補正の処理中です"
     f"(link_status {m[3]}、event_correction_status {m[4]})、完了後にもう一度解析してください"),
    (r"no calibration event has a trigger-corrected onset", "トリガーで補正されたキャリブレーションのイベントがありません"),
    (r"no main-session event has a trigger-corrected onset", "トリガーで補正された本番セッションのイベントがありません"),
    (r"no calibration epoch with a trigger-corrected onset", "トリガーで補正されたキャリブレーションのエポックがありません"),
    (r"calibration has a single class \(only targets\)", "キャリブレーションが標的のみの1クラスです"),
    (r"calibration has a single class \(only non-targets\)", "キャリブレーションが非標的のみの1クラスです"),
    (r"too few calibration epochs: (\d+) targets and (\d+) non-targets \(at least (\d+) of each are needed\)",
     lambda m: f"キャリブレーションのエポックが不足しています(標的{m[1]}件、非標的{m[2]}件。各{m[3]}件以上が必要)"),
    (r"too few calibration non-targets to hold out a reference level: (\d+) \(at least (\d+) are needed\)",
     lambda m: f"非標的レベルの基準に取り分けるキャリブレーションの非標的エポックが不足しています({m[1]}件。{m[2]}件以上が必要)"),
    (r"too few trials: no product has (\d+) scored trials in a participant whose detector is better than chance",
     lambda m: f"試行が不足しています: 標的検出がチャンスを上回った参加者で{m[1]}試行以上ある製品がありません"),
    (r"no product epoch with a trigger-corrected onset in the main sessions", "本番セッションにトリガーで補正された製品のエポックがありません"),
    (r"no (calibration|product) epoch kept(?: in the main sessions)? \(of (\d+) events: (.*)\)",
     lambda m: ("キャリブレーション" if m[1] == "calibration" else "本番セッションの製品")
     + f"のエポックが残りませんでした(イベント{m[2]}件のうち" + _japanese_causes(m[3]) + ")"),
    (r"the sessions differ in sampling rate or channels", "セッション間でサンプリングレートまたはチャンネルが異なります"),
    (r"no EEG channel", "EEGチャンネルがありません"),
    (r"less than one second of usable data", "使用できるデータが1秒未満です"),
    (r"every EEG channel is bad", "すべてのEEGチャンネルが不良です"),
]
"""The fixed sentences naming what is missing, in Japanese (anything else stays in English)."""


JAPANESE_LEFT_OUT = [
    (r"(\d+) without a trigger-corrected onset", "{}件はトリガーで補正されていない"),
    (r"(\d+) of another trial type", "{}件は別の試行タイプ"),
    (r"(\d+) outside the data", "{}件はデータの範囲外"),
    (r"(\d+) touching a gap", "{}件は欠損区間にかかる"),
    (r"(\d+) above ([\d.]+) µV peak-to-peak", "{}件は振幅が{} µV(ピーク間)を超過"),
]


def _japanese_causes(causes: str) -> str:
    out = []
    for part in causes.split(", "):
        for pattern, text in JAPANESE_LEFT_OUT:
            match = re.fullmatch(pattern, part)
            if match:
                out.append(text.format(*match.groups()))
                break
        else:
            out.append(part)
    return "、".join(out)


def _japanese(missing: str) -> str:
    out = []
    for part in missing.split("; "):
        for pattern, text in JAPANESE_MISSING:
            match = re.fullmatch(pattern, part)
            if match:
                out.append(text(match) if callable(text) else text)
                break
        else:
            out.append(part)
    return "、".join(out)


def _names(rows: list[dict[str, Any]], stimuli: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for row in rows:
        meta = stimuli.get(row["file_name"], {})
        out.append(meta.get("item_name") or row["file_name"])
    return out


def summarize(result: dict[str, Any], stimuli: dict[str, dict[str, Any]], language: str) -> str:
    text = _summary(result, stimuli, language)
    if result["status"] in ("ok", "ambiguous"):
        scored = sum(r.get("score") is not None for r in result.get("group", {}).get("products", []))
        unscored = result.get("products_total", scored) - scored
        if unscored > 0:
            if language.lower().startswith("ja"):
                text += f"{unscored}件の製品は試行が少なく評価できませんでした。"
            else:
                text += f" {unscored} product(s) had too few trials to be scored."
    return text


def _summary(result: dict[str, Any], stimuli: dict[str, dict[str, Any]], language: str) -> str:
    ja = language.lower().startswith("ja")
    status = result["status"]
    usable = result.get("participants_usable", 0)
    total = result.get("participants_total", 0)
    if status == "insufficient_data":
        missing = "; ".join(result.get("missing") or []) or "not enough data"
        if ja:
            return f"解析できませんでした。不足しているもの: {_japanese(missing)}。推薦はありません。"
        return f"No analysis was possible. Missing: {missing}. Nothing is recommended."
    if status == "no_usable_participants":
        if ja:
            return (
                f"{total}名の参加者のうち、キャリブレーションで標的検出がチャンスレベルを上回った参加者はいません。"
                "製品への関心は判定できないため、推薦はありません。"
            )
        return (
            f"None of the {total} participants' target detectors was better than chance on calibration, "
            "so interest in the products cannot be judged; nothing is recommended."
        )
    rows = [r for r in result.get("group", {}).get("products", []) if r.get("score") is not None]
    recommended = [r for r in rows if r["file_name"] in result.get("recommended_files", [])]
    nt = result["group"].get("nontarget_level")
    aucs = [p["detector"]["auc"] for p in result.get("participants", []) if p.get("detector", {}).get("better_than_chance")]
    auc_text = f"{min(aucs):.2f}-{max(aucs):.2f}" if len(aucs) > 1 else (f"{aucs[0]:.2f}" if aucs else "n/a")
    if status == "ambiguous":
        if ja:
            return (
                (f"評価できた唯一の製品が非標的レベル({nt:.2f})を上回りましたが、比較できる他の製品がないため"
                 if len(rows) == 1 else f"評価できたすべての製品({len(rows)}件)が非標的レベル({nt:.2f})を上回りました。これは製品間の差ではなく")
                + "セッション間の違いと区別できないため、推薦はありません。"
            )
        return (
            (f"The only scored product scored above the non-target level ({nt:.2f}); with no other product to compare it with, "
             if len(rows) == 1 else f"Every scored product ({len(rows)}) scored above the non-target level ({nt:.2f}); ")
            + "this cannot be told apart from a difference between sessions, so nothing is recommended."
        )
    if not recommended:
        if ja:
            return (
                f"{total}名中{usable}名の参加者の標的検出がチャンスを上回りました(交差検証AUC {auc_text})。"
                f"非標的レベル({nt:.2f})と他の製品の両方を確実に上回った製品はなく、推薦はありません。"
            )
        return (
            f"{usable} of {total} participants had a target detector better than chance (cross-validated AUC {auc_text}). "
            f"No product scored reliably above both the non-target level ({nt:.2f}) and the other products; nothing is recommended."
        )
    names = _names(recommended, stimuli)
    scores = ", ".join(f"{n} {r['score']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]" for n, r in zip(names, recommended, strict=True))
    if ja:
        return (
            f"{total}名中{usable}名の参加者の標的検出がチャンスを上回りました(交差検証AUC {auc_text})。"
            f"{len(recommended)}件の製品が非標的レベル({nt:.2f})と他の製品の両方を確実に上回り、注意を引いたことが示唆されます: {scores}。"
        )
    return (
        f"{usable} of {total} participants had a target detector better than chance (cross-validated AUC {auc_text}). "
        f"{len(recommended)} of {len(rows)} products scored reliably above both the non-target level ({nt:.2f}) and the other products: {scores}."
    )
