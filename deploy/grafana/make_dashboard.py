"""Writes kyrodb.json, the Grafana dashboard over KyroDB's /metrics: `python3 make_dashboard.py`.
Every metric it queries is checked against a running server by crates/cli/tests/deploy.rs."""

import json
import os

panels = []
DS = {"type": "prometheus", "uid": "${datasource}"}


def sel(extra=""):
    return '{instance=~"$instance"%s}' % (("," + extra) if extra else "")


I = sel()
S5 = sel('status=~"5..|5xx"')
S4 = sel('status=~"4..|4xx"')
R = "[$__rate_interval]"


def ts(title, exprs, unit, x, y, desc=""):
    panels.append({"type": "timeseries", "title": title, "description": desc, "datasource": DS,
                   "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
                   "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                   "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
                   "targets": [{"refId": chr(65 + i), "expr": e, "legendFormat": l} for i, (e, l) in enumerate(exprs)]})


def stat(title, expr, unit, x, y):
    panels.append({"type": "stat", "title": title, "datasource": DS, "gridPos": {"h": 4, "w": 4, "x": x, "y": y},
                   "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                   "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"},
                   "targets": [{"refId": "A", "expr": expr, "legendFormat": title}]})


def pq(q, metric, by="le", extra=""):
    return f"histogram_quantile({q}, sum by ({by}) (rate({metric}_bucket{sel(extra)}{R})))"


y = 0
stat("Up", 'up{job=~"$job",instance=~"$instance"}', "none", 0, y)
stat("Uptime", f"kyrodb_process_uptime_seconds{I}", "s", 4, y)
stat("Writes stopped (fail-stop)", f"kyrodb_storage_writes_stopped{I}", "none", 8, y)
stat("Disk free", f"kyrodb_disk_free_bytes{I} / kyrodb_disk_total_bytes{I}", "percentunit", 12, y)
stat("Keys", f"sum(kyrodb_storage_keys{I})", "short", 16, y)
stat("Documents", f"sum(kyrodb_search_documents{I})", "short", 20, y)
y += 4
ts("Request rate by route", [(f"sum by (route) (rate(kyrodb_http_requests_total{I}{R}))", "{{route}}")], "reqps", 0, y)
ts("Errors", [(f"sum(rate(kyrodb_http_requests_total{S5}{R})) / clamp_min(sum(rate(kyrodb_http_requests_total{I}{R})), 1e-9)", "5xx share"),
              (f"sum(rate(kyrodb_http_requests_total{S4}{R}))", "4xx/s"),
              (f"sum(rate(kyrodb_http_rate_limited_total{I}{R}))", "rate limited/s")], "short", 12, y)
y += 8
ts("Request latency (all routes)", [(pq(q, "kyrodb_http_request_duration_seconds"), f"p{round(q * 100)}") for q in (0.5, 0.9, 0.99)], "s", 0, y)
ts("p99 latency by route", [(pq(0.99, "kyrodb_http_request_duration_seconds", "le, route"), "{{route}}")], "s", 12, y)
y += 8
ts("WAL fsync", [(pq(q, "kyrodb_wal_fsync_latency_seconds"), f"p{round(q * 100)}") for q in (0.5, 0.99)]
   + [(f"rate(kyrodb_wal_fsync_total{I}{R})", "fsyncs/s")], "s", 0, y,
   "Every acknowledged write waits for one of these fsyncs (group commit)")
ts("Group commit", [(pq(0.99, "kyrodb_wal_group_commit_latency_seconds"), "commit p99 (s)"),
                    (f"rate(kyrodb_wal_records_total{I}{R}) / clamp_min(rate(kyrodb_wal_fsync_total{I}{R}), 1e-9)", "records per fsync"),
                    (f"rate(kyrodb_wal_bytes_total{I}{R})", "WAL bytes/s")], "short", 12, y)
