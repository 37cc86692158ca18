"""Benchmarks of Consentry against baselines measured in the same run (`make bench`, issue 5).

Modules, one per benchmark, in the order a run takes them:
- `ingest`: embedded write path, sealed vs plaintext vs eventsourcing's AESCipher (baselines);
- `replay`: rebuild of every read model from each size's log, in a child process, with peak memory;
- `scaling`: ingest and replay cost per event against history size (from the two above);
- `erasure`: embedded erasure latency over HTTP (keys destroyed, views purged, 410);
- `query`: profile reads with their DataAccessed write, 1/8/32 concurrent clients, over HTTP;
- `distributed`: ingest into the PostgreSQL views and erasure latency on Kafka + PostgreSQL.
Shared parts: `workload` (fake records), `pipeline` (variants, the ingest loop, the log store),
`baselines` (the baselines' mappers), `server` and `stack` (real processes), `figures` and
`report` (targets, statistics, latest.json/latest.md), `context` (options and per-run state).
`python -m bench.hotspots` profiles ingest, replay or reads with cProfile.
"""
