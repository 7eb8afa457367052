"""The measured cap's section of report.md: each boundary's decision and what it read.

Its own module because it reads the records' cap fields (``cap_decisions``,
``cap_bounds``) that no other part of the report uses, for the one experiment that
runs a measured cap (``make demo-cap``); ``report`` writes the rest.
"""

from __future__ import annotations

from noise_scale.experiments.report import append_section


def cap_decisions(by_variant: dict[str, list[list[dict]]]) -> list[str]:
    """Markdown lines: per run under a measured cap, each boundary's outcome and the evidence
    it read. Runs whose records carry ``cap_bounds`` (the decision's own B_simple, lower
    bound and c × bound) give a table; older ones a line from the records around each
    boundary. Empty without a cap."""
    lines, table = [], []
    for variant, seeds in by_variant.items():
        for seed, records in enumerate(seeds):
            if not records or "cap_decisions" not in records[-1]:
                continue
            last = records[-1]
            if "cap_bounds" in last:
                table += [_bound_row(variant, seed, k, read, last["updates"])
                          for k, read in enumerate(last["cap_bounds"], start=1) if read]
                continue
            outcomes = last["cap_decisions"].split(",") if last["cap_decisions"] else []
            steps = []
            for k, outcome in enumerate(outcomes, start=1):
                before = [r for r in records if r["stage"] == k - 1]
                after = next((r for r in records if r["stage"] == k), None)
                b_simple = before[-1].get("noise_scale_measured") if before else None
                b = after["batch_size"] if after else None
                steps.append(f"boundary {k}: {outcome} (B = {b:,}, B_simple ≈ "
                             f"{b_simple:,.0f} just before)" if b and b_simple else
                             f"boundary {k}: {outcome}")
            lines.append(f"- {variant}, seed {seed}: " + "; ".join(steps)
                         + f"; {last['updates']:,} updates.")
    if table:
        table = ["| run | boundary | new B | B_simple read | 95 % lower bound | c × bound "
                 "| outcome | updates |", "|---|---|---|---|---|---|---|---|", *table]
    return table + ([""] if table and lines else []) + lines


def _bound_row(variant: str, seed: int, boundary: int, read: dict, updates: int) -> str:
    def number(x):
        return "none" if x is None else f"{x:,.0f}"
    outcome = "grew" if read["grew"] else "held (ε took the step)"
    return (f"| {variant} seed {seed} | {boundary} | {read['batch_size']:,} | "
            f"{number(read['measured'])} | {number(read['lower'])} | {number(read['cap'])} | "
            f"{outcome} | {updates:,} |")


def add_cap_decisions(outdir, by_variant) -> None:
    """Append the measured cap's decisions to report.md where a run had one."""
    lines = cap_decisions(by_variant)
    if not lines:
        return
    capped = [r for seeds in by_variant.values() for records in seeds if records
              and "cap_decisions" in records[-1] for r in records]
    if any("noise_scale_measured_se" in r for r in capped):  # the lower-bound rule's records
        rule = ("Under `schedule.noise_cap = c` a boundary's batch increase happens only while "
                "the new B ≤ c × a one-sided 95 % lower confidence bound of the smoothed "
                "B_simple read at that boundary; otherwise, or with no bound above 0, ε takes "
                "the step (noise_scale/cap.py). The table lists what each decision read at "
                "its boundary (B_simple, its bound and c × the bound) and the run's updates.")
    else:  # runs made before the bound existed decided on the point estimate: say so
        rule = ("Under `schedule.noise_cap = c` a boundary's batch increase happens only while "
                "the new B ≤ c × the smoothed B_simple read at that boundary; otherwise ε takes "
                "the step (noise_scale/cap.py). B_simple below is the last record's before the "
                "boundary (the decision reads the state at the boundary itself; a smoothed |G|² "
                "≤ 0 there reads as B_simple = ∞).")
    append_section(outdir, "The measured cap's decisions", [rule, "", *lines])