y += 8
ts("Compaction (snapshots)", [(f"increase(kyrodb_storage_compactions_total{I}{R})", "compactions"),
                              (pq(0.99, "kyrodb_storage_compaction_duration_seconds"), "duration p99 (s)"),
                              (f"kyrodb_storage_wal_segments{I}", "WAL segments"),
                              (f"increase(kyrodb_storage_write_stalls_total{I}{R})", "write stalls")], "short", 0, y)
ts("Index rebuilds", [(f"increase(kyrodb_rmi_rebuilds_total{I}{R})", "learned-index rebuilds"),
                      (f"increase(kyrodb_rmi_rebuild_failures_total{I}{R})", "rebuild failures"),
                      (pq(0.99, "kyrodb_rmi_build_duration_seconds"), "build p99 (s)"),
                      (f"increase(kyrodb_text_merges_total{I}{R})", "text segment merges"),
                      (f"increase(kyrodb_learned_ranking_trainings_total{I}{R})", "ranking trainings")], "short", 12, y)
y += 8
ts("Search latency p99 by plan", [(pq(0.99, "kyrodb_search_latency_seconds", "le, plan"), "{{plan}}"),
                                  (pq(0.99, "kyrodb_hybrid_search_latency_seconds"), "hybrid")], "s", 0, y)
ts("Searches by plan", [(f"sum by (plan) (rate(kyrodb_search_plans_total{I}{R}))", "{{plan}}")], "reqps", 12, y)
y += 8
ts("Vector indexes", [(f"sum by (collection) (kyrodb_search_vectors{I})", "{{collection}} vectors"),
                      (f"sum by (collection) (kyrodb_search_pending_vectors{I})", "{{collection}} pending"),
                      (f"sum by (collection) (kyrodb_search_tombstone_vectors{I})", "{{collection}} tombstones")], "short", 0, y)
ts("Write to searchable", [(pq(0.99, "kyrodb_search_write_visible_seconds"), "p99")], "s", 12, y)
y += 8
ts("Embedding queue", [(f"kyrodb_embed_queue_texts{I}", "texts waiting"), (f"rate(kyrodb_embed_texts_total{I}{R})", "texts/s"),
                       (f"increase(kyrodb_embed_refused_total{I}{R})", "refused (busy)")], "short", 0, y)
ts("Embedding latency", [(pq(q, "kyrodb_embed_request_seconds"), f"p{round(q * 100)}") for q in (0.5, 0.99)], "s", 12, y)
y += 8
ts("Storage", [(f"kyrodb_storage_delta_bytes{I}", "delta"), (f"kyrodb_storage_snapshot_data_bytes{I}", "snapshots"),
               (f"kyrodb_disk_free_bytes{I}", "disk free"), (f"sum(kyrodb_search_index_bytes{I})", "vector indexes")], "bytes", 0, y)
ts("Sequence numbers", [(f"kyrodb_storage_last_seq{I}", "last"), (f"kyrodb_storage_visible_seq{I}", "visible"),
                        (f"kyrodb_storage_covered_seq{I}", "covered by snapshots")], "short", 12, y)
for i, p in enumerate(panels):
    p["id"] = i + 1
var = lambda name, q: {"name": name, "type": "query", "datasource": DS, "query": q, "refresh": 2,
                       "includeAll": True, "multi": True, "allValue": ".*"}
dash = {"title": "KyroDB", "uid": "kyrodb", "schemaVersion": 39, "version": 1, "editable": True, "tags": ["kyrodb"],
        "time": {"from": "now-1h", "to": "now"}, "refresh": "30s", "annotations": {"list": []},
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Data source"},
                                var("job", "label_values(kyrodb_build_info, job)"),
                                var("instance", 'label_values(kyrodb_build_info{job=~"$job"}, instance)')]},
        "panels": panels}
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kyrodb.json"), "w") as f:
    json.dump(dash, f, indent=1)
    f.write("\n")
