"""Benchmark results and their table (plain text, markdown, JSON).

Every result carries its value, the baseline's value measured in the same run, and ``gain``: how many
times better ours is (value / baseline when higher is better, baseline / value when lower is better),
compared against the issue's target gain where there is one.
"""
import json
import platform
from dataclasses import asdict, dataclass
from datetime import date


@dataclass
class Result:
    name: str
    value: float
    unit: str
    baseline: float = None
    higher_is_better: bool = True
    target_gain: float = None
    note: str = ""

    def __post_init__(self):  # numpy scalars -> plain floats (JSON, formatting)
        self.value = float(self.value)
        self.baseline = None if self.baseline is None else float(self.baseline)

    @property
    def gain(self):
        if self.baseline is None or not self.value or not self.baseline:
            return None
        return self.value / self.baseline if self.higher_is_better else self.baseline / self.value

    @property
    def met(self):
        if self.target_gain is None or self.gain is None:
            return None
        return self.gain >= self.target_gain


COLUMNS = ("benchmark", "value", "unit", "baseline", "gain (x better)", "target", "met", "note")


def number(value) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}"
    return f"{value:.3g}"


def row(result: Result) -> tuple:
    met = {None: "-", True: "yes", False: "NO"}[result.met]
    target = "-" if result.target_gain is None else f">= {result.target_gain:g}x"
    gain = "-" if result.gain is None else f"{result.gain:.2f}x"
    return (result.name, number(result.value), result.unit, number(result.baseline), gain, target,
            met, result.note)


def text_table(results) -> str:
    rows = [COLUMNS] + [row(result) for result in results]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def machine_description() -> str:
    import os

    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"{device}; Python {platform.python_version()}, torch {torch.__version__}")


def markdown_table(results, command: str) -> str:
    header = "| " + " | ".join(COLUMNS) + " |\n|" + "---|" * len(COLUMNS) + "\n"
    body = "".join("| " + " | ".join(str(cell) for cell in row(result)) + " |\n" for result in results)
    return (f"# Benchmarks, {date.today().isoformat()}\n\nMachine: {machine_description()}\n\n"
            f"Command: `{command}`\n\n{header}{body}")


def results_json(results) -> str:
    records = [dict(asdict(result), gain=result.gain, met=result.met) for result in results]
    return json.dumps({"date": date.today().isoformat(), "machine": machine_description(),
                       "results": records}, indent=2)
