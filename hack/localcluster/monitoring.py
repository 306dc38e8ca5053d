"""The monitoring objects in deploy/monitoring as the tests read them: alert rules, dashboard
queries and the metric names both use.

PromQL is only taken apart as far as the checks need: which metric names an expression
selects, Grafana's variables filled in, and thresholds turned into `bool` comparisons so
that an alert expression shows the series it watches even while it does not fire.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from localcluster.paths import REPO_ROOT

MONITORING_DIR = REPO_ROOT / "deploy" / "monitoring"
PROMETHEUS_RULE = MONITORING_DIR / "prometheusrule.yaml"
POD_MONITOR = MONITORING_DIR / "podmonitor.yaml"
SERVICE_MONITOR = MONITORING_DIR / "servicemonitor.yaml"
DASHBOARD = MONITORING_DIR / "dashboards" / "collectjob.json"
ALERT_TESTS = MONITORING_DIR / "tests" / "alerts.test.yaml"
RULES_FILE_NAME = "collectjob-alerts.rules.yaml"
"""What the promtool tests name the rules file extracted from the PrometheusRule."""

_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    }
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_SCALAR_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)(\s*)(?=[-+]?\d)")


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: str
    for_: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]


@dataclass(frozen=True)
class PanelQuery:
    """One query of one dashboard panel, as Grafana would send it before variables."""

    panel: str
    ref_id: str
    expr: str


def load_yaml(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def rule_groups(prometheus_rule: Mapping[str, Any]) -> dict[str, Any]:
    """The PrometheusRule's spec is a plain Prometheus rules file: `{groups: [...]}`."""
    return {"groups": list(prometheus_rule["spec"]["groups"])}


def write_rules_file(directory: Path) -> Path:
    """Extract the PrometheusRule's groups into a rules file promtool and prometheus read."""
    path = directory / RULES_FILE_NAME
    path.write_text(yaml.safe_dump(rule_groups(load_yaml(PROMETHEUS_RULE)), sort_keys=False))
    return path


def alert_rules(prometheus_rule: Mapping[str, Any]) -> list[AlertRule]:
    return [
        AlertRule(
            name=rule["alert"],
            expr=rule["expr"],
            for_=str(rule.get("for", "0s")),
            labels=dict(rule.get("labels") or {}),
            annotations=dict(rule.get("annotations") or {}),
        )
        for group in prometheus_rule["spec"]["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def recorded_names(prometheus_rule: Mapping[str, Any]) -> set[str]:
    return {
        rule["record"]
        for group in prometheus_rule["spec"]["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return dict(json.loads(path.read_text()))


def panels(dashboard: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every panel, including those nested in rows."""
    for panel in dashboard.get("panels", ()):
        yield panel
        yield from panel.get("panels", ())


def panel_queries(dashboard: Mapping[str, Any]) -> list[PanelQuery]:
    return [
        PanelQuery(panel["title"], target.get("refId", ""), target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", ())
        if target.get("expr")
    ]


def variable_queries(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """The PromQL inside each query variable's `label_values(...)`, by variable name."""
    found = {}
    for variable in dashboard.get("templating", {}).get("list", ()):
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, Mapping) else str(query or "")
        match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", text, re.DOTALL)
        if variable.get("type") == "query" and match:
            found[variable["name"]] = match.group(1)
    return found


def fill_variables(expr: str, values: Mapping[str, str]) -> str:
    """Replace Grafana's `$name`, `${name}` and `[[name]]` with `values[name]`."""

    def replace(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for dashboard variable ${name} in {expr!r}")
        return values[name]

    return _GRAFANA_VARIABLE.sub(replace, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("1", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _LABEL_LIST.sub(" ", text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in _KEYWORDS
    }


def as_bool(expr: str) -> str:
    """Turn every comparison with a number into a `bool` one: the series stay, valued 0 or 1.

    An alert's expression then answers for every job it watches whether or not the alert
    fires, which shows that its metrics exist and that its `on (...)` joins match.
    """
    return _SCALAR_COMPARISON.sub(r"\1 bool\2", expr)


def exposed_names(families: Iterable[Any]) -> set[str]:
    """The sample names a scrape shows for prometheus_client metric families (`.name`,
    `.type`), also for labelled metrics that have no child yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
        "stateset": ("",),
        "enum": ("",),
        "unknown": ("",),
    }
    return {f.name + suffix for f in families for suffix in suffixes[f.type]}
