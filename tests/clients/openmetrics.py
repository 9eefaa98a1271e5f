"""Parses an OpenMetrics exposition (stdin) with the Prometheus client
library's strict parser and prints its samples as JSON lines:
{"family", "type", "name", "labels", "value"}. Exits non-zero, with the
parser's error, on text that is not valid OpenMetrics."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                          "labels": s.labels, "value": s.value}))
